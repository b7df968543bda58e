"""The merged view on libfuse 3's low-level (inode-based) API, through ctypes
(spec/overlay-rules.md §7, "FUSE backend").

Only what a read-only view needs is bound: ``fuse_session_new`` with a
``fuse_lowlevel_ops`` table, ``fuse_session_mount`` (fusermount3 for an
unprivileged user), the multithreaded loop, the ``fuse_reply_*`` calls and
``fuse_add_direntry[_plus]``. The kernel names inodes by *node id*: ours, handed
out by :class:`Inodes`; the ``st_ino`` a program sees stays the view's.

Requests are what costs in a Python file system (each one is a round trip into
the interpreter), so the mount spends them carefully:

* ``open`` answers ENOSYS once: the kernel then opens every file without asking
  (Linux >= 4.20 "no_open"), keeps its page cache across opens and sends no
  ``flush`` or ``release``.
* An image-only view answers ``opendir`` with ENOSYS too (Linux >= 5.1
  "no_opendir"): the kernel then opens directories without asking and keeps each
  listing in its page cache (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR), so a directory
  is read from the server once per mount, and a warm re-read of the tree sends no
  request at all. With host rules, ``opendir`` is answered: directories whose
  listing depends only on the image get the same cache flags, the others none
  (their listing is read again on every open, so host changes show).
* Every directory read is a READDIRPLUS with full attributes (the kernel's
  "auto" mode is off): listing a directory fills the kernel's dentry and
  attribute caches, no LOOKUP per entry.
* Entries, attributes and negative lookups are valid for a day where only the
  image decides them, and for ``view.host_ttl`` where the host takes part.
* Symlink targets of an image-only view are kept in the kernel's page cache too
  (FUSE_CAP_CACHE_SYMLINKS).

What a hostile image and app can make the server keep is bounded: node ids only
for view paths up to ``MAX_PATH`` bytes (a directory linked into itself has no
deepest level), kept listings up to ``MAX_LISTED`` entries in all, and the node
ids of a READDIRPLUS reply the kernel did not take are given back at once.

libfuse calls in from its own worker threads, which keep their Python thread
state between requests (:class:`.fuse_base.ThreadStates`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import threading
from collections.abc import Callable
from typing import Any

from appimg.errors import NotADirError, PathError
from appimg.services.mount.fuse_base import (
    IMMUTABLE_TIMEOUT,
    Errors,
    ThreadStates,
    has_xattrs,
    mount_options,
    statfs,
)
from appimg.services.mount.log import log
from appimg.services.view import Node, View, join

# -- the C side: layouts and functions ------------------------------------------------------

_MACHINE = os.uname().machine
#: Platforms whose ``struct stat`` layout is known (others use the high-level fallback).
_KNOWN_STAT = ("x86_64", "aarch64")
if _MACHINE == "aarch64":
    # dev ino mode nlink uid gid rdev pad size blksize pad blocks atim mtim ctim unused[2]
    _STAT = struct.Struct("=QQIIIIQQqiiq6q8x")

    def _pack_stat(ino: int, nlink: int, mode: int, uid: int, gid: int, rdev: int, size: int,
                   blocks: int, sec: int, nsec: int) -> bytes:  # fmt: skip
        return _STAT.pack(0, ino, mode, nlink, uid, gid, rdev, 0, size, 0, 0, blocks,
                          sec, nsec, sec, nsec, sec, nsec)  # fmt: skip
else:
    # x86_64: dev ino nlink mode uid gid pad rdev size blksize blocks atim mtim ctim unused[3]
    _STAT = struct.Struct("=QQQIIIiQqqq6q24x")

    def _pack_stat(ino: int, nlink: int, mode: int, uid: int, gid: int, rdev: int, size: int,
                   blocks: int, sec: int, nsec: int) -> bytes:  # fmt: skip
        return _STAT.pack(0, ino, nlink, mode, uid, gid, 0, rdev, size, 0, blocks,
                          sec, nsec, sec, nsec, sec, nsec)  # fmt: skip


#: ``struct statvfs`` on 64-bit Linux: eleven unsigned longs, then int __f_spare[6].
_STATVFS = struct.Struct("=11Q24x")
#: ``struct fuse_entry_param``: ino, generation, struct stat, attr_timeout, entry_timeout.
_ENTRY_HEAD = struct.Struct("=QQ")
_TIMEOUTS = struct.Struct("=dd")
_FORGET_DATA = struct.Struct("=QQ")
#: ``struct fuse_conn_info`` (3.x): offsets of ``capable`` and ``want``.
_CONN_CAPABLE, _CONN_WANT = 20, 24
_CAP_READDIRPLUS_AUTO = 1 << 14
_CAP_CACHE_SYMLINKS = 1 << 23
#: ``struct fuse_file_info``: the bitfield word (keep_cache is bit 2, cache_readdir bit 6).
_FI_KEEP_CACHE = 1 << 2
_FI_CACHE_READDIR = 1 << 6
ROOT_ID = 1


class _FileInfo(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_int),
        ("bits", ctypes.c_uint32),
        ("padding2", ctypes.c_uint32),
        ("fh", ctypes.c_uint64),
        ("lock_owner", ctypes.c_uint64),
        ("poll_events", ctypes.c_uint32),
    ]


class _Args(ctypes.Structure):
    _fields_ = [
        ("argc", ctypes.c_int),
        ("argv", ctypes.POINTER(ctypes.c_char_p)),
        ("allocated", ctypes.c_int),
    ]


#: ``struct fuse_lowlevel_ops`` of libfuse 3.0-3.16, in order; a later libfuse appends.
_OPS = (
    "init", "destroy", "lookup", "forget", "getattr", "setattr", "readlink", "mknod",
    "mkdir", "unlink", "rmdir", "symlink", "rename", "link", "open", "read", "write",
    "flush", "release", "fsync", "opendir", "readdir", "releasedir", "fsyncdir", "statfs",
    "setxattr", "getxattr", "listxattr", "removexattr", "access", "create", "getlk",
    "setlk", "bmap", "ioctl", "poll", "write_buf", "retrieve_reply", "forget_multi",
    "flock", "fallocate", "readdirplus", "copy_file_range", "lseek",
)  # fmt: skip


class _LowlevelOps(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _OPS]


_req, _ino, _ptr = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p
_size, _off = ctypes.c_size_t, ctypes.c_int64
_CB = ctypes.CFUNCTYPE
#: The C signature of each callback this module implements.
_PROTOTYPES = {
    "init": _CB(None, _ptr, _ptr),
    "lookup": _CB(None, _req, _ino, ctypes.c_char_p),
    "forget": _CB(None, _req, _ino, ctypes.c_uint64),
    "getattr": _CB(None, _req, _ino, _ptr),
    "readlink": _CB(None, _req, _ino),
    "open": _CB(None, _req, _ino, _ptr),
    "read": _CB(None, _req, _ino, _size, _off, _ptr),
    "opendir": _CB(None, _req, _ino, _ptr),
    "readdir": _CB(None, _req, _ino, _size, _off, _ptr),
    "releasedir": _CB(None, _req, _ino, _ptr),
    "statfs": _CB(None, _req, _ino),
    "getxattr": _CB(None, _req, _ino, ctypes.c_char_p, _size),
    "listxattr": _CB(None, _req, _ino, _size),
    "forget_multi": _CB(None, _req, _size, _ptr),
    "readdirplus": _CB(None, _req, _ino, _size, _off, _ptr),
}

#: name -> (restype, argtypes) of the libfuse functions used.
_FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "fuse_session_new": (_ptr, (ctypes.POINTER(_Args), ctypes.POINTER(_LowlevelOps), _size, _ptr)),
    "fuse_session_mount": (ctypes.c_int, (_ptr, ctypes.c_char_p)),
    "fuse_session_unmount": (None, (_ptr,)),
    "fuse_session_destroy": (None, (_ptr,)),
    "fuse_set_signal_handlers": (ctypes.c_int, (_ptr,)),
    "fuse_remove_signal_handlers": (None, (_ptr,)),
    "fuse_opt_free_args": (None, (ctypes.POINTER(_Args),)),
    "fuse_reply_err": (ctypes.c_int, (_req, ctypes.c_int)),
    "fuse_reply_none": (None, (_req,)),
    "fuse_reply_entry": (ctypes.c_int, (_req, ctypes.c_char_p)),
    "fuse_reply_attr": (ctypes.c_int, (_req, ctypes.c_char_p, ctypes.c_double)),
    "fuse_reply_readlink": (ctypes.c_int, (_req, ctypes.c_char_p)),
    "fuse_reply_open": (ctypes.c_int, (_req, _ptr)),
    "fuse_reply_buf": (ctypes.c_int, (_req, ctypes.c_char_p, _size)),
    "fuse_reply_statfs": (ctypes.c_int, (_req, ctypes.c_char_p)),
    "fuse_reply_xattr": (ctypes.c_int, (_req, _size)),
    "fuse_add_direntry": (_size, (_req, _ptr, _size, ctypes.c_char_p, ctypes.c_char_p, _off)),
    "fuse_add_direntry_plus": (_size, (_req, _ptr, _size, ctypes.c_char_p, ctypes.c_char_p,
                                       _off)),
}  # fmt: skip


class _Lib:
    """libfuse3's functions, with their C types set."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in _FUNCTIONS.items():
            function = getattr(cdll, name)
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name.removeprefix("fuse_"), function)
        # The multithreaded loop: fuse_loop_cfg_* since 3.12, a clone_fd flag before.
        self.loop_cfg = hasattr(cdll, "fuse_session_loop_mt_312")
        if self.loop_cfg:
            self.loop_mt = cdll.fuse_session_loop_mt_312
            self.cfg_create = cdll.fuse_loop_cfg_create
            self.cfg_create.restype = _ptr
            self.cfg_create.argtypes = ()
            self.cfg_destroy = cdll.fuse_loop_cfg_destroy
            self.cfg_destroy.restype = None
            self.cfg_destroy.argtypes = (_ptr,)
            self.loop_mt.argtypes = (_ptr, _ptr)
        else:
            self.loop_mt = cdll.fuse_session_loop_mt_31
            self.loop_mt.argtypes = (_ptr, ctypes.c_int)
        self.loop_mt.restype = ctypes.c_int


