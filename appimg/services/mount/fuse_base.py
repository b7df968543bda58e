"""What both FUSE bindings of the merged view share (spec/overlay-rules.md §7, "FUSE
backend"): the one place that turns appimg's errors into errno values, the
statfs figures, the mount options and the cache timeout of what never changes.

A block that fails its verity hash (IntegrityError) or a malformed structure
(FormatError) is ``EIO`` for that one request, with a log line; the mount keeps
serving.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from typing import Protocol

from appimg.errors import AppimgError, FormatError, IntegrityError
from appimg.services.mount.log import log
from appimg.services.view import View

#: An image-only view never changes: the kernel caches entries and attributes for a day.
IMMUTABLE_TIMEOUT = 86400.0
#: Most distinct integrity failures logged (one line each); later ones are counted only.
_MAX_LOGGED = 1000


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


class ThreadStates:
    """Keeps the Python thread state of libfuse's worker threads alive.

    ctypes gives a thread that calls in from C a fresh Python thread state for every
    call and deletes it afterwards: about a fifth of the cost of a small request.
    :meth:`pin`, called first in every callback, takes one extra
    ``PyGILState_Ensure`` on a thread's first call so that its state lives on (for at
    most ``limit`` threads)."""

    def __init__(self, limit: int = 256) -> None:
        self._pinned: set[int] = set()
        self._limit = limit
        self._ensure = ctypes.pythonapi.PyGILState_Ensure

    def pin(self) -> None:
        tid = threading.get_ident()
        if tid not in self._pinned and len(self._pinned) < self._limit:
            self._pinned.add(tid)
            self._ensure()


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
