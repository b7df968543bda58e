"""``index.json``: what is installed and what it provides (spec/xdg-index.md §The index).

The index is the store's single source of truth: the exports directory and the
images directory are made to match it. It is serialised canonically (sorted
keys, no insignificant whitespace) so that equal states have equal bytes,
which the transaction journal relies on to tell whether a commit happened.
:func:`check` also validates every path the store would write or delete
(relative, normalised, below ``images/`` or ``exports/share/``): a damaged or
crafted index is a :class:`StoreError`, never a deletion outside the store.
Only the standard library is imported here: ``appimg list`` and ``appimg xdg
find`` load the index and nothing heavier.
"""

from __future__ import annotations

import json
import re
from typing import Any

from appimg.errors import StoreError
from appimg.files import read_capped
from appimg.services.store.layout import StoreLayout

SCHEMA = "appimg-xdg-index"
SCHEMA_VERSION = 1
#: Versions kept per app: the active one and the one `rollback` returns to.
KEPT_VERSIONS = 2
MAX_INDEX_BYTES = 256 << 20
#: Longest relative path the index may record (PATH_MAX).
MAX_PATH = 4096
#: A control character, or an empty, ``.`` or ``..`` component (a leading ``/`` is one).
_BAD_REL = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{0,2}(?:/|\Z)")

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
        _check_paths(app_id, app, where)


def valid_rel(rel: object) -> bool:
    """A relative path as the index records them: ``/``-separated, normalised (no empty,
    ``.`` or ``..`` component, no leading ``/``), no NUL or other control character,
    at most MAX_PATH bytes."""
    if not isinstance(rel, str) or not rel or len(rel.encode("utf-8", "replace")) > MAX_PATH:
        return False
    return _BAD_REL.search(rel) is None


def valid_image_file(rel: object) -> bool:
    """``images/<id>/<key>.appimg``: the only place an index may name an image."""
    if not valid_rel(rel):
        return False
    parts = str(rel).split("/")
    return len(parts) == 3 and parts[0] == "images" and parts[2].endswith(".appimg")


_SHA256 = re.compile(r"sha256:[0-9a-f]{64}\Z")


def valid_origin(origin: object) -> bool:
    """An app's ``origin`` (spec/xdg-index.md §2): the oci:// reference its updates
    come from, whether over plain HTTP, and the manifest digest last installed."""
    return (
        isinstance(origin, dict)
        and isinstance(origin.get("reference"), str)
        and origin["reference"].startswith("oci://")
        and len(origin["reference"]) <= MAX_PATH
        and "\x00" not in origin["reference"]
        and isinstance(origin.get("plain_http", False), bool)
        and (origin.get("manifest") is None or bool(_SHA256.match(str(origin["manifest"]))))
    )


def _check_paths(app_id: str, app: dict[str, Any], where: str) -> None:
    """Every path the store would write or delete stays inside it (a crafted index must
    never make ``uninstall`` delete a file of the user)."""
    bad = None
    if not valid_rel(app_id) or "/" in app_id:
        bad = f"app id {app_id!r}"
    if "origin" in app and not valid_origin(app["origin"]):
        bad = "origin"
    for rel in app["exported"]:
        if bad is None and not valid_rel(rel):
            bad = f"exported path {rel!r}"
    for version in app["versions"]:
        if bad is not None:
            break
        if not isinstance(version, dict) or not valid_image_file(version.get("file")):
            shown = version.get("file") if isinstance(version, dict) else version
            bad = f"image path {shown!r}"
            break
        if "digest" in version and not _SHA256.match(str(version["digest"])):
            bad = "image digest"
            break
        xdg = version.get("xdg_files", {})
        if not isinstance(xdg, dict):
            bad = "xdg_files"
            break
        for rel, payload in xdg.items():
            if not valid_rel(rel) or not valid_rel(payload):
                bad = f"xdg file {rel!r}"
                break
    if bad is not None:
        if len(bad) > 120:
            bad = bad[:117] + "..."
        raise StoreError(f"{where}: entry {app_id!r} has an invalid {bad} (damaged or crafted)")


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