_lib: _Lib | None = None
_lib_error: str | None = None


def _load() -> _Lib:
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            _lib = _Lib(ctypes.CDLL("libfuse3.so.3"))
        except (OSError, AttributeError) as exc:
            _lib_error = str(exc)
    if _lib is None:
        raise OSError(f"libfuse 3's low-level API is not usable: {_lib_error}")
    return _lib


def available() -> bool:
    """Whether libfuse 3 loads and this platform's ``struct stat`` is known."""
    if _MACHINE not in _KNOWN_STAT:
        return False
    try:
        _load()
    except OSError:
        return False
    return True


def _packed(node: Node) -> bytes:
    """The node's attributes as a C ``struct stat``, built once per node."""
    packed = node.packed
    if packed is None:
        sec, nsec = divmod(node.mtime_ns, 1_000_000_000)
        packed = node.packed = _pack_stat(
            node.ino, node.nlink, node.mode, node.uid, node.gid, node.rdev, node.size,
            node.blocks, sec, nsec,
        )  # fmt: skip
    return packed


# -- node ids -------------------------------------------------------------------------------


class Inodes:
    """The node ids handed to the kernel, and the view path and node of each.

    Contract: an id lives while the kernel holds lookups on it. Each entry the
    kernel is given (a LOOKUP reply, a READDIRPLUS entry) adds one; FORGET takes
    them back, and at zero the id is dropped: the table holds what the kernel's
    inode cache holds, no more. The root (id 1) stays. Ids are never reused. A
    path whose node changes type (a host directory swapped for a symlink) gets a
    fresh id: for the kernel that is a new inode. Thread-safe (one lock for a few
    dict operations; lookups by id take none).
    """

    def __init__(self, root: Node) -> None:
        # id -> [path, lookups, node]
        self._ids: dict[int, list[Any]] = {ROOT_ID: ["/", 1, root]}
        self._paths: dict[str, int] = {"/": ROOT_ID}
        self._next = ROOT_ID + 1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, nodeid: int) -> list[Any]:
        """[path, lookups, node] of ``nodeid``; ESTALE for an id the kernel forgot."""
        entry = self._ids.get(nodeid)
        if entry is None:
            raise PathError(errno.ESTALE, f"<node {nodeid}>", "unknown node id")
        return entry

    def path_of(self, nodeid: int) -> str:
        """The view path of ``nodeid``, for log lines."""
        entry = self._ids.get(nodeid)
        return entry[0] if entry is not None else f"<node {nodeid}>"

    def ref(self, path: str, node: Node) -> int:
        """The id of ``path`` with one more lookup (a fresh id for a new path or type)."""
        with self._lock:
            nodeid = self._paths.get(path)
            if nodeid is not None:
                entry = self._ids[nodeid]
                if entry[2].kind == node.kind:
                    entry[1] += 1
                    entry[2] = node
                    return nodeid
            nodeid = self._next
            self._next += 1
            self._ids[nodeid] = [path, 1, node]
            self._paths[path] = nodeid
            return nodeid

    def forget(self, nodeid: int, lookups: int) -> None:
        with self._lock:
            entry = self._ids.get(nodeid)
            if entry is None or nodeid == ROOT_ID:
                return
            entry[1] -= lookups
            if entry[1] <= 0:
                del self._ids[nodeid]
                if self._paths.get(entry[0]) == nodeid:
                    del self._paths[entry[0]]


