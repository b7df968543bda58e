"""Managing the trust store: ``appimg trust add|list|remove`` (spec/xdg-index.md §Trust policy).

The directories are those of :mod:`appimg.host.trust`. ``add`` stores a public key
as ``<key id>.pub`` (SubjectPublicKeyInfo PEM) in the user's directory; the
system directory is listed but only changed by its administrator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appimg.atomic import replace_file
from appimg.errors import AppimgError, PolicyError, UsageError
from appimg.format import keys
from appimg.host.dirs import UserDirs
from appimg.host.trust import MAX_TRUSTED_KEYS, SYSTEM_TRUST_DIR, trust_dirs, user_trust_dir


def add(dirs: UserDirs, source: Path) -> tuple[str, Path, bool]:
    """Trust the public key in ``source`` (a .pub, a private key or base64): (id, file, new)."""
    public = keys.load_public(source)
    kid = keys.key_id(public)
    directory = user_trust_dir(dirs)
    target = directory / f"{kid}.pub"
    known = any(row["key_id"] == kid for row in listing(dirs) if row["scope"] == "user")
    if not known:
        directory.mkdir(parents=True, exist_ok=True)
        replace_file(target, keys.public_pem(public))
    return kid, target, not known


def listing(dirs: UserDirs) -> list[dict[str, Any]]:
    rows = []
    for directory in trust_dirs(dirs):
        scope = "system" if directory == SYSTEM_TRUST_DIR else "user"
        try:
            names = sorted(p.name for p in directory.iterdir())[:MAX_TRUSTED_KEYS]
        except OSError:
            continue
        for name in names:
            path = directory / name
            row: dict[str, Any] = {"key_id": None, "scope": scope, "file": str(path), "error": None}
            try:
                row["key_id"] = keys.key_id(keys.load_public(path))
            except AppimgError as exc:
                row["error"] = str(exc)
            rows.append(row)
    return rows


def remove(dirs: UserDirs, key: str) -> list[Path]:
    """Stop trusting a key, named by its id (or a unique prefix of 8+ digits) or a key file."""
    if Path(key).exists() and not key.isalnum():
        key = keys.key_id(keys.load_public(Path(key)))
    key = key.lower()
    if len(key) < 8:
        raise UsageError(f"{key!r}: give at least 8 digits of the key id, or a key file")
    rows = [r for r in listing(dirs) if r["key_id"] and r["key_id"].startswith(key)]
    if len({r["key_id"] for r in rows}) > 1:
        raise UsageError(f"{key!r} matches more than one key")
    if not rows:
        raise UsageError(f"no trusted key {key}")
    removed = []
    for row in rows:
        if row["scope"] == "system":
            continue
        Path(row["file"]).unlink()
        removed.append(Path(row["file"]))
    if not removed:
        raise PolicyError(f"key {rows[0]['key_id']} is trusted system-wide in "
                          f"{SYSTEM_TRUST_DIR}; only an administrator can remove it")  # fmt: skip
    return removed
