"""The merged view: the app's payload plus granted host rules (spec/overlay-rules.md §5-§6).

A pure model with no FUSE in it: :meth:`View.node` resolves a view path to a
:class:`Node` (an app inode, a host entry or a synthesized directory) and
:meth:`View.listdir` gives a directory's merged entries. The FUSE layer and the
tests use exactly this.

Resolution follows overlayfs. Every directory node carries its *layers*, the
directories it merges, top first. A child is looked up in each layer, top
first; the first hit decides: a non-directory is the child (whatever lies
below it is hidden), a directory is merged with the lower layers' same-name
directories down to the first non-directory. The root has one layer, the
app's root. A rule takes over at its ``at``: ``replace`` has the host path as
its only layer, ``under`` the app's entry at ``at`` above the host path,
``over`` the host path above the app's entry. Where the app has a directory
at ``at`` and the host path is a symlink to a granted directory (a merged-/usr
host's ``/bin -> usr/bin``), that directory is the host's layer. The most specific ``at`` wins
because resolution walks down from the root and meets the deeper rule later.
Every proper ancestor of a rule's ``at`` is a directory: if the layers give
anything else (or nothing) there, a directory is synthesized; either way it
lists the next component of the ``at`` below it.

App symlinks are returned verbatim and host symlinks are shown as symlinks
(:mod:`appimg.host.fs` never follows one), so nothing outside the granted host paths
is ever served.
"""

from __future__ import annotations

import errno
import itertools
import posixpath
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from appimg.errors import IsADirError, NotADirError, NotFoundError, PathError
from appimg.format.squashfs import Inode, SquashfsReader
from appimg.host.fs import HostFS
from appimg.host.rules import Rule
from appimg.host.whitelist import covers

APP = "app"
HOST = "host"
SYNTH = "synth"
#: Synthesized directories get inode numbers with only bit 62 set (see appimg.host.fs.HOST_INO).
SYNTH_INO = 1 << 62

_KIND = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFBLK: "block",
    stat.S_IFCHR: "char",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}

#: A layer of a directory: (APP, directory Inode) or (HOST, absolute host path).
Layer = tuple[str, object]


class Node:
    """One entry of the view, with stat-like fields. Treat as read-only."""

    __slots__ = (
        "blocks",
        "gid",
        "host",
        "ino",
        "inode",
        "kind",
        "layers",
        "mode",
        "mtime_ns",
        "nlink",
        "packed",
        "rdev",
        "size",
        "source",
        "stamp",
        "uid",
        "volatile",
    )

    kind: str  # file | dir | symlink | block | char | fifo | socket
    source: str  # APP | HOST | SYNTH
    inode: Inode | None  # APP: the payload inode
    host: str | None  # HOST: the absolute host path
    layers: tuple[Layer, ...]  # directories: what they merge, top first
    volatile: bool  # depends on the host: may change, cached only briefly
    stamp: float  # when it was resolved (time.monotonic)
    packed: bytes | None  # a front end's encoding of the attributes (e.g. a struct stat)

    def is_dir(self) -> bool:
        return self.kind == "dir"

    def __repr__(self) -> str:
        where = self.host if self.source == HOST else self.inode
        return f"Node({self.kind}, {self.source}, {where!r}, layers={len(self.layers)})"


def _app_node(inode: Inode, volatile: bool) -> Node:
    n = Node()
    n.kind = inode.kind
    n.source = APP
    n.inode = inode
    n.host = None
    n.layers = ((APP, inode),) if inode.kind == "dir" else ()
    n.mode = inode.mode
    n.ino = inode.number
    n.nlink = inode.nlink
    n.uid = inode.uid
    n.gid = inode.gid
    n.size = inode.size
    n.mtime_ns = inode.mtime * 1_000_000_000
    n.rdev = inode.rdev
    n.blocks = (inode.size + 511) >> 9 if inode.kind == "file" else 0
    n.volatile = volatile
    n.stamp = 0.0
    n.packed = None
    return n