# -- the operations -------------------------------------------------------------------------

#: Entries of the directory listings kept for directories that depend only on the
#: image, all together (one listing larger than this is still kept, alone). Counted
#: in entries, not listings: a hostile image can hard-link one huge directory into
#: thousands of places, and every path gets a listing of its own.
MAX_LISTED = 1 << 17
#: Longest view path (bytes) a node id is given for; deeper lookups are ENAMETOOLONG.
#: The server keeps every path the kernel holds, and a directory loop in the image
#: (a directory hard-linked into itself) has no deepest level: without the cap, a
#: walk down it by relative lookups makes the server keep paths whose total length
#: grows with the square of the depth. No absolute path on the host can be longer.
MAX_PATH = 4095
#: A directory's entries: (name, view path, node), '.' and '..' first; entry i has offset i + 1.
Listing = list[tuple[bytes, str, Node]]


class Server:
    """The view's FUSE requests, by node id. One per mount; libfuse calls it from
    several threads. Every method replies exactly once, as its last step."""

    def __init__(
        self, view: View, lib: _Lib, *, label: str, on_ready: Callable[[], None] | None
    ) -> None:
        self.view = view
        self.lib = lib
        self.errors = Errors(label)
        self.inodes = Inodes(view.root)
        self._on_ready = on_ready
        self._ttl = view.host_ttl
        self._host = view.has_host
        # Proper ancestors of a rule's `at`: their listing names the rule's root,
        # which comes and goes with the host path.
        self._varies: set[str] = set()
        for rule in view.rules:
            parts = [p for p in rule.at.split("/") if p]
            self._varies.update("/" + "/".join(parts[:depth]) for depth in range(len(parts)))
        self._listings: dict[str, Listing] = {}
        self._listed = 0  # entries in self._listings
        # Host-dependent directories opened (opendir): handle -> listing from offset 0.
        self._handles: dict[int, Listing | None] = {}
        self._next_handle = 1
        self._lock = threading.Lock()
        self._threads = ThreadStates()
        self._negative = {
            t: _ENTRY_HEAD.pack(0, 0) + bytes(len(_packed(view.root))) + _TIMEOUTS.pack(t, t)
            for t in (self._ttl, IMMUTABLE_TIMEOUT)
        }
        self._tails = {t: _TIMEOUTS.pack(t, t) for t in (self._ttl, IMMUTABLE_TIMEOUT)}
        self.readdir_calls = 0  # directory reads that reached the server (for tests)

    @property
    def failures(self) -> int:
        return self.errors.failures

    # -- helpers ------------------------------------------------------------------------

    def _timeout(self, node: Node) -> float:
        return self._ttl if node.volatile else IMMUTABLE_TIMEOUT

    def _fixed(self, path: str, node: Node) -> bool:
        """Whether the directory's listing depends only on the image."""
        return not node.volatile and path not in self._varies

    @staticmethod
    def _too_long(path: str) -> bool:
        return len(path) > MAX_PATH // 4 and len(path.encode("utf-8", "surrogateescape")) > MAX_PATH

    def _node(self, nodeid: int) -> tuple[str, Node]:
        path, _, node = self.inodes.get(nodeid)
        if node.volatile:
            node = self.view.node(path)  # the view resolves it again after host_ttl
        return path, node

    def _entry(self, nodeid: int, node: Node) -> bytes:
        """A ``struct fuse_entry_param``."""
        tail = self._tails[self._timeout(node)]
        return _ENTRY_HEAD.pack(nodeid, 0) + (node.packed or _packed(node)) + tail

    def _fail(self, req: int, exc: BaseException, op: str, where: str) -> None:
        self.lib.reply_err(req, self.errors.errno_of(exc, op, where))

    def callback(self, name: str) -> Any:
        """The C callback for operation ``name``: pins the thread's Python state and
        answers EIO if the method raised before replying (a bug: it is logged)."""
        method = getattr(self, name)
        pin = self._threads.pin
        reply_err = self.lib.reply_err

        def call(req: Any, *args: Any) -> None:
            pin()
            try:
                method(req, *args)
            except Exception:
                log.exception("%s: unexpected error in %s", self.errors.label, name)
                if name not in ("init", "forget", "forget_multi"):
                    reply_err(req, errno.EIO)

        return _PROTOTYPES[name](call)

    # -- session ------------------------------------------------------------------------

    def init(self, userdata: int, conn: int) -> None:
        capable = ctypes.c_uint32.from_address(conn + _CONN_CAPABLE)
        want = ctypes.c_uint32.from_address(conn + _CONN_WANT)
        # Every directory request as READDIRPLUS, not just the first one: a large
        # directory then needs no LOOKUP per entry past the first reply.
        want.value &= ~_CAP_READDIRPLUS_AUTO
        if not self._host and capable.value & _CAP_CACHE_SYMLINKS:
            want.value |= _CAP_CACHE_SYMLINKS
        if self._on_ready is not None:
            self._on_ready()

    # -- names and attributes -----------------------------------------------------------

    def lookup(self, req: int, parent: int, name: bytes) -> None:
        path, parent_path, parent_node = f"<node {parent}>", "", None
        try:
            parent_path, parent_node = self._node(parent)
            path = join(parent_path, name.decode("utf-8", "surrogateescape"))
            if self._too_long(path):
                raise PathError(errno.ENAMETOOLONG, path[:64] + "...", "view path too long")
            node = self.view.node(path)
        except Exception as exc:
            code = self.errors.errno_of(exc, "lookup", path)
            if code != errno.ENOENT or parent_node is None or parent_node.kind != "dir":
                self.lib.reply_err(req, code)
                return
            # A negative entry, cached by the kernel as long as the parent's listing.
            fixed = self._fixed(parent_path, parent_node)
            self.lib.reply_entry(req, self._negative[IMMUTABLE_TIMEOUT if fixed else self._ttl])
            return
        self.lib.reply_entry(req, self._entry(self.inodes.ref(path, node), node))

    def forget(self, req: int, nodeid: int, lookups: int) -> None:
        self.inodes.forget(nodeid, lookups)
        self.lib.reply_none(req)

    def forget_multi(self, req: int, count: int, forgets: int) -> None:
        data = ctypes.string_at(forgets, count * _FORGET_DATA.size)
        for nodeid, lookups in _FORGET_DATA.iter_unpack(data):
            self.inodes.forget(nodeid, lookups)
        self.lib.reply_none(req)

    def getattr(self, req: int, nodeid: int, fi: int | None) -> None:
        try:
            _, node = self._node(nodeid)
        except Exception as exc:
            self._fail(req, exc, "getattr", self._where(nodeid))
            return
        self.lib.reply_attr(req, node.packed or _packed(node), self._timeout(node))

    def readlink(self, req: int, nodeid: int) -> None:
        try:
            _, node = self._node(nodeid)
            target = self.view.readlink(node).encode("utf-8", "surrogateescape")
        except Exception as exc:
            self._fail(req, exc, "readlink", self._where(nodeid))
            return
        self.lib.reply_readlink(req, target)

    def statfs(self, req: int, nodeid: int) -> None:
        f = statfs(self.view)
        self.lib.reply_statfs(req, _STATVFS.pack(
            f["f_bsize"], f["f_frsize"], f["f_blocks"], f["f_bfree"], f["f_bavail"],
            f["f_files"], f["f_ffree"], f["f_favail"], 0, f["f_flag"], f["f_namemax"],
        ))  # fmt: skip

    def _where(self, nodeid: int) -> str:
        return self.inodes.path_of(nodeid)

    # -- files --------------------------------------------------------------------------

    def open(self, req: int, nodeid: int, fi: int | None) -> None:
        # ENOSYS makes the kernel open files without asking from now on (see above).
        self.lib.reply_err(req, errno.ENOSYS)

    def read(self, req: int, nodeid: int, size: int, offset: int, fi: int | None) -> None:
        try:
            _, node = self._node(nodeid)
            data = self.view.read(node, offset, size)
        except Exception as exc:
            self._fail(req, exc, "read", self._where(nodeid))
            return
        self.lib.reply_buf(req, data, len(data))

    # -- directories --------------------------------------------------------------------

    def opendir(self, req: int, nodeid: int, fi: int | None) -> None:
        if not self._host:
            # ENOSYS: the kernel opens directories itself and caches their listings.
            self.lib.reply_err(req, errno.ENOSYS)
            return
        try:
            path, node = self._node(nodeid)
            if node.kind != "dir":
                raise NotADirError(path)
        except Exception as exc:
            self._fail(req, exc, "opendir", self._where(nodeid))
            return
        info = _FileInfo.from_address(fi)  # type: ignore[arg-type]
        if self._fixed(path, node):
            info.bits |= _FI_KEEP_CACHE | _FI_CACHE_READDIR
        else:
            with self._lock:
                handle = self._next_handle
                self._next_handle += 1
                self._handles[handle] = None
            info.fh = handle
        self.lib.reply_open(req, fi)

    def releasedir(self, req: int, nodeid: int, fi: int | None) -> None:
        if fi:
            self._handles.pop(_FileInfo.from_address(fi).fh, None)
        self.lib.reply_err(req, 0)

    def readdirplus(self, req: int, nodeid: int, size: int, offset: int, fi: int | None) -> None:
        self._readdir(req, nodeid, size, offset, fi, plus=True)

    def readdir(self, req: int, nodeid: int, size: int, offset: int, fi: int | None) -> None:
        self._readdir(req, nodeid, size, offset, fi, plus=False)

    def _readdir(
        self, req: int, nodeid: int, size: int, offset: int, fi: int | None, *, plus: bool
    ) -> None:
        self.readdir_calls += 1
        path = self._where(nodeid)
        try:
            path, node = self._node(nodeid)
            entries = self._listing(path, node, offset, fi)
        except Exception as exc:
            self._fail(req, exc, "readdir", path)
            return
        buf = ctypes.create_string_buffer(size)
        base = ctypes.addressof(buf)
        used = 0
        add = self.lib.add_direntry_plus if plus else self.lib.add_direntry
        ref = self.inodes.ref
        given: list[int] = []  # node ids in this reply: taken back unless it is delivered
        delivered = False
        try:
            for index in range(offset, len(entries)):
                name, child_path, child = entries[index]
                child_id = 0
                if not plus:
                    record = child.packed or _packed(child)
                elif index < 2 or self._too_long(child_path):
                    # No entry (node id 0): the kernel skips '.' and '..', and looks
                    # up the others itself (a path too long is then ENAMETOOLONG).
                    record = self._entry(0, child)
                else:
                    child_id = ref(child_path, child)
                    given.append(child_id)
                    record = self._entry(child_id, child)
                n = add(req, base + used, size - used, name, record, index + 1)
                if n > size - used:
                    if child_id:
                        given.pop()
                        self.inodes.forget(child_id, 1)  # not sent after all
                    break
                used += n
            # A reply the kernel did not take (the request was interrupted) leaves it
            # no lookups to forget later.
            delivered = self.lib.reply_buf(req, buf, used) == 0
        finally:
            if not delivered:
                for child_id in given:
                    self.inodes.forget(child_id, 1)

    def _listing(self, path: str, node: Node, offset: int, fi: int | None) -> Listing:
        """The entries of the directory at ``path``. A listing that depends only on
        the image is kept (the kernel asks again when its cache dropped it); one the
        host takes part in is made at offset 0 and kept with the open directory until
        the kernel has read it to the end."""
        if self._fixed(path, node):
            listing = self._listings.get(path)
            if listing is None:
                listing = self._make_listing(path, node)
                with self._lock:
                    if self._listed + len(listing) > MAX_LISTED:
                        self._listings.clear()
                        self._listed = 0
                    self._listed += len(listing) - len(self._listings.get(path, ()))
                    self._listings[path] = listing
            return listing
        handle = _FileInfo.from_address(fi).fh if fi else 0
        listing = self._handles.get(handle) if offset else None
        if listing is None:
            listing = self._make_listing(path, node)
            if handle in self._handles:
                self._handles[handle] = listing
        return listing

    def _make_listing(self, path: str, node: Node) -> Listing:
        if node.kind != "dir":
            raise NotADirError(path)
        listing: Listing = [(b".", path, node), (b"..", path, node)]
        for name, child in self.view.listdir(path):
            listing.append((name.encode("utf-8", "surrogateescape"), join(path, name), child))
        return listing

    # -- extended attributes ------------------------------------------------------------

    def getxattr(self, req: int, nodeid: int, name: bytes, size: int) -> None:
        try:
            _, node = self._node(nodeid)
            value = self.view.xattrs(node).get(name.decode("utf-8", "surrogateescape"))
        except Exception as exc:
            self._fail(req, exc, "getxattr", self._where(nodeid))
            return
        self._reply_xattr(req, value, size)

    def listxattr(self, req: int, nodeid: int, size: int) -> None:
        try:
            _, node = self._node(nodeid)
            names = self.view.xattrs(node)
        except Exception as exc:
            self._fail(req, exc, "listxattr", self._where(nodeid))
            return
        data = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)
        self._reply_xattr(req, data, size)

    def _reply_xattr(self, req: int, value: bytes | None, size: int) -> None:
        if value is None:
            self.lib.reply_err(req, errno.ENODATA)
        elif size == 0:
            self.lib.reply_xattr(req, len(value))  # the caller asks how large it is
        elif len(value) > size:
            self.lib.reply_err(req, errno.ERANGE)
        else:
            self.lib.reply_buf(req, value, len(value))

    # -- the table libfuse calls --------------------------------------------------------

    def operations(self) -> tuple[_LowlevelOps, list[Any]]:
        """The ``fuse_lowlevel_ops`` table, and the callbacks it points to (keep them)."""
        names = list(_PROTOTYPES)
        if not has_xattrs(self.view):
            # No xattrs anywhere: libfuse answers ENOSYS, the kernel then stops asking.
            names = [n for n in names if n not in ("getxattr", "listxattr")]
        if not self._host:
            names.remove("releasedir")  # no opendir, so nothing to release
        table = _LowlevelOps()
        keep = []
        for name in names:
            callback = self.callback(name)
            keep.append(callback)
            setattr(table, name, ctypes.cast(callback, ctypes.c_void_p).value)
        return table, keep


