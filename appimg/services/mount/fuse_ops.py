"""The merged view on libfuse's high-level (path-based) API (spec/overlay-rules.md §7,
"FUSE backend"): the fallback where :mod:`.lowlevel` cannot serve (see :mod:`.frontend`).

A thin layer over :class:`appimg.services.view.View` in the fusepy API:
mfusepy (libfuse 3, or 2) when installed, else fusepy (libfuse 2). Errors become
errno values in :class:`.fuse_base.Errors`, as in the low-level binding: a block
that fails its verity hash (IntegrityError) or a malformed structure
(FormatError) is ``EIO`` for that one request, with a log line; the mount keeps
serving.

Requests per file are what costs in a Python file system (each is a round
trip into the interpreter), so the mount spends them carefully:

* ``open`` answers ENOSYS once: the kernel then opens every file without asking
  (Linux >= 4.20 "no_open"), keeps the page cache across opens, and sends no
  ``release``; ``flush``, ``opendir``, ``releasedir`` and ``access`` are not
  implemented, so libfuse answers them itself.
* Every directory read is a READDIRPLUS (the kernel's "auto" mode is turned
  off), answered with full attributes the first time: listing a directory
  fills the kernel's dentry and attribute caches, so no LOOKUP per entry,
  also past the first reply of a large directory.
* Entry, attribute and negative timeouts are a day for an image-only view (the
  payload never changes) and ``host_ttl`` when host paths take part.
* Hot callbacks (getattr, read, readdir) fill the C structures directly
  instead of going through fusepy's dict conversions (:class:`FastFUSE`).
* A directory read again after its attributes went out is handed to libfuse
  whole, without offsets: libfuse then answers its remaining requests (the
  final empty one) in C. Each directory still costs four requests per open
  (OPENDIR, two READDIRPLUS, RELEASEDIR): libfuse 3.14's high-level API neither
  passes ``cache_readdir`` from opendir on to the kernel nor survives an
  opendir answered with ENOSYS. The low-level binding saves them.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Any

from appimg.services.mount.fuse_base import (
    IMMUTABLE_TIMEOUT,
    Errors,
    ThreadStates,
    has_xattrs,
    mount_options,
    statfs,
)
from appimg.services.mount.log import log
from appimg.services.view import Node, View


def _locate_libfuse() -> None:
    """Tell mfusepy where libfuse is: its own search runs ldconfig (~0.1 s per mount)."""
    if os.environ.get("FUSE_LIBRARY_PATH"):
        return
    for name in ("libfuse3.so.3", "libfuse.so.2"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        os.environ["FUSE_LIBRARY_PATH"] = name
        return


_locate_libfuse()
try:
    import mfusepy as fuse

    FLAVOUR = f"mfusepy, libfuse {fuse.fuse_version_major}.{fuse.fuse_version_minor}"
except (ImportError, OSError):  # pragma: no cover - fallback
    import fuse  # type: ignore[no-redef]  # fusepy with libfuse 2

    FLAVOUR = "fusepy, libfuse 2"


#: fuse_common.h: the kernel decides per request whether to ask for READDIRPLUS.
_CAP_READDIRPLUS_AUTO = 1 << 14
#: libfuse's readdir flags (fuse.h): the request wants attributes / an entry carries them.
_READDIR_PLUS = 1
_FILL_DIR_PLUS = 2


class Operations(fuse.Operations):
    """The view in the fusepy API: read-only, path based, safe to call from many threads."""

    use_ns = True

    def __init__(
        self, view: View, *, label: str = "appimg", on_ready: Callable[[], None] | None = None
    ) -> None:
        self.view = view
        self.label = label
        self._on_ready = on_ready
        self.errors = Errors(label)
        if not has_xattrs(view):
            # No xattrs anywhere: leave the callbacks out, the kernel then stops asking.
            self.getxattr = None  # type: ignore[assignment]
            self.listxattr = None  # type: ignore[assignment]

    @property
    def failures(self) -> int:
        return self.errors.failures

    def errno_of(self, exc: BaseException, op: str, path: str) -> int:
        return self.errors.errno_of(exc, op, path)

    def _node(self, path: str, op: str) -> Node:
        try:
            return self.view.node(path)
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, op, path)) from None

    # -- operations -------------------------------------------------------------------

    def init(self, path: str) -> None:
        if self._on_ready is not None:
            self._on_ready()

    def init_with_config(self, conn: Any, config: Any) -> None:
        if conn is not None and hasattr(conn, "want"):
            # Every directory request as READDIRPLUS, not just the first one: a large
            # directory then needs no LOOKUP per entry past the first reply.
            conn.want &= ~_CAP_READDIRPLUS_AUTO
        self.init("/")

    def attrs(self, node: Node) -> dict[str, Any]:
        t: float = node.mtime_ns if fuse_uses_ns() else node.mtime_ns / 1e9
        return {
            "st_mode": node.mode, "st_ino": node.ino, "st_nlink": node.nlink,
            "st_uid": node.uid, "st_gid": node.gid, "st_size": node.size,
            "st_rdev": node.rdev, "st_blocks": node.blocks,
            "st_atime": t, "st_mtime": t, "st_ctime": t,
        }  # fmt: skip

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        return self.attrs(self._node(path, "getattr"))

    def readlink(self, path: str) -> str:
        node = self._node(path, "readlink")
        try:
            return self.view.readlink(node)
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, "readlink", path)) from None

    def open(self, path: str, flags: int) -> int:
        # ENOSYS makes the kernel open files without asking from now on (see above).
        raise fuse.FuseOSError(errno.ENOSYS)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        node = self._node(path, "read")
        try:
            return self.view.read(node, offset, size)
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, "read", path)) from None

    def listing(self, path: str) -> list[tuple[str, Node]]:
        try:
            return self.view.listdir(path)
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, "readdir", path)) from None

    def readdir(self, path: str, fh: int) -> list[Any]:
        node = self._node(path, "readdir")
        entries: list[Any] = [(".", {"st_mode": node.mode, "st_ino": node.ino}, 0), ".."]
        for name, child in self.listing(path):
            entries.append((name, self.attrs(child), 0))
        return entries

    def statfs(self, path: str) -> dict[str, int]:
        return statfs(self.view)

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        node = self._node(path, "getxattr")
        try:
            value = self.view.xattrs(node).get(name)
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, "getxattr", path)) from None
        if value is None:
            raise fuse.FuseOSError(errno.ENODATA)
        return value

    def listxattr(self, path: str) -> list[str]:
        node = self._node(path, "listxattr")
        try:
            return list(self.view.xattrs(node))
        except Exception as exc:
            raise fuse.FuseOSError(self.errno_of(exc, "listxattr", path)) from None


def fuse_uses_ns() -> bool:
    # mfusepy takes nanoseconds when the operations set use_ns; fusepy wants float seconds.
    return hasattr(fuse, "fuse_version_major")


_STAT_SIZE = ctypes.sizeof(fuse.c_stat)


def _packed(node: Node) -> bytes:
    """The node's attributes as a C ``struct stat``, built once per node."""
    packed = node.packed
    if packed is None:
        st = fuse.c_stat()
        _fill(st, node)
        packed = node.packed = ctypes.string_at(ctypes.addressof(st), _STAT_SIZE)
    return packed


