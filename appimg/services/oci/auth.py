"""Registry credentials from the files container tools write (spec/distribution.md §2).

The first of ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``
(podman, skopeo, buildah), ``$DOCKER_CONFIG/config.json`` and
``~/.docker/config.json`` that has an entry for the registry wins. Only inline
credentials (``auths.HOST.auth``: base64 of ``user:password``, or ``username`` and
``password``) are read; credential helpers (``credsStore``, ``credHelpers``) are not
run. The environment is a parameter, never read here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path

from appimg.files import read_capped

MAX_AUTH_FILE = 1 << 20


def auth_files(env: Mapping[str, str]) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    if env.get("HOME"):
        files.append(Path(env["HOME"]) / ".docker" / "config.json")
    return files


def _keys(host: str) -> list[str]:
    """The spellings tools use for a registry's entry; Docker Hub's legacy URL too."""
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def credentials(host: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) for ``host`` (HOST[:PORT]) from the first file that has them."""
    for path in auth_files(env):
        try:
            config = json.loads(read_capped(path, MAX_AUTH_FILE))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # unreadable or damaged: as if absent, like docker and podman do
        auths = config.get("auths") if isinstance(config, dict) else None
        if not isinstance(auths, dict):
            continue
        for key in _keys(host):
            entry = auths.get(key)
            if isinstance(entry, dict):
                found = _decode(entry)
                if found:
                    return found
    return None


def _decode(entry: dict[str, object]) -> tuple[str, str] | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(password, str):
        return user, password
    return None


__all__ = ["auth_files", "credentials"]
