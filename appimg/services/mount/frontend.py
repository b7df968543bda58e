"""The FUSE front end of the merged view (spec/overlay-rules.md §7, "FUSE backend"):
which binding serves a mount, and the one place that turns appimg's errors into errno.

Two bindings serve a :class:`~appimg.services.view.View`, read-only and multithreaded:

* :mod:`.lowlevel` — libfuse 3's low-level (inode-based) API through ctypes, used
  whenever libfuse 3 is installed on a platform whose ``struct stat`` it knows. It
  lets the kernel cache directory listings: a warm re-read sends no request at all;
* :mod:`.fuse_ops` — the path-based high-level API through mfusepy (libfuse 3 or 2)
  or fusepy (libfuse 2): the fallback.

:func:`binding` picks one; ``APPIMG_FUSE_API=highlevel`` in the server's environment
forces the fallback (tests and benchmarks compare the two).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from appimg.errors import AppimgError, FormatError, IntegrityError
from appimg.services.view import View

log = logging.getLogger("appimg.services.mount")

#: An image-only view never changes: the kernel caches entries and attributes for a day.
IMMUTABLE_TIMEOUT = 86400.0
#: Most distinct integrity failures logged (one line each); later ones are counted only.
_MAX_LOGGED = 1000

LOWLEVEL = "lowlevel"
HIGHLEVEL = "highlevel"


class Errors:
    """The errno of failed requests. Integrity and format errors are counted and
    logged, once per (path, message) up to ``_MAX_LOGGED`` lines. Thread-safe."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.failures = 0
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def errno_of(self, exc: BaseException, op: str, path: str) -> int:
        """The errno for a request ``op`` on ``path`` that raised ``exc``."""
        if isinstance(exc, IntegrityError | FormatError):
            key = (path, str(exc))
            with self._lock:
                self.failures += 1
                fresh = key not in self._logged and len(self._logged) < _MAX_LOGGED
                if fresh:
                    self._logged.add(key)
            if fresh:
                kind = "integrity" if isinstance(exc, IntegrityError) else "format"
                log.error("%s: EIO on %s %s: %s error: %s", self.label, op, path, kind, exc)
            return errno.EIO
        if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
            return exc.errno
        if isinstance(exc, AppimgError):
            log.error("%s: EIO on %s %s: %s", self.label, op, path, exc)
            return errno.EIO
        log.exception("%s: unexpected error on %s %s", self.label, op, path)
        return errno.EIO


class Served(Protocol):
    """What :func:`serve` returns: the failed requests' count, once unmounted."""

    @property
    def failures(self) -> int: ...


def has_xattrs(view: View) -> bool:
    """Whether the payload has an xattr table (else the kernel is told there are none)."""
    from appimg.format.squashfs.records import INVALID_U64

    return view.reader.superblock.xattr_id_table_start != INVALID_U64


def statfs(view: View) -> dict[str, int]:
    """The mount's statvfs fields: a read-only file system of the payload's size."""
    sb = view.reader.superblock
    return {
        "f_bsize": sb.block_size, "f_frsize": 4096,
        "f_blocks": (sb.bytes_used + 4095) // 4096, "f_bfree": 0, "f_bavail": 0,
        "f_files": sb.inode_count, "f_ffree": 0, "f_favail": 0,
        "f_namemax": 255, "f_flag": os.ST_RDONLY,
    }  # fmt: skip


def mount_options(label: str, allow_other: bool) -> list[str]:
    """The mount options both bindings pass to libfuse (and fusermount3)."""
    options = ["ro", f"fsname=appimg:{label}"[:207], "subtype=appimg"]
    if allow_other:
        options.append("allow_other")
    return options


def binding(env: Mapping[str, str] = os.environ) -> str:
    """LOWLEVEL when libfuse 3's low-level API can serve here, else HIGHLEVEL."""
    if env.get("APPIMG_FUSE_API") == HIGHLEVEL:
        return HIGHLEVEL
    from appimg.services.mount import lowlevel

    return LOWLEVEL if lowlevel.available() else HIGHLEVEL


def preload(env: Mapping[str, str] = os.environ) -> None:
    """Import the binding :func:`serve` will use (before a fork: paid once per process)."""
    if binding(env) == HIGHLEVEL:
        from appimg.services.mount import fuse_ops  # noqa: F401


def serve(
    view: View,
    mountpoint: str,
    *,
    label: str,
    on_ready: Callable[[], None] | None = None,
    debug: bool = False,
    allow_other: bool = False,
) -> Served:
    """Mount the view at ``mountpoint`` and serve it until unmounted (blocks).

    ``on_ready`` runs once the kernel has completed the FUSE handshake, i.e. when
    the mount is usable. A session ended by SIGTERM, SIGINT or SIGHUP returns
    normally (the low-level binding) or raises RuntimeError (mfusepy); a mount
    that fails raises RuntimeError (libfuse's reason is in the log).
    """
    kwargs: dict[str, Any] = {
        "label": label, "on_ready": on_ready, "debug": debug, "allow_other": allow_other,
    }  # fmt: skip
    if binding() == LOWLEVEL:
        from appimg.services.mount import lowlevel

        return lowlevel.serve(view, mountpoint, **kwargs)
    from appimg.services.mount import fuse_ops

    return fuse_ops.serve(view, mountpoint, **kwargs)