# -- serving --------------------------------------------------------------------------------


def serve(
    view: View,
    mountpoint: str,
    *,
    label: str,
    on_ready: Callable[[], None] | None = None,
    debug: bool = False,
    allow_other: bool = False,
) -> Server:
    """Mount the view at ``mountpoint`` and serve it until unmounted or until
    SIGTERM, SIGINT or SIGHUP (blocks; libfuse handles those signals while it
    serves). Raises RuntimeError when the session cannot be set up or mounted
    (libfuse writes the reason on stderr)."""
    lib = _load()
    server = Server(view, lib, label=label, on_ready=on_ready)
    table, keep = server.operations()
    argv = [b"appimg", b"-o", ",".join(mount_options(label, allow_other)).encode()]
    if debug:
        argv.append(b"-d")
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
    args = _Args(len(argv), c_argv, 0)
    session = lib.session_new(ctypes.byref(args), ctypes.byref(table), ctypes.sizeof(table), None)
    lib.opt_free_args(ctypes.byref(args))
    if not session:
        raise RuntimeError("cannot start a FUSE session")
    try:
        if lib.session_mount(session, os.fsencode(mountpoint)) != 0:
            raise RuntimeError(f"cannot mount at {mountpoint}")
        try:
            _loop(lib, session)
        finally:
            lib.session_unmount(session)
    finally:
        lib.session_destroy(session)
    del keep  # the callbacks stay alive until libfuse is done with them
    return server


def _loop(lib: _Lib, session: int) -> None:
    """Run the multithreaded loop with libfuse's signal handlers (SIGINT too: Python's
    own handler would only run once the loop has returned)."""
    try:
        old_int = signal.signal(signal.SIGINT, signal.SIG_DFL)
    except ValueError:  # not the main thread: leave the signals alone
        old_int = None
    if lib.set_signal_handlers(session) != 0:
        raise RuntimeError("cannot set the FUSE session's signal handlers")
    try:
        if lib.loop_cfg:
            config = lib.cfg_create()
            try:
                lib.loop_mt(session, config)
            finally:
                lib.cfg_destroy(config)
        else:
            lib.loop_mt(session, 0)
    finally:
        lib.remove_signal_handlers(session)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