def _host_node(path: str, st: object, ino: int) -> Node:
    n = Node()
    mode = st.st_mode  # type: ignore[attr-defined]
    n.kind = _KIND.get(stat.S_IFMT(mode), "file")
    n.source = HOST
    n.inode = None
    n.host = path
    n.layers = ((HOST, path),) if n.kind == "dir" else ()
    n.mode = mode
    n.ino = ino
    n.nlink = st.st_nlink  # type: ignore[attr-defined]
    n.uid = st.st_uid  # type: ignore[attr-defined]
    n.gid = st.st_gid  # type: ignore[attr-defined]
    n.size = st.st_size  # type: ignore[attr-defined]
    n.mtime_ns = st.st_mtime_ns  # type: ignore[attr-defined]
    n.rdev = st.st_rdev  # type: ignore[attr-defined]
    n.blocks = st.st_blocks  # type: ignore[attr-defined]
    n.volatile = True
    n.stamp = 0.0
    n.packed = None
    return n


def join(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class BlockCache:
    """A small LRU map; every operation holds one lock for a few dict operations.

    Values are computed by callers outside the lock: two threads missing the
    same key both compute it and the later ``put`` wins (values are equal).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


class View:
    """The merged read-only tree of one mount. Thread-safe.

    Node cache contract: view path -> Node, at most ``cache_size`` entries;
    when full, the older half (by insertion) is dropped. Nodes that depend only
    on the image never go stale; *volatile* ones (anything the host takes part
    in) are used for ``host_ttl`` seconds, then resolved again. Dict operations
    are atomic under the GIL; eviction takes a lock.
    """

    def __init__(
        self,
        reader: SquashfsReader,
        rules: Sequence[Rule] = (),
        hostfs: HostFS | None = None,
        *,
        host_ttl: float = 1.0,
        cache_size: int = 65536,
        block_cache_bytes: int = 32 << 20,
    ) -> None:
        self.reader = reader
        self.rules = tuple(rules)
        hidden = [h for r in self.rules for h in r.hidden]
        self.hostfs = hostfs if hostfs is not None else HostFS(hidden)
        self.host_ttl = host_ttl
        self._rules_at = {r.at: r for r in self.rules}
        # Every proper ancestor of an `at` -> the names it must list for the rules below.
        self._injected: dict[str, set[str]] = {}
        for rule in self.rules:
            parts = [p for p in rule.at.split("/") if p]
            for depth in range(len(parts)):
                parent = "/" + "/".join(parts[:depth])
                self._injected.setdefault(parent, set()).add(parts[depth])
        self._synth_ino = {p: SYNTH_INO | i for i, p in enumerate(sorted(self._injected))}
        root = _app_node(reader.root, False)
        self.root = root
        self._cache: dict[str, Node] = {"/": root}
        self._cache_size = max(cache_size, 16)
        self._evict_lock = threading.Lock()
        self._block_size: int = reader.superblock.block_size
        # Decompressed, verified blocks of files larger than one block: (inode
        # reference, block index) -> bytes; at most ``block_cache_bytes``, LRU.
        self._blocks = BlockCache(max(block_cache_bytes // self._block_size, 4))

    @property
    def has_host(self) -> bool:
        return bool(self.rules)

    # -- cache ----------------------------------------------------------------------------

    def _cached(self, path: str) -> Node | None:
        node = self._cache.get(path)
        if node is not None and node.volatile and time.monotonic() - node.stamp > self.host_ttl:
            return None
        return node

    def _remember(self, path: str, node: Node) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            with self._evict_lock:
                if len(cache) >= self._cache_size:
                    for key in list(itertools.islice(cache, len(cache) // 2)):
                        cache.pop(key, None)
                    cache["/"] = self.root
        cache[path] = node

    # -- resolution -----------------------------------------------------------------------

    def node(self, path: str) -> Node:
        """The node at view path ``path`` ("/a/b"); symlinks are not followed.

        Raises NotFoundError or NotADirError (PathErrors, with their errno).
        """
        node = self._cached(path)
        if node is not None:
            return node
        if not path.startswith("/"):
            raise NotFoundError(path)
        parent_path, _, name = path.rpartition("/")
        parent_path = parent_path or "/"
        parent = self._cached(parent_path)
        if parent is None:
            parent = self._walk(parent_path)
        if not name:
            return parent
        return self._step(parent, parent_path, name, path)

    def _walk(self, path: str) -> Node:
        node = self.root
        current = "/"
        for name in path.split("/"):
            if not name or name == ".":
                continue
            if name == "..":
                raise NotFoundError(path)  # FUSE never sends '..'; refuse rather than guess
            child = join(current, name)
            cached = self._cached(child)
            node = cached if cached is not None else self._step(node, current, name, child)
            current = child
        return node

    def _step(self, parent: Node, parent_path: str, name: str, path: str) -> Node:
        if parent.kind != "dir":
            raise NotADirError(path)
        rule = self._rules_at.get(path)
        if rule is not None:
            node = self._rule_root(rule, path)
        else:
            node = self._merge(self._lookups(parent.layers, name), parent.volatile)
        if path in self._injected and (node is None or node.kind != "dir"):
            node = self._synth(path, parent.volatile)
        if node is None:
            raise NotFoundError(path)
        self._remember(path, node)
        return node

    def _lookups(self, layers: Iterable[Layer], name: str) -> Iterable[tuple[str, object, bool]]:
        """(source, handle, is_dir) of ``name`` in each layer that has it, top first."""
        for source, handle in layers:
            if source == APP:
                try:
                    inode = self.reader.lookup_child(handle, name)  # type: ignore[arg-type]
                except PathError:
                    continue
                yield APP, inode, inode.kind == "dir"
            else:
                host = join(handle, name)  # type: ignore[arg-type]
                st = self.hostfs.lstat(host)
                if st is not None:
                    yield HOST, (host, st), stat.S_ISDIR(st.st_mode)

    def _merge(self, found: Iterable[tuple[str, object, bool]], volatile: bool) -> Node | None:
        """The overlayfs rule: the top entry decides; directories merge down to a non-directory."""
        top: tuple[str, object, bool] | None = None
        layers: list[Layer] = []
        for source, handle, is_dir in found:
            if top is None:
                top = (source, handle, is_dir)
                if not is_dir:
                    break
            elif not is_dir:
                break
            layers.append((source, handle if source == APP else handle[0]))  # type: ignore[index]
        if top is None:
            return None
        source, handle, _ = top
        if source == APP:
            node = _app_node(handle, volatile)  # type: ignore[arg-type]
        else:
            path, st = handle  # type: ignore[misc]
            node = _host_node(path, st, self.hostfs.ino(st))
        if node.kind == "dir":
            if any(s == HOST for s, _ in layers):
                node.volatile = True
            node.layers = tuple(layers)
            if len(layers) > 1:
                node.nlink = 1  # a merged directory: its subdirectory count is not known
        if node.volatile:
            node.stamp = time.monotonic()
        return node

    def _app_at(self, path: str) -> Inode | None:
        try:
            return self.reader.lookup(path)
        except PathError:
            return None

    def _rule_root(self, rule: Rule, path: str) -> Node | None:
        st = self.hostfs.lstat(rule.path)
        host = [(HOST, (rule.path, st), stat.S_ISDIR(st.st_mode))] if st is not None else []
        if rule.mode == "replace":
            return self._merge(host, True)
        inode = self._app_at(path)
        app = [(APP, inode, inode.kind == "dir")] if inode is not None else []
        if app and app[0][2] and st is not None and stat.S_ISLNK(st.st_mode):
            target = self._granted_dir_behind(rule.path)
            if target is not None:
                host = [(HOST, target, True)]
        node = self._merge(app + host if rule.mode == "under" else host + app, True)
        if node is not None:
            node.volatile = True
            node.stamp = time.monotonic()
        return node

    def _granted_dir_behind(self, link: str) -> tuple[str, object] | None:
        """(host path, lstat) of the directory the host symlink ``link`` names, if granted.

        A merged-/usr host has ``/bin -> usr/bin``; an app with its own ``bin/``
        under the ``host`` profile must still see the host's programs there. The
        target is taken one step only, as host path text (relative to the link's
        directory), and used only when it is at or below the ``path`` of a granted
        rule and is itself a directory reached without symlinks: nothing is shown
        that the view would not show elsewhere anyway.
        """
        try:
            text = self.hostfs.readlink(link)
        except OSError:
            return None
        target = posixpath.normpath(posixpath.join(posixpath.dirname(link), text))
        if not any(covers(r.path, target) for r in self.rules):
            return None
        st = self.hostfs.lstat(target)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return None
        return target, st

    def _synth(self, path: str, volatile: bool) -> Node:
        root = self.reader.root
        n = Node()
        n.kind = "dir"
        n.source = SYNTH
        n.inode = None
        n.host = None
        n.layers = ()
        n.mode = stat.S_IFDIR | 0o755
        n.ino = self._synth_ino[path]
        n.nlink = 2
        n.uid = root.uid
        n.gid = root.gid
        n.size = 0
        n.mtime_ns = root.mtime * 1_000_000_000
        n.rdev = 0
        n.blocks = 0
        n.volatile = volatile
        n.stamp = time.monotonic()
        n.packed = None
        return n

    # -- directories ----------------------------------------------------------------------

    def listdir(self, path: str) -> list[tuple[str, Node]]:
        """The merged entries of the directory at ``path`` (without '.' and '..')."""
        node = self.node(path)
        if node.kind != "dir":
            raise NotADirError(path)
        layers = node.layers
        if len(layers) == 1 and layers[0][0] == APP and path not in self._injected:
            # The common case, an app-only directory: one pass, no lookups.
            volatile = node.volatile
            entries = []
            for name, inode in self.reader.iterdir(layers[0][1]):  # type: ignore[arg-type]
                child = _app_node(inode, volatile)
                if volatile:
                    child.stamp = time.monotonic()
                self._remember(join(path, name), child)
                entries.append((name, child))
            return entries
        return self._merged_listing(path, node)

    def _merged_listing(self, path: str, node: Node) -> list[tuple[str, Node]]:
        tables: list[tuple[str, dict[str, object]]] = []
        for source, handle in node.layers:
            if source == APP:
                listing = dict(self.reader.iterdir(handle))  # type: ignore[arg-type]
            else:
                listing = {
                    name: (join(handle, name), st)  # type: ignore[arg-type]
                    for name, st in self.hostfs.listdir(handle)  # type: ignore[arg-type]
                }
            tables.append((source, listing))
        names = set(self._injected.get(path, ()))
        for _, listing in tables:
            names.update(listing)
        entries = []
        for name in sorted(names, key=_sort_key):
            child_path = join(path, name)
            rule = self._rules_at.get(child_path)
            if rule is not None:
                child = self._rule_root(rule, child_path)
            else:
                found = []
                for source, listing in tables:
                    hit = listing.get(name)
                    if hit is None:
                        continue
                    if source == APP:
                        found.append((APP, hit, hit.kind == "dir"))  # type: ignore[attr-defined]
                    else:
                        found.append((HOST, hit, stat.S_ISDIR(hit[1].st_mode)))  # type: ignore[index]
                child = self._merge(found, node.volatile)
            if child_path in self._injected and (child is None or child.kind != "dir"):
                child = self._synth(child_path, node.volatile)
            if child is None:
                continue
            self._remember(child_path, child)
            entries.append((name, child))
        return entries

    # -- contents -------------------------------------------------------------------------

    def read(self, node: Node, offset: int, size: int) -> bytes:
        if node.source == APP:
            inode: Inode = node.inode  # type: ignore[assignment]
            bs = self._block_size
            if inode.size <= bs:
                return self.reader.read(inode, offset, size)
            return self._read_blocks(inode, offset, size, bs)
        if node.source == HOST:
            return self.hostfs.read(node.host, offset, size)  # type: ignore[arg-type]
        raise IsADirError("<synthesized directory>")

    def _read_blocks(self, inode: Inode, offset: int, size: int, bs: int) -> bytes:
        """A range of a file larger than one block, through the block cache.

        The kernel's readahead asks for a file in growing pieces (16, 32, 64 KiB ...)
        that do not line up with SquashFS blocks; without the cache each piece
        would decompress and verify its whole block again.
        """
        end = min(offset + size, inode.size)
        if offset >= end or offset < 0:
            return b""
        first = offset // bs
        last = (end - 1) // bs
        pieces = []
        for k in range(first, last + 1):
            key = (inode.ref, k)
            block = self._blocks.get(key)
            if block is None:
                block = self.reader.read(inode, k * bs, bs)
                self._blocks.put(key, block)
            a = offset - k * bs if k == first else 0
            b = end - k * bs if k == last else len(block)
            pieces.append(block if a == 0 and b == len(block) else block[a:b])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readlink(self, node: Node) -> str:
        if node.source == APP:
            return self.reader.readlink(node.inode)  # type: ignore[arg-type]
        if node.source == HOST and node.kind == "symlink":
            return self.hostfs.readlink(node.host)  # type: ignore[arg-type]
        raise PathError(errno.EINVAL, "<view>", "not a symbolic link")

    def xattrs(self, node: Node) -> dict[str, bytes]:
        if node.source == APP:
            return self.reader.xattrs(node.inode)  # type: ignore[arg-type]
        return {}
