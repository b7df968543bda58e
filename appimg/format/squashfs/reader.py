"""Lazy, random-access reader of SquashFS 4.0 as written by squashfs-tools / squashfs-tools-ng.

Opening reads the superblock, the id table and the root inode, nothing that
grows with the number of files. Paths are resolved by walking directories on
demand (seeking with the directory index of large directories), and a file
range is read by decompressing only the data blocks (or the fragment block)
that cover it. Every byte comes through a :class:`~appimg.format.source.ByteSource`,
which in production checks it against a dm-verity tree.

Layout of the image (all offsets absolute, all tables but the last one end
where the next starts): superblock | compressor options | data blocks and
fragment blocks | inode table | directory table | fragment table | export table
| id table | xattr tables. The inode and directory tables are chains of
metadata blocks (:mod:`.structs`); the fragment, id, export and xattr-id tables
are arrays of entries in metadata blocks, found through an array of u64
pointers that follows them.

Everything read from the image is distrusted: corrupt or hostile input raises
:class:`~appimg.errors.FormatError` and never makes the reader loop forever
or allocate more than the image (or the caller's read length) justifies.
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from appimg.errors import FormatError, IsADirError, NotADirError, NotFoundError, PathError
from appimg.format.source import ByteSource
from appimg.format.squashfs import records as S
from appimg.format.squashfs.cache import LRUCache
from appimg.format.squashfs.compression import COMPRESSORS, decompressor

#: Basic inode type -> Inode.kind and the st_mode file type bits.
_KINDS = {
    S.INODE_DIR: "dir",
    S.INODE_FILE: "file",
    S.INODE_SYMLINK: "symlink",
    S.INODE_BLOCK: "block",
    S.INODE_CHAR: "char",
    S.INODE_FIFO: "fifo",
    S.INODE_SOCKET: "socket",
}
_IFMT = {
    S.INODE_DIR: stat.S_IFDIR,
    S.INODE_FILE: stat.S_IFREG,
    S.INODE_SYMLINK: stat.S_IFLNK,
    S.INODE_BLOCK: stat.S_IFBLK,
    S.INODE_CHAR: stat.S_IFCHR,
    S.INODE_FIFO: stat.S_IFIFO,
    S.INODE_SOCKET: stat.S_IFSOCK,
}
#: Longest symlink target Linux accepts (PATH_MAX without the NUL); the kernel's
#: squashfs refuses longer ones too.
_MAX_SYMLINK = 4095
#: Largest xattr value Linux accepts (XATTR_SIZE_MAX).
_MAX_XATTR_VALUE = 65536
#: Most xattrs one inode can have (XATTR_LIST_MAX / smallest entry).
_MAX_XATTRS = 65536 // 2
_META = S.METADATA_SIZE
_NO_FRAGMENT = S.INVALID_U32
#: Directories with a listing up to this size are looked up through a cached dict;
#: larger ones (which have a directory index) by seeking with the index.
_SMALL_LISTING = 65536
#: Bounds of the block list and directory index caches (entries).
_BLOCKLIST_BUDGET = 1 << 21
_INDEX_BUDGET = 1 << 16
#: A file's block list is read in chunks of this many size words (8 KiB, one
#: metadata block): a read loads only the chunks of the blocks it needs, found
#: through a per-file index of one checkpoint per chunk.
_CHUNK_BLOCKS = 2048
#: Bound of the chunk index cache (checkpoints, 24 bytes each: 6 MiB).
_CHUNK_INDEX_BUDGET = 1 << 18
#: XATTR_LIST_MAX: the names of one inode's xattrs, each with its prefix and a
#: NUL, as listxattr returns them. More is E2BIG.
_MAX_XATTR_NAMES = 65536
#: Value bytes materialised for one inode's xattrs, each out-of-line reference
#: counted at the size of the value it points to. More is a FormatError.
_MAX_XATTR_BYTES = 1 << 20
#: Clears the DATA_UNCOMPRESSED bit (bit 0 of each size word's top byte).
_CLEAR_BIT0 = bytes(b & 0xFE for b in range(256))


class Inode:
    """One inode of the image: cheap to create, treat as read-only.

    Public fields are stat-like; the ``_`` fields locate the inode's data
    (block list, fragment, directory listing and index, symlink target).
    Derived data (block offsets, directory index) lives in the reader's caches.
    """

    __slots__ = (
        "_blocks_start",
        "_fragment",
        "_fragment_offset",
        "_index_count",
        "_nblocks",
        "_start_block",
        "_start_offset",
        "_tail_offset",
        "_tail_pos",
        "_target",
        "_type",
        "_xattr",
        "gid",
        "kind",
        "mode",
        "mtime",
        "nlink",
        "number",
        "rdev",
        "ref",
        "size",
        "uid",
    )

    ref: int  # inode reference: metadata block (from inode_table_start) << 16 | offset
    number: int
    kind: str  # "file" | "dir" | "symlink" | "block" | "char" | "fifo" | "socket"
    mode: int  # st_mode: file type bits | permission bits
    uid: int
    gid: int
    mtime: int
    nlink: int
    size: int  # file bytes; symlink target length; directory: listing size + 3
    rdev: int

    def __init__(
        self, ref: int, number: int, itype: int, mode: int, uid: int, gid: int, mtime: int
    ) -> None:
        basic = S.BASIC_TYPE[itype]
        self.ref = ref
        self.number = number
        self.kind = _KINDS[basic]
        self.mode = _IFMT[basic] | (mode & 0o7777)
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.nlink = 1
        self.size = 0
        self.rdev = 0
        self._type = itype
        self._xattr = S.INVALID_U32

    def is_dir(self) -> bool:
        return self.kind == "dir"

    def is_file(self) -> bool:
        return self.kind == "file"

    def is_symlink(self) -> bool:
        return self.kind == "symlink"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Inode):
            return NotImplemented
        return self.ref == other.ref and self.number == other.number

    def __hash__(self) -> int:
        return hash((self.ref, self.number))

    def __repr__(self) -> str:
        return (
            f"Inode(ref={self.ref:#x}, number={self.number}, kind={self.kind!r}, "
            f"mode={self.mode:#o}, size={self.size}, nlink={self.nlink})"
        )


class _Cursor:
    """Sequential reader over a chain of metadata blocks that must stay below ``end``.

    ``need(n)`` returns a buffer holding at least ``n`` bytes from ``off``,
    joining the following blocks when a record straddles a block boundary.
    An ``off`` past the first block's end continues into the next blocks (a
    record may start exactly on, or beyond, a boundary).
    """

    __slots__ = ("_end", "_next", "_reader", "buf", "off")

    def __init__(self, reader: SquashfsReader, end: int, pos: int, off: int) -> None:
        self._reader = reader
        self._end = end
        self.buf, self._next = reader._metablock(pos, end)
        self.off = off

    def need(self, n: int) -> bytes:
        buf = self.buf
        off = self.off
        if off + n <= len(buf):
            return buf
        if off >= len(buf):
            skip = off - len(buf)
            parts: list[bytes] = []
            have = 0
        else:
            skip = 0
            parts = [buf[off:]]
            have = len(parts[0])
        while have < n:
            data, self._next = self._reader._metablock(self._next, self._end)
            if skip:
                if skip >= len(data):
                    skip -= len(data)
                    continue
                data = data[skip:]
                skip = 0
            parts.append(data)
            have += len(data)
        self.buf = buf = b"".join(parts)
        self.off = 0
        return buf

    def take(self, n: int) -> bytes:
        buf = self.need(n)
        off = self.off
        self.off = off + n
        return buf[off : off + n]


def read_superblock(source: ByteSource) -> Any:
    """Parse and bound-check the superblock (spec/format.md §5.1, §13.3); FormatError else.

    Also what ``verify --full`` checks of the payload, with no other read (§11.3): the
    compressor must be one this reader can decompress.
    """
    if source.size < S.SUPERBLOCK_SIZE:
        raise FormatError(f"squashfs: image of {source.size} bytes is too small")
    sb = S.SUPERBLOCK.read(source.read(0, S.SUPERBLOCK_SIZE), "superblock", 0)
    SquashfsReader._check_superblock(sb, source.size)
    decompressor(sb.compression_id)  # FormatError for a codec this host lacks (lzo)
    return sb


class SquashfsReader:
    """Read a SquashFS 4.0 image through a :class:`ByteSource`; safe to share between threads."""

    def __init__(
        self,
        source: ByteSource,
        *,
        metadata_cache: int = 2048,
        fragment_cache: int = 64,
        inode_cache: int = 8192,
        dir_cache: int = 65536,
    ) -> None:
        self._source = source
        sb = read_superblock(source)
        self.superblock = sb
        self.compression: str = COMPRESSORS[sb.compression_id]
        self._decompress = decompressor(sb.compression_id)
        self._block_size: int = sb.block_size
        self._block_log: int = sb.block_log
        self._bytes_used: int = sb.bytes_used
        self._inode_count: int = sb.inode_count
        self._fragment_count: int = sb.fragment_entry_count
        self._inode_start: int = sb.inode_table_start
        self._inode_end: int = sb.directory_table_start
        self._dir_start: int = sb.directory_table_start
        # The directory table ends where the next table begins (the fragment
        # table's metadata blocks come before its pointer array, so this bound
        # is loose but safe).
        later = [
            t
            for t in (
                sb.fragment_table_start,
                sb.export_table_start,
                sb.id_table_start,
                sb.xattr_id_table_start,
            )
            if sb.directory_table_start < t <= sb.bytes_used
        ]
        self._dir_end: int = min(later, default=sb.bytes_used)

        # Decompressed metadata blocks (inode, directory, fragment, id, xattr
        # tables): absolute block offset -> (bytes, offset of the next block).
        # At most `metadata_cache` blocks of <= 8 KiB (16 MiB by default), LRU;
        # thread-safe, misses decompressed outside the lock (see LRUCache).
        self._meta: LRUCache[int, tuple[bytes, int]] = LRUCache(metadata_cache)
        # Decompressed fragment blocks: fragment index -> bytes (<= block_size).
        # At most `fragment_cache` blocks (8 MiB at the default 128 KiB block
        # size), LRU; thread-safe. Many small files share one fragment block, so
        # this is what makes reading a directory of small files cheap.
        self._frags: LRUCache[int, bytes] = LRUCache(fragment_cache)
        # Parsed inodes: inode reference -> Inode, and lookup() results: path ->
        # Inode (FUSE resolves the same paths over and over). At most
        # `inode_cache` entries each, LRU; thread-safe. Inodes are immutable.
        self._inodes: LRUCache[int, Inode] = LRUCache(inode_cache)
        self._paths: LRUCache[str, Inode] = LRUCache(inode_cache)
        # Whole listings of small directories (listing <= 64 KiB): directory inode
        # reference -> {name: (inode ref, type, number)}, filled by a complete
        # iterdir, or by the first lookup in a directory without an index, so
        # that looking up every entry of a directory (``ls -l``) is not
        # quadratic. At most `dir_cache` entries over all listings, LRU;
        # thread-safe; 0 disables it.
        self._listings: LRUCache[int, dict[bytes, tuple[int, int, int]]] = LRUCache(dir_cache, len)
        # Data derived from an inode's variable tail. A file's block list is
        # never held whole (a sparse file of 2^24 blocks has a 64 MiB list in a
        # few hundred KiB of image): (inode reference, chunk) -> that chunk's
        # size words and cumulative block offsets (at most _BLOCKLIST_BUDGET
        # blocks over all files, ~12 bytes each); and, for files of more than
        # one chunk, inode reference -> where each chunk starts in the inode
        # table and its data offset (at most _CHUNK_INDEX_BUDGET checkpoints).
        # An extended directory's parsed index: at most _INDEX_BUDGET entries.
        # LRU, thread-safe. Weighted, so hostile inodes sharing one huge block
        # list cannot multiply memory.
        self._blocklists: LRUCache[tuple[int, int], tuple[array, array]] = LRUCache(
            _BLOCKLIST_BUDGET, lambda blocks: len(blocks[1])
        )
        self._chunk_index: LRUCache[int, tuple[array, array, array]] = LRUCache(
            _CHUNK_INDEX_BUDGET, lambda index: len(index[2])
        )
        self._indexes: LRUCache[int, tuple[list[bytes], list[tuple[int, int]]]] = LRUCache(
            _INDEX_BUDGET, lambda index: len(index[0]) + 1
        )
        # Table indexes read on first use (their size is bounded by the image).
        self._fragment_index: array | None = None
        self._xattr_table: tuple[int, int, array] | None = None

        self._ids = self._load_ids()
        root = self.inode(sb.root_inode_ref)
        if root.kind != "dir":
            raise FormatError("squashfs: root inode is not a directory")
        self.root: Inode = root
        self._paths.put("/", root)
        self._paths.put("", root)

    # --- superblock and tables -------------------------------------------------

    @staticmethod
    def _check_superblock(sb: Any, size: int) -> None:
        def bad(why: str) -> FormatError:
            return FormatError(f"squashfs superblock: {why}")

        if sb.magic != S.SQUASHFS_MAGIC:
            raise bad("bad magic, not a squashfs image")
        if (sb.version_major, sb.version_minor) != (4, 0):
            raise bad(f"unsupported version {sb.version_major}.{sb.version_minor}")
        bs = sb.block_size
        if not 4096 <= bs <= 1 << 20 or bs & (bs - 1):
            raise bad(f"invalid block size {bs}")
        if sb.block_log != bs.bit_length() - 1:
            raise bad(f"block_log {sb.block_log} does not match block size {bs}")
        if sb.compression_id not in COMPRESSORS:
            raise bad(f"unknown compressor id {sb.compression_id}")
        if not S.SUPERBLOCK_SIZE < sb.bytes_used <= size:
            raise bad(f"bytes_used {sb.bytes_used} is outside the {size}-byte image")
        if not S.SUPERBLOCK_SIZE <= sb.inode_table_start < sb.directory_table_start < sb.bytes_used:
            raise bad("inode and directory tables are not in order inside the image")
        if sb.inode_count == 0:
            raise bad("no inodes")
        if sb.id_count == 0:
            raise bad("empty id table")

        def index_fits(name: str, start: int, count: int, header: int = 0) -> None:
            end = start + header + S.TABLE_POINTER.size * count
            if start == S.INVALID_U64 or start < sb.directory_table_start or end > sb.bytes_used:
                raise bad(f"{name} at {start} is outside the image")

        index_fits("id table", sb.id_table_start, -(-sb.id_count // S.IDS_PER_BLOCK))
        if sb.fragment_entry_count:
            n = -(-sb.fragment_entry_count // S.FRAGMENTS_PER_BLOCK)
            index_fits("fragment table", sb.fragment_table_start, n)
        if sb.xattr_id_table_start != S.INVALID_U64:
            index_fits("xattr id table", sb.xattr_id_table_start, 0, S.XATTR_ID_TABLE.size)

    def _metablock(self, pos: int, end: int) -> tuple[bytes, int]:
        """Decompressed metadata block at ``pos`` and the offset of the block after it."""
        hit = self._meta.get(pos)
        if hit is not None:
            if hit[1] > end:
                raise FormatError(f"squashfs: metadata block at {pos} runs past its table")
            return hit
        hsize = S.METADATA_HEADER.size
        if pos + hsize > end:
            raise FormatError(f"squashfs: metadata at {pos} runs past its table (ends {end})")
        # One read for header and payload (the payload is at most 8 KiB).
        raw = self._source.read(pos, min(hsize + _META, end - pos))
        (header,) = S.METADATA_HEADER.unpack(raw, 0, "metadata", pos)
        size = header & S.METADATA_SIZE_MASK
        if not 0 < size <= _META or hsize + size > len(raw):
            raise FormatError(f"squashfs: bad metadata block size {size} at {pos}")
        if header & S.METADATA_UNCOMPRESSED:
            data = raw[hsize : hsize + size]
        else:
            data = self._decompress(memoryview(raw)[hsize : hsize + size], _META)
        entry = (data, pos + hsize + size)
        self._meta.put(pos, entry)
        return entry

    def _table_index(self, start: int, count: int, table: str) -> array:
        ptrs = S.u64_array(self._source.read(start, S.TABLE_POINTER.size * count), table, start)
        for p in ptrs:
            if not S.SUPERBLOCK_SIZE <= p < start:
                raise FormatError(f"squashfs {table}: block pointer {p} is outside the table")
        return ptrs

    def _load_ids(self) -> tuple[int, ...]:
        sb = self.superblock
        count = sb.id_count
        ptrs = self._table_index(sb.id_table_start, -(-count // S.IDS_PER_BLOCK), "id table")
        ids: list[int] = []
        for p in ptrs:
            data, _ = self._metablock(p, sb.id_table_start)
            want = min(count - len(ids), S.IDS_PER_BLOCK) * S.ID_ENTRY.size
            if len(data) < want:
                raise FormatError(f"squashfs id table: block at {p} is short")
            ids.extend(S.u32_array(data[:want], "id table", p))
        return tuple(ids)

    # --- inodes ------------------------------------------------------------------

    def inode(self, ref: int) -> Inode:
        """The inode at reference ``ref`` (metadata block << 16 | offset)."""
        node = self._inodes.get(ref)
        if node is not None:
            return node
        block = ref >> 16
        offset = ref & 0xFFFF
        istart = self._inode_start
        iend = self._inode_end
        if ref < 0 or block >= iend - istart or offset >= _META:
            raise FormatError(f"squashfs: inode reference {ref:#x} is outside the inode table")
        pos = istart + block
        data, nxt = self._metablock(pos, iend)
        if offset + S.INODE_MAX_FIXED <= len(data):
            buf, o = data, offset
        else:
            # The inode's fixed part may straddle into the next block.
            if offset >= len(data):
                raise FormatError(f"squashfs: inode reference {ref:#x} is past its block")
            buf, o = data[offset:], 0
            if nxt < iend:
                buf += self._metablock(nxt, iend)[0]
        itype, mode, uid_idx, gid_idx, mtime, number = S.INODE_HEADER.unpack(
            buf, o, "inode table", ref
        )
        record = S.INODE_FIXED.get(itype)
        if record is None:
            raise FormatError(f"squashfs: inode {ref:#x} has unknown type {itype}")
        if not 0 < number <= self._inode_count:
            raise FormatError(f"squashfs: inode {ref:#x} has invalid number {number}")
        ids = self._ids
        if uid_idx >= len(ids) or gid_idx >= len(ids):
            raise FormatError(f"squashfs: inode {ref:#x} has an id index outside the id table")
        node = Inode(ref, number, itype, mode, ids[uid_idx], ids[gid_idx], mtime)
        fixed = record.unpack(buf, o + S.INODE_HEADER.size, "inode table", ref)
        # The variable tail (block list, target, directory index) starts here,
        # as a logical offset from ``pos`` that may run into the next blocks.
        node._tail_pos = pos
        node._tail_offset = offset + S.INODE_HEADER.size + record.size
        basic = S.BASIC_TYPE[itype]
        if basic == S.INODE_FILE:
            self._init_file(node, fixed)
        elif basic == S.INODE_DIR:
            self._init_dir(node, fixed)
        elif basic == S.INODE_SYMLINK:
            self._init_symlink(node, fixed)
        elif basic in (S.INODE_BLOCK, S.INODE_CHAR):
            node.nlink, devno = fixed[0], fixed[1]
            if itype > S.INODE_SOCKET:
                node._xattr = fixed[2]
            # Old 32-bit dev_t: minor in bits 0-7 and 20-31, major in bits 8-19.
            node.rdev = os.makedev((devno >> 8) & 0xFFF, (devno & 0xFF) | ((devno >> 12) & 0xFFF00))
        else:
            node.nlink = fixed[0]
            if itype > S.INODE_SOCKET:
                node._xattr = fixed[1]
        self._inodes.put(ref, node)
        return node

    def _init_file(self, node: Inode, fixed: tuple[int, ...]) -> None:
        if node._type == S.INODE_FILE:
            blocks_start, fragment, fragment_offset, size = fixed
        else:
            blocks_start, size, _sparse, node.nlink, fragment, fragment_offset, node._xattr = fixed
        log = self._block_log
        if fragment == _NO_FRAGMENT:
            nblocks = (size + self._block_size - 1) >> log
        else:
            # The tail (size % block_size bytes) lives in a fragment block.
            nblocks = size >> log
            tail = size - (nblocks << log)
            if fragment >= self._fragment_count or fragment_offset + tail > self._block_size:
                raise FormatError(f"squashfs: inode {node.ref:#x} has an invalid fragment")
        list_size = nblocks * S.BLOCK_SIZE_WORD.size
        # The list lives in the (compressed) inode table: each metadata block takes at
        # least 3 bytes on disk and holds at most 8 KiB, which bounds what can fit.
        table_capacity = (self._inode_end - self._inode_start) // 3 * _META
        if list_size > table_capacity or blocks_start > self._bytes_used:
            raise FormatError(f"squashfs: inode {node.ref:#x} has an impossible block list")
        node.size = size
        node._blocks_start = blocks_start
        node._fragment = fragment
        node._fragment_offset = fragment_offset
        node._nblocks = nblocks

    def _init_dir(self, node: Inode, fixed: tuple[int, ...]) -> None:
        if node._type == S.INODE_DIR:
            start_block, node.nlink, size, start_offset, _parent = fixed
            index_count = 0
        else:
            node.nlink, size, start_block, _parent, index_count, start_offset, node._xattr = fixed
        # ``size`` counts 3 bytes for the implicit "." and ".." entries.
        if size < 3 or start_offset >= _META:
            raise FormatError(f"squashfs: directory inode {node.ref:#x} is malformed")
        if size - 3 > S.MAX_DIR_LISTING:
            raise FormatError(
                f"squashfs: directory {node.ref:#x} has a {size - 3}-byte listing, more than "
                f"a reader accepts ({S.MAX_DIR_LISTING})"
            )
        if size > 3 and start_block >= self._dir_end - self._dir_start:
            raise FormatError(f"squashfs: directory {node.ref:#x} listing is outside its table")
        node.size = size
        node._start_block = start_block
        node._start_offset = start_offset
        node._index_count = index_count

    def _init_symlink(self, node: Inode, fixed: tuple[int, ...]) -> None:
        node.nlink, size = fixed
        if size > _MAX_SYMLINK:
            raise FormatError(f"squashfs: symlink {node.ref:#x} target is {size} bytes long")
        cur = _Cursor(self, self._inode_end, node._tail_pos, node._tail_offset)
        target = cur.take(size)
        if b"\0" in target:
            raise FormatError(f"squashfs: symlink {node.ref:#x} target contains NUL")
        if node._type == S.INODE_EXT_SYMLINK:
            buf = cur.need(S.XATTR_IDX.size)
            (node._xattr,) = S.XATTR_IDX.unpack(buf, cur.off, "inode table", node.ref)
        node.size = size
        node._target = target

    def _table_bytes(self, pos: int, off: int, n: int) -> tuple[bytes, int, int]:
        """``n`` bytes of the inode table from logical offset ``off`` of the metadata
        block at ``pos``, and the (block, offset) just after them."""
        end = self._inode_end
        parts: list[bytes] = []
        while n:
            data, nxt = self._metablock(pos, end)
            if off < len(data):
                piece = data[off : off + n]
                parts.append(piece)
                n -= len(piece)
                off += len(piece)
            if n or off >= len(data):
                off -= len(data)
                pos = nxt
        return b"".join(parts), pos, off

    def _chunk_sizes(self, node: Inode, raw: bytes) -> tuple[array, array]:
        """A chunk's size words and their block sizes (the words without the flag)."""
        words = S.u32_array(raw, "block list", node.ref)
        masked = bytearray(raw)
        masked[3::4] = raw[3::4].translate(_CLEAR_BIT0)
        sizes = S.u32_array(bytes(masked), "block list", node.ref)
        if masked.count(0) != len(masked) and max(sizes) > self._block_size:
            raise FormatError(f"squashfs: inode {node.ref:#x} has a block over block_size")
        return words, sizes

    def _index(self, node: Inode) -> tuple[array, array, array]:
        """Per chunk of a file's block list: metadata block and offset of its first
        word, and data offset (from ``blocks_start``) of its first block; the last
        data offset is where the file's data ends. Built by one pass over the list
        holding one chunk at a time; checks every size."""
        if node._nblocks <= _CHUNK_BLOCKS:
            # One chunk: nothing to index (its blocks are checked when loaded).
            return array("Q", [node._tail_pos]), array("Q", [node._tail_offset]), array("Q", [0])
        index = self._chunk_index.get(node.ref)
        if index is not None:
            return index
        positions, offsets, starts = array("Q"), array("Q"), array("Q", [0])
        pos, off, total = node._tail_pos, node._tail_offset, 0
        room = self._bytes_used - node._blocks_start
        left = node._nblocks
        while left:
            count = min(left, _CHUNK_BLOCKS)
            positions.append(pos)
            offsets.append(off)
            raw, pos, off = self._table_bytes(pos, off, count * S.BLOCK_SIZE_WORD.size)
            if raw.count(0) != len(raw):  # an all-sparse chunk adds nothing
                total += sum(self._chunk_sizes(node, raw)[1])
                if total > room:
                    raise FormatError(f"squashfs: inode {node.ref:#x} data runs past the image")
            starts.append(total)
            left -= count
        index = (positions, offsets, starts)
        self._chunk_index.put(node.ref, index)
        return index

    def _block_chunk(self, node: Inode, chunk: int) -> tuple[array, array]:
        """Size words of blocks ``chunk * _CHUNK_BLOCKS`` onwards (one chunk) and each
        block's offset from ``blocks_start`` (one more entry: the chunk's end)."""
        key = (node.ref, chunk)
        blocks = self._blocklists.get(key)
        if blocks is None:
            positions, offsets, starts = self._index(node)
            count = min(node._nblocks - chunk * _CHUNK_BLOCKS, _CHUNK_BLOCKS)
            raw, _, _ = self._table_bytes(
                positions[chunk], offsets[chunk], count * S.BLOCK_SIZE_WORD.size
            )
            words, sizes = self._chunk_sizes(node, raw)
            offs = array("Q", accumulate(sizes, initial=starts[chunk]))
            if node._blocks_start + offs[-1] > self._bytes_used:
                raise FormatError(f"squashfs: inode {node.ref:#x} data runs past the image")
            blocks = (words, offs)
            self._blocklists.put(key, blocks)
        return blocks

    def data_ranges(self, inode: Inode) -> Iterator[tuple[int, int]]:
        """The byte ranges ``[start, end)`` of a regular file that hold data, in order
        and merged; the rest of the file is holes (sparse blocks), read as zeros."""
        if inode.kind != "file":
            raise PathError(errno.EINVAL, f"<inode {inode.number}>", "not a regular file")
        log = self._block_log
        size = inode.size
        nblocks = inode._nblocks
        run: list[int] = []  # [start, end] of the range being merged
        starts = self._index(inode)[2] if nblocks > _CHUNK_BLOCKS else None
        for chunk in range(-(-nblocks // _CHUNK_BLOCKS)):
            if starts is not None and starts[chunk] == starts[chunk + 1]:
                continue  # all sparse
            words, _ = self._block_chunk(inode, chunk)
            first = chunk * _CHUNK_BLOCKS
            for i, word in enumerate(words, first):
                if not word & S.DATA_SIZE_MASK:
                    continue
                a, b = i << log, min((i + 1) << log, size)
                if run and run[1] == a:
                    run[1] = b
                else:
                    if run:
                        yield run[0], run[1]
                    run = [a, b]
        if inode._fragment != _NO_FRAGMENT and size > nblocks << log:
            a = nblocks << log
            if run and run[1] == a:
                run[1] = size
            else:
                if run:
                    yield run[0], run[1]
                run = [a, size]
        if run:
            yield run[0], run[1]

    # --- directories -------------------------------------------------------------

    def _scan(
        self, block: int, offset: int, consumed: int, total: int
    ) -> Iterator[tuple[bytes, int, int, int]]:
        """Directory entries from listing offset ``consumed`` (at ``block``/``offset``) to
        ``total``: (name, inode reference, basic type, inode number)."""
        cur = _Cursor(self, self._dir_end, self._dir_start + block, offset)
        itable = self._inode_end - self._inode_start
        # Hot loop: unpack_from is only called once the record's bytes are in buf.
        header = S.DIR_HEADER.unpack_from
        hsize = S.DIR_HEADER.size
        entry = S.DIR_ENTRY.unpack_from
        esize = S.DIR_ENTRY.size
        buf = cur.buf
        off = cur.off
        while consumed < total:
            if off + hsize > len(buf):
                cur.off = off
                buf = cur.need(hsize)
                off = cur.off
            count, start, base = header(buf, off)
            off += hsize
            consumed += hsize
            if count >= S.MAX_DIR_ENTRIES or start >= itable:
                raise FormatError(f"squashfs: bad directory header at listing offset {consumed}")
            start <<= 16
            for _ in range(count + 1):
                if off + esize > len(buf):
                    cur.off = off
                    buf = cur.need(esize)
                    off = cur.off
                ioff, diff, etype, nsize = entry(buf, off)
                nsize += 1
                consumed += esize + nsize
                if (
                    nsize > S.MAX_NAME
                    or ioff >= _META
                    or not S.INODE_DIR <= etype <= S.INODE_SOCKET
                    or consumed > total
                ):
                    raise FormatError(f"squashfs: bad directory entry at listing offset {consumed}")
                end = off + esize + nsize
                if end <= len(buf):
                    name = buf[off + esize : end]
                    off = end
                else:
                    cur.off = off + esize
                    name = cur.take(nsize)
                    buf = cur.buf
                    off = cur.off
                if b"/" in name or b"\0" in name or (nsize <= 2 and name in (b".", b"..")):
                    raise FormatError(f"squashfs: invalid name {name!r} in directory listing")
                yield name, start | ioff, etype, base + diff

    def _child(self, ref: int, etype: int, number: int) -> Inode:
        node = self.inode(ref)
        if S.BASIC_TYPE[node._type] != etype or node.number != number:
            raise FormatError(f"squashfs: directory entry does not match inode {ref:#x}")
        return node

    def _dir_index(self, d: Inode) -> tuple[list[bytes], list[tuple[int, int]]]:
        """An extended directory's index: first names, and (listing offset, block) of each."""
        index = self._indexes.get(d.ref)
        if index is None:
            cur = _Cursor(self, self._inode_end, d._tail_pos, d._tail_offset)
            names: list[bytes] = []
            marks: list[tuple[int, int]] = []
            listing = d.size - 3
            dtable = self._dir_end - self._dir_start
            for _ in range(d._index_count):
                buf = cur.need(S.DIR_INDEX.size)
                pos, start, nsize = S.DIR_INDEX.unpack(buf, cur.off, "directory index", d.ref)
                cur.off += S.DIR_INDEX.size
                nsize += 1
                if (
                    nsize > S.MAX_NAME
                    or pos >= listing
                    or start >= dtable
                    or (marks and pos <= marks[-1][0])
                ):
                    raise FormatError(f"squashfs: bad directory index in inode {d.ref:#x}")
                name = cur.take(nsize)
                if names and name < names[-1]:
                    raise FormatError(f"squashfs: unsorted directory index in inode {d.ref:#x}")
                names.append(name)
                marks.append((pos, start))
            index = (names, marks)
            self._indexes.put(d.ref, index)
        return index

    def _find(self, d: Inode, name: bytes) -> Inode | None:
        """Entry ``name`` of directory ``d``, or None."""
        if d.size <= _SMALL_LISTING and self._listings.maxsize:
            listing = self._listings.get(d.ref)
            if listing is None and not d._index_count:
                # No index to seek with: one scan of the whole (small) listing
                # answers this and every later lookup in the directory. (With an
                # index, a complete iterdir fills the dict instead.)
                listing = {
                    entry: (ref, etype, number)
                    for entry, ref, etype, number in self._scan(
                        d._start_block, d._start_offset, 0, d.size - 3
                    )
                }
                self._listings.put(d.ref, listing)
            if listing is not None:
                hit = listing.get(name)
                return None if hit is None else self._child(*hit)
        block, offset, consumed = d._start_block, d._start_offset, 0
        if d._index_count:
            names, marks = self._dir_index(d)
            # Entries are sorted (strcmp): start at the last indexed header whose
            # first name is <= name. Index offsets assume 8 KiB metadata blocks.
            i = bisect_right(names, name) - 1
            if i >= 0:
                consumed, block = marks[i]
                offset = (d._start_offset + consumed) % _META
        for entry, ref, etype, number in self._scan(block, offset, consumed, d.size - 3):
            if entry == name:
                return self._child(ref, etype, number)
            if entry > name:
                return None
        return None

    def iterdir(self, dir_inode: Inode) -> Iterator[tuple[str, Inode]]:
        """The directory's entries in stored (bytewise sorted) order, without "." and ".."."""
        if dir_inode.kind != "dir":
            raise NotADirError(f"<inode {dir_inode.number}>")
        return self._iterdir(dir_inode)

    def _iterdir(self, d: Inode) -> Iterator[tuple[str, Inode]]:
        child = self._child
        # A complete pass over a small directory also fills its lookup dict.
        listing: dict[bytes, tuple[int, int, int]] | None = (
            {} if d.size <= _SMALL_LISTING and self._listings.get(d.ref) is None else None
        )
        for name, ref, etype, number in self._scan(d._start_block, d._start_offset, 0, d.size - 3):
            if listing is not None:
                listing[name] = (ref, etype, number)
            yield name.decode("utf-8", "surrogateescape"), child(ref, etype, number)
        if listing is not None:
            self._listings.put(d.ref, listing)

    def lookup_child(self, dir_inode: Inode, name: str) -> Inode:
        """Entry ``name`` of a directory, found through its directory index."""
        if dir_inode.kind != "dir":
            raise NotADirError(f"<inode {dir_inode.number}>")
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise NotFoundError(name) from None
        node = self._find(dir_inode, raw)
        if node is None:
            raise NotFoundError(name)
        return node

    def lookup(self, path: str) -> Inode:
        """The inode at ``path`` ("/a/b" or "a/b"); the last component is not followed
        if it is a symlink, and every earlier one must be a directory."""
        node = self._paths.get(path)
        if node is not None:
            return node
        parent_path, _, name = path.rpartition("/")
        parent = self._paths.get(parent_path or "/") if name not in ("", ".", "..") else None
        if parent is not None:
            # The kernel looks a path up component by component, so the parent
            # is usually cached already.
            if parent.kind != "dir":
                raise NotADirError(path)
            try:
                found = self._find(parent, name.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                found = None
            if found is None:
                raise NotFoundError(path)
            node = found
        else:
            node = self._resolve(path)
        self._paths.put(path, node)
        return node

    def _resolve(self, path: str) -> Inode:
        node = self.root
        parents: list[Inode] = []
        for part in path.split("/"):
            if not part:
                continue
            if node.kind != "dir":
                raise NotADirError(path)
            if part == ".":
                continue
            if part == "..":
                node = parents.pop() if parents else node
                continue
            try:
                found = self._find(node, part.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                found = None
            if found is None:
                raise NotFoundError(path)
            parents.append(node)
            node = found
        return node

    def walk(self) -> Iterator[tuple[str, Inode]]:
        """Every entry depth-first, parents before children: ("/", root), ("/a", ...), ..."""
        root = self.root
        yield "/", root
        # A directory can be reached only once in a valid image (no directory
        # hard links): seeing an inode or a listing twice means a loop.
        seen_refs = {root.ref}
        seen_listings = {(root._start_block, root._start_offset)}
        stack: list[tuple[str, Iterator[tuple[str, Inode]]]] = [("", self._iterdir(root))]
        while stack:
            prefix, entries = stack[-1]
            for name, node in entries:
                path = f"{prefix}/{name}"
                yield path, node
                if node.kind == "dir":
                    listing = (node._start_block, node._start_offset)
                    if node.ref in seen_refs or (node.size > 3 and listing in seen_listings):
                        raise FormatError(f"squashfs: directory loop at {path!r}")
                    seen_refs.add(node.ref)
                    if node.size > 3:
                        seen_listings.add(listing)
                    stack.append((path, self._iterdir(node)))
                    break
            else:
                stack.pop()

    # --- file data -----------------------------------------------------------------

    def read(self, inode: Inode, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of a regular file from ``offset`` (short at EOF)."""
        if inode.kind != "file":
            if inode.kind == "dir":
                raise IsADirError(f"<inode {inode.number}>")
            raise PathError(errno.EINVAL, f"<inode {inode.number}>", "not a regular file")
        if offset < 0 or length < 0:
            raise PathError(errno.EINVAL, f"<inode {inode.number}>", "negative offset or length")
        size = inode.size
        end = min(offset + length, size)
        if offset >= end:
            return b""
        log = self._block_log
        nblocks = inode._nblocks
        first = offset >> log
        last = (end - 1) >> log
        pieces: list[bytes] = []
        if first < nblocks:
            top = min(last, nblocks - 1)
            # The blocks are contiguous on disk: fetch them with one read. Only
            # the chunks of the block list that cover [first, top] are loaded.
            chunk = first // _CHUNK_BLOCKS
            words, starts = self._block_chunk(inode, chunk)
            base = chunk * _CHUNK_BLOCKS
            lo = starts[first - base]
            top_chunk = top // _CHUNK_BLOCKS
            top_starts = starts if top_chunk == chunk else self._block_chunk(inode, top_chunk)[1]
            hi = top_starts[top - top_chunk * _CHUNK_BLOCKS + 1]
            raw = self._source.read(inode._blocks_start + lo, hi - lo) if hi > lo else b""
            view = memoryview(raw)
            full = inode._fragment != _NO_FRAGMENT
            bs = self._block_size
            decompress = self._decompress
            for i in range(first, top + 1):
                if i - base >= _CHUNK_BLOCKS:
                    chunk += 1
                    base = chunk * _CHUNK_BLOCKS
                    words, starts = self._block_chunk(inode, chunk)
                # Every block is full except a last one not followed by a fragment.
                expect = bs if full or i + 1 < nblocks else size - (i << log)
                b0 = offset - (i << log) if i == first else 0
                b1 = end - (i << log) if i == last else expect
                word = words[i - base]
                n = word & S.DATA_SIZE_MASK
                if n == 0:  # sparse block: only the zeros the caller asked for
                    pieces.append(bytes(b1 - b0))
                    continue
                a = starts[i - base] - lo
                if word & S.DATA_UNCOMPRESSED:
                    block = raw[a : a + n]
                else:
                    block = decompress(view[a : a + n], expect)
                if len(block) != expect:
                    raise FormatError(
                        f"squashfs: block {i} of inode {inode.ref:#x} has "
                        f"{len(block)} bytes, expected {expect}"
                    )
                pieces.append(block if b0 == 0 and b1 == expect else block[b0:b1])
        if last >= nblocks:
            frag = self._fragment_block(inode._fragment)
            tail_start = nblocks << log
            base = inode._fragment_offset
            if base + size - tail_start > len(frag):
                raise FormatError(f"squashfs: inode {inode.ref:#x} tail runs past its fragment")
            a = max(offset, tail_start) - tail_start
            pieces.append(frag[base + a : base + end - tail_start])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _fragment_block(self, index: int) -> bytes:
        block = self._frags.get(index)
        if block is not None:
            return block
        sb = self.superblock
        ptrs = self._fragment_index
        if ptrs is None:
            count = -(-self._fragment_count // S.FRAGMENTS_PER_BLOCK)
            ptrs = self._fragment_index = self._table_index(
                sb.fragment_table_start, count, "fragment table"
            )
        data, _ = self._metablock(ptrs[index // S.FRAGMENTS_PER_BLOCK], sb.fragment_table_start)
        start, word, _pad = S.FRAGMENT_ENTRY.unpack(
            data, (index % S.FRAGMENTS_PER_BLOCK) * S.FRAGMENT_ENTRY.size, "fragment table", index
        )
        n = word & S.DATA_SIZE_MASK
        if not 0 < n <= self._block_size or start + n > self._bytes_used:
            raise FormatError(f"squashfs: fragment {index} is invalid")
        raw = self._source.read(start, n)
        block = raw if word & S.DATA_UNCOMPRESSED else self._decompress(raw, self._block_size)
        self._frags.put(index, block)
        return block

    # --- symlinks and xattrs -----------------------------------------------------------

    def readlink(self, inode: Inode) -> str:
        if inode.kind != "symlink":
            raise PathError(errno.EINVAL, f"<inode {inode.number}>", "not a symbolic link")
        return inode._target.decode("utf-8", "surrogateescape")

    def xattrs(self, inode: Inode) -> dict[str, bytes]:
        """Extended attributes of an inode ({} if it has none)."""
        idx = inode._xattr
        sb = self.superblock
        if idx == S.INVALID_U32 or sb.xattr_id_table_start == S.INVALID_U64:
            return {}
        table = self._xattr_table
        if table is None:
            start = sb.xattr_id_table_start
            head = self._source.read(start, S.XATTR_ID_TABLE.size)
            kv_start, count, _ = S.XATTR_ID_TABLE.unpack(head, 0, "xattr id table", start)
            if not S.SUPERBLOCK_SIZE <= kv_start < start:
                raise FormatError("squashfs: xattr table start is outside the image")
            ptrs = self._table_index(
                start + S.XATTR_ID_TABLE.size,
                -(-count // S.XATTR_IDS_PER_BLOCK),
                "xattr id table",
            )
            table = self._xattr_table = (kv_start, count, ptrs)
        kv_start, count, ptrs = table
        if idx >= count:
            raise FormatError(f"squashfs: inode {inode.ref:#x} has an invalid xattr index")
        data, _ = self._metablock(ptrs[idx // S.XATTR_IDS_PER_BLOCK], sb.xattr_id_table_start)
        # ``size`` is not checked: mksquashfs counts the prefixed names and real
        # value sizes, squashfs-tools-ng the on-disk bytes.
        ref, pairs, _size = S.XATTR_ID.unpack(
            data, (idx % S.XATTR_IDS_PER_BLOCK) * S.XATTR_ID.size, "xattr id table", idx
        )
        kv_end = sb.xattr_id_table_start
        cur = _Cursor(self, kv_end, kv_start + (ref >> 16), ref & 0xFFFF)
        if pairs > _MAX_XATTRS:
            raise FormatError(f"squashfs: xattr list {idx} has {pairs} entries")
        out: dict[str, bytes] = {}
        # What one call materialises is budgeted by real size: names as
        # listxattr returns them, values with every out-of-line reference counted
        # at its value's size (many keys may share one 64 KiB value). Values met
        # again are shared, not read again.
        names = values = 0
        shared: dict[int, bytes] = {}
        for _ in range(pairs):
            buf = cur.need(S.XATTR_ENTRY.size)
            ktype, ksize = S.XATTR_ENTRY.unpack(buf, cur.off, "xattr table", idx)
            cur.off += S.XATTR_ENTRY.size
            prefix = S.XATTR_PREFIXES.get(ktype & 0xFF)
            if prefix is None:
                raise FormatError(f"squashfs: unknown xattr namespace {ktype & 0xFF}")
            names += len(prefix) + ksize + 1
            if names > _MAX_XATTR_NAMES:
                raise PathError(
                    errno.E2BIG, f"<inode {inode.number}>", f"xattr names of list {idx} too long"
                )
            key = cur.take(ksize)
            buf = cur.need(S.XATTR_VALUE.size)
            (vsize,) = S.XATTR_VALUE.unpack(buf, cur.off, "xattr table", idx)
            cur.off += S.XATTR_VALUE.size
            if vsize > _MAX_XATTR_VALUE:
                raise FormatError(f"squashfs: xattr value in list {idx} is too large")
            value = cur.take(vsize)
            if ktype & S.XATTR_VALUE_OOL:
                # The value lives elsewhere: this one is a u64 reference to it.
                if vsize != 8:
                    raise FormatError(f"squashfs: bad out-of-line xattr in list {idx}")
                (vref,) = S.XATTR_VALUE_REF.unpack(value, 0, "xattr table", idx)
                hit = shared.get(vref)
                if hit is None:
                    far = _Cursor(self, kv_end, kv_start + (vref >> 16), vref & 0xFFFF)
                    buf = far.need(S.XATTR_VALUE.size)
                    (vsize,) = S.XATTR_VALUE.unpack(buf, far.off, "xattr table", idx)
                    far.off += S.XATTR_VALUE.size
                    if vsize > _MAX_XATTR_VALUE:
                        raise FormatError(f"squashfs: xattr value in list {idx} is too large")
                    if values + vsize > _MAX_XATTR_BYTES:
                        raise FormatError(f"squashfs: xattr values of list {idx} are too large")
                    hit = shared[vref] = far.take(vsize)
                value = hit
            values += len(value)
            if values > _MAX_XATTR_BYTES:
                raise FormatError(f"squashfs: xattr values of list {idx} are too large")
            out[prefix + key.decode("utf-8", "surrogateescape")] = value
        return out
