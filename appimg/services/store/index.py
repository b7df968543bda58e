"""``index.json``: what is installed and what it provides (spec/xdg-index.md §The index).

The index is the store's single source of truth: the exports directory and the
images directory are made to match it. It is serialised canonically (sorted
keys, no insignificant whitespace) so that equal states have equal bytes,
which the transaction journal relies on to tell whether a commit happened.
Only the standard library is imported here: ``appimg list`` and ``appimg xdg
find`` load the index and nothing heavier.
"""

from __future__ import annotations

import json
from typing import Any

from appimg.errors import StoreError
from appimg.files import read_capped
from appimg.services.store.layout import StoreLayout

SCHEMA = "appimg-xdg-index"
SCHEMA_VERSION = 1
#: Versions kept per app: the active one and the one `rollback` returns to.
KEPT_VERSIONS = 2
MAX_INDEX_BYTES = 256 << 20

Index = dict[str, Any]


def empty() -> Index:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "apps": {}}


def dumps(index: Index) -> bytes:
    return json.dumps(index, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: bytes) -> str:
    import hashlib  # not at module level: `appimg xdg find` never hashes

    return hashlib.sha256(data).hexdigest()


def parse_index(data: bytes, where: str = "index.json") -> Index:
    try:
        index = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: not valid JSON ({exc})") from None
    check(index, where)
    return index


def check(index: object, where: str = "index.json") -> None:
    """The shape the code relies on; a newer schema is refused rather than misread."""
    if not isinstance(index, dict) or index.get("schema") != SCHEMA:
        raise StoreError(f"{where}: not an appimg index")
    version = index.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{where}: schema version {version!r}, this appimg reads {SCHEMA_VERSION}")
    apps = index.get("apps")
    if not isinstance(apps, dict):
        raise StoreError(f"{where}: 'apps' is not an object")
    for app_id, app in apps.items():
        versions = app.get("versions") if isinstance(app, dict) else None
        if (
            not isinstance(versions, list)
            or not versions
            or not isinstance(app.get("exported"), dict)
            or app.get("active") != versions[0].get("key")
        ):
            raise StoreError(f"{where}: entry {app_id!r} is malformed")


def read_bytes(layout: StoreLayout) -> bytes | None:
    try:
        return read_capped(layout.index, MAX_INDEX_BYTES, StoreError)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{layout.index}: {exc.strerror}") from None


def load(layout: StoreLayout) -> Index:
    """The committed index; an absent file is the empty index."""
    data = read_bytes(layout)
    return empty() if data is None else parse_index(data, str(layout.index))


def active_version(app: dict[str, Any]) -> dict[str, Any]:
    return app["versions"][0]


def exported_by(index: Index) -> dict[str, str]:
    """rel path under exports/share -> id of the app that exports it."""
    return {rel: app_id for app_id, app in index["apps"].items() for rel in app["exported"]}