def _fill(st: Any, node: Node) -> None:
    st.st_mode = node.mode
    st.st_ino = node.ino
    st.st_nlink = node.nlink
    st.st_uid = node.uid
    st.st_gid = node.gid
    st.st_size = node.size
    st.st_rdev = node.rdev
    st.st_blocks = node.blocks
    sec, nsec = divmod(node.mtime_ns, 1_000_000_000)
    for ts in (st.st_mtimespec, st.st_atimespec, st.st_ctimespec):
        ts.tv_sec = sec
        ts.tv_nsec = nsec


def _fast(method: Callable[..., int]) -> Callable[..., int]:
    """Marks a FastFUSE callback that maps its own errors (see FastFUSE._wrapper)."""
    method.fast = True  # type: ignore[attr-defined]
    return method


class FastFUSE(fuse.FUSE):  # type: ignore[misc,name-defined]
    """mfusepy's FUSE with the hot libfuse 3 callbacks implemented directly.

    The callbacks below replace mfusepy's generic wrappers (same names, same C
    signatures): they look the node up once, fill libfuse's structures, and
    answer READDIRPLUS with attributes (libfuse 3.14 drops them when a
    file system fills a directory without offsets, so offsets are given). Worker
    threads keep their Python thread state (:class:`.fuse_base.ThreadStates`).
    """

    def __init__(self, operations: Operations, mountpoint: str, **options: Any) -> None:
        self._threads = ThreadStates()
        self._listings: dict[str, list[tuple[bytes, Node]]] = {}
        # Listings of image-only directories (they never change): path -> entries.
        self._static: dict[str, list[tuple[bytes, Node]]] = {}
        self._plussed: set[str] = set()
        self._covered: dict[str, int] = {}
        super().__init__(operations, mountpoint, **options)

    def _wrapper(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        self._threads.pin()
        if getattr(func, "fast", False):
            # Our own callbacks map every error themselves: skip fusepy's wrapper.
            try:
                return func(*args)
            except Exception:
                log.exception("unexpected error in %s", func.__name__)
                return -errno.EIO
        return super()._wrapper(func, *args, **kwargs)

    @_fast
    def getattr_fuse_3(self, path: bytes, buf: Any, fip: Any) -> int:
        ops: Operations = self.operations
        text = path.decode("utf-8", "surrogateescape")
        try:
            node = ops.view.node(text)
        except Exception as exc:
            return -ops.errno_of(exc, "getattr", text)
        ctypes.memmove(buf, _packed(node), _STAT_SIZE)
        return 0

    @_fast
    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        ops: Operations = self.operations
        text = "" if path is None else path.decode("utf-8", "surrogateescape")
        try:
            data = ops.view.read(ops.view.node(text), offset, size)
        except Exception as exc:
            return -ops.errno_of(exc, "read", text)
        n = len(data)
        if n:
            ctypes.memmove(buf, data, n)
        return n

    @_fast
    def readdir_fuse_3(
        self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int
    ) -> int:
        ops: Operations = self.operations
        text = "" if path is None else path.decode("utf-8", "surrogateescape")
        # The kernel reads a directory in several requests (the last one comes back
        # empty): keep the listing from offset 0 until it has been handed out.
        entries = self._listings.pop(text, None) if offset else None
        if entries is None:
            try:
                node = ops.view.node(text)
                cached = self._static.get(text) if not node.volatile else None
                if cached is None:
                    listing = ops.view.listdir(text)
                    cached = [(b".", node), (b"..", node)]
                    cached += [(name.encode("utf-8", "surrogateescape"), n) for name, n in listing]
                    if not node.volatile:
                        if len(self._static) >= 4096:
                            self._static.clear()
                        self._static[text] = cached
            except Exception as exc:
                return -ops.errno_of(exc, "readdir", text)
            entries = cached
        if offset >= len(entries):
            return 0  # the final, empty request: the listing has been handed out
        # Attributes go out once per image-only directory: the kernel keeps them for
        # a day, and a READDIRPLUS answered without them costs it (and libfuse) less.
        static = entries is self._static.get(text)
        plus = bool(flags & _READDIR_PLUS) and not (static and text in self._plussed)
        if not plus and static and offset == 0:
            return self._fill_unindexed(entries, buf, filler)
        # Attributes handed out so far without a gap, from offset 0.
        covered = self._covered.get(text, -1) if offset else 0
        st = fuse.c_stat()
        address = ctypes.addressof(st)
        memmove = ctypes.memmove
        complete = True
        for index in range(offset, len(entries)):
            name, node = entries[index]
            # Without FUSE_FILL_DIR_PLUS only the type and inode number are used.
            memmove(address, node.packed or _packed(node), _STAT_SIZE)
            fill_flags = _FILL_DIR_PLUS if plus and index > 1 else 0
            if filler(buf, name, st, index + 1, fill_flags):
                complete = False
                break
        if plus and static and covered == offset:
            if complete:
                self._covered.pop(text, None)
                if len(self._plussed) >= 65536:
                    self._plussed.clear()
                self._plussed.add(text)
            else:
                if len(self._covered) >= 4096:
                    self._covered.clear()
                self._covered[text] = index  # the next request resumes here
        # Bounded: a listing the kernel never comes back for is dropped with the rest.
        if len(self._listings) >= 1024:
            self._listings.clear()
        self._listings[text] = entries
        return 0

    @staticmethod
    def _fill_unindexed(entries: list[tuple[bytes, Node]], buf: Any, filler: Any) -> int:
        """Hand libfuse the whole listing without offsets: it keeps the list and answers
        the directory's later requests (the rest of a large one, and the final empty
        one) itself, without calling back into Python. Without offsets libfuse 3.14
        sends no attributes; only a directory whose attributes went out before (the
        kernel keeps them) is answered this way."""
        st = fuse.c_stat()
        address = ctypes.addressof(st)
        memmove = ctypes.memmove
        for name, node in entries:
            memmove(address, node.packed or _packed(node), _STAT_SIZE)
            if filler(buf, name, st, 0, 0):
                break
        return 0


def fast_supported() -> bool:
    return getattr(fuse, "fuse_version_major", 0) == 3 and hasattr(fuse.FUSE, "readdir_fuse_3")


def serve(
    view: View,
    mountpoint: str,
    *,
    label: str,
    on_ready: Callable[[], None] | None = None,
    debug: bool = False,
    allow_other: bool = False,
) -> Operations:
    """Mount the view at ``mountpoint`` and serve it until unmounted (blocks).

    ``on_ready`` runs once the kernel has completed the FUSE handshake, i.e.
    when the mount is usable. Runs multithreaded in the foreground.
    """
    timeout = view.host_ttl if view.has_host else IMMUTABLE_TIMEOUT
    ops = Operations(view, label=label, on_ready=on_ready)
    options: dict[str, Any] = dict(
        o.split("=", 1) if "=" in o else (o, True) for o in mount_options(label, allow_other)
    )
    options.update({
        "foreground": True,
        "kernel_cache": True,
        "entry_timeout": timeout,
        "attr_timeout": timeout,
        "negative_timeout": timeout,
        "use_ino": True,
        "debug": debug,
    })  # fmt: skip
    cls = FastFUSE if fast_supported() else fuse.FUSE
    cls(ops, mountpoint, **options)
    return ops
