"""XDG base directories, computed from an environment mapping passed in.

Per the XDG Base Directory Specification 0.8: a variable that is unset, empty or
not an absolute path is ignored and its default used. Functions take ``env`` as
a parameter so tests need no process-wide changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home(env: Mapping[str, str]) -> Path:
    value = env.get("HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _single(env: Mapping[str, str], name: str, default: str) -> Path:
    value = env.get(name, "")
    if value and os.path.isabs(value):
        return Path(value)
    return home(env) / default


def _list(env: Mapping[str, str], name: str, default: str) -> list[Path]:
    value = env.get(name, "") or default
    return [Path(p) for p in value.split(":") if p and os.path.isabs(p)]


def config_home(env: Mapping[str, str]) -> Path:
    return _single(env, "XDG_CONFIG_HOME", ".config")


def data_home(env: Mapping[str, str]) -> Path:
    return _single(env, "XDG_DATA_HOME", ".local/share")


def cache_home(env: Mapping[str, str]) -> Path:
    return _single(env, "XDG_CACHE_HOME", ".cache")


def state_home(env: Mapping[str, str]) -> Path:
    return _single(env, "XDG_STATE_HOME", ".local/state")


def data_dirs(env: Mapping[str, str]) -> list[Path]:
    return _list(env, "XDG_DATA_DIRS", "/usr/local/share/:/usr/share/")


def config_dirs(env: Mapping[str, str]) -> list[Path]:
    return _list(env, "XDG_CONFIG_DIRS", "/etc/xdg")


def runtime_dir(env: Mapping[str, str]) -> Path:
    """$XDG_RUNTIME_DIR, else a private per-user directory under /tmp (created 0700)."""
    value = env.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value) and os.path.isdir(value):
        return Path(value)
    fallback = Path(f"/tmp/appimg-runtime-{os.getuid()}")
    fallback.mkdir(mode=0o700, exist_ok=True)
    st = fallback.lstat()
    if st.st_uid != os.getuid() or not fallback.is_dir() or fallback.is_symlink():
        from .errors import UsageError

        raise UsageError(f"{fallback}: not a private directory owned by this user")
    return fallback
