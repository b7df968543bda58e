"""Where the copies run without FUSE live, and removing them (spec/run.md, "Without FUSE").

``$XDG_CACHE_HOME/appimg/extracted`` holds, per image root hash ``ROOT``: the
copy ``ROOT/`` (``tree/`` and its ``complete`` marker), a killed fill's
``.ROOT.tmp``, and the lock files ``.ROOT.use`` (held shared by each run using
the copy) and ``.ROOT.fill``. Filling and using them is
:mod:`appimg.services.mount.extracted`'s; the store calls :func:`prune` after
every change, so that an uninstalled app's copies go with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from appimg.host.dirs import UserDirs

#: What the cache directory holds: ROOT, .ROOT.tmp, .ROOT.use, .ROOT.fill.
_ENTRY = re.compile(r"\.?([0-9a-f]{16,128})(?:\.(?:tmp|use|fill))?")


def cache_root(dirs: UserDirs) -> Path:
    """``$XDG_CACHE_HOME/appimg/extracted``."""
    return dirs.cache_home / "appimg" / "extracted"


def remove_copy(path: Path) -> None:
    """Remove a copy (its directories may be read-only, as in the image)."""
    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    for parent, subdirs, _files in os.walk(path):
        for name in subdirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(parent, name), 0o700, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def prune(dirs: UserDirs, keep: Iterable[str]) -> list[str]:
    """Remove every copy whose root hash is not in ``keep`` and that no run uses;
    return the root hashes removed."""
    base = cache_root(dirs)
    keep = set(keep)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    roots = {match[1] for match in map(_ENTRY.fullmatch, names) if match}
    removed = []
    for root in sorted(roots - keep):
        use_path = base / f".{root}.use"
        try:
            fd = os.open(use_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # in use: the next change of the store removes it
                raise
            remove_copy(base / root)
            remove_copy(base / f".{root}.tmp")
            for suffix in ("fill", "use"):
                with contextlib.suppress(FileNotFoundError):
                    (base / f".{root}.{suffix}").unlink()
            removed.append(root)
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        base.rmdir()  # nothing left: no trace in the cache directory
    return removed
