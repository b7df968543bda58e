"""What the app finds in its sandbox: data directory, environment, host rule binds (spec/run.md).

The data directory comes from the user's :class:`~appimg.host.dirs.UserDirs` and
the image's identity (:func:`data_name`: its id and the keys that signed it); the
caller's environment is only read for what is passed through to the app.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from appimg.host.dirs import UserDirs
from appimg.host.trust import Verdict

PASSED_THROUGH = ("TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "NO_COLOR")
DEFAULT_PATH = "/bin:/usr/bin:/sbin:/usr/sbin"


def data_name(app_id: str, verdict: Verdict, root_hash: str, *, installed: bool) -> str:
    """The name of the data directory an image gets: its identity, not only its id
    (spec/run.md, "The data directory").

    ``ID`` belongs to the installed app: ``installed`` says the image is the installed
    one (run by its id), or the installed app is pinned to a key that signed it.
    Every other image claiming the id gets a directory of its own: ``ID@KEY`` (the
    first 16 hex digits of the first of the keys its verdict rests on) when signed,
    ``ID@unsigned-ROOT`` (the first 16 hex digits of its verity root hash) when not.
    An id never contains ``@``, so none of these is another app's ``ID``.
    """
    if installed:
        return app_id
    if verdict.key_ids:
        return f"{app_id}@{verdict.key_ids[0][:16]}"
    return f"{app_id}@unsigned-{root_hash[:16]}"


def data_path(name: str, dirs: UserDirs) -> Path:
    """``~/.var/appimg/NAME`` (see :func:`data_name`), whether it exists or not."""
    return dirs.home / ".var" / "appimg" / name


def data_dir(name: str, dirs: UserDirs) -> Path:
    """``~/.var/appimg/NAME`` (see :func:`data_name`), created (0700) with its XDG
    subdirectories on first use."""
    base = data_path(name, dirs)
    for sub in ("", "data", "config", "cache", "state"):
        (base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def app_environment(
    manifest: Mapping[str, Any], caller_env: Mapping[str, str], data: Path
) -> dict[str, str]:
    """A fresh environment: the data directory's XDG variables, the caller's locale and
    terminal variables (:data:`PASSED_THROUGH`, ``LC_*``), then the manifest's ``env``."""
    env = {
        "HOME": str(data),
        "XDG_DATA_HOME": str(data / "data"),
        "XDG_CONFIG_HOME": str(data / "config"),
        "XDG_CACHE_HOME": str(data / "cache"),
        "XDG_STATE_HOME": str(data / "state"),
        "PATH": DEFAULT_PATH,
        "APPIMG_ID": manifest["id"],
        "APPIMG_VERSION": manifest["version"],
    }
    for key, value in caller_env.items():
        if key in PASSED_THROUGH or key.startswith("LC_"):
            env[key] = value
    env.update(manifest.get("env", {}))
    return env


def socket_binds(
    granted: Iterable[tuple[str, str, tuple[str, ...]]],
) -> list[tuple[str, str, bool, tuple[str, ...]]]:
    """Binds for granted (host path, at, hidden) rules the FUSE view cannot carry.

    Sockets cannot be used through FUSE, and anything under /tmp is hidden by the
    sandbox's private /tmp: those are bound directly, as (host path, at, writable,
    the whitelist's deny entries below it) for :func:`appimg.services.run.grants.build`,
    which opens them without following symlinks and hides the deny entries. (The
    display and sound sockets are the ``sockets`` permission's:
    :mod:`appimg.services.run.sockets`.)
    """
    binds = []
    for path, at, hidden in granted:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if stat.S_ISSOCK(mode) or at == "/tmp" or at.startswith("/tmp/"):
            binds.append((path, at, stat.S_ISSOCK(mode), hidden))
    return binds
