"""On-disk structures of SquashFS 4.0 as written by squashfs-tools / squashfs-tools-ng.

One ``construct`` definition per section of the format (superblock, metadata
block header, inode table, directory table, fragment table, id table, xattr
tables); all little-endian. Field names follow libsquashfs
(``squashfs-tools-ng/include/sqfs/*.h``), except the superblock time, which
keeps the kernel's name ``mkfs_time``.

Every parse goes through :mod:`appimg.format.binary`, the one place a parser
error becomes :class:`~appimg.errors.FormatError` naming the table and offset:
:meth:`Record.parse` for construct parses and :meth:`Record.unpack` for the hot
fixed-size records. A :class:`Record` here keeps the construct definition and
derives a ``struct.Struct`` from it. The reader does not use this module: it
uses the ``struct`` twins in :mod:`.records` (which also hold the constants,
re-exported here), because a construct parse costs ~25x more than
``unpack_from`` and importing construct costs ~15 ms of every ``appimg run``;
tests check that each twin matches its definition here.
"""

from __future__ import annotations

import struct as _struct

import construct as cs

from appimg.format import binary

# The format's constants live with the ``struct`` records the reader uses.
from appimg.format.squashfs.records import *  # noqa: F403


class Record:
    """A fixed-size, integer-only struct: its construct definition plus a derived ``struct.Struct``.

    ``unpack`` returns a plain tuple in field order (see ``fields``); ``parse``
    returns a construct Container (cold paths, tests); ``build`` is the inverse.
    """

    __slots__ = ("_compiled", "definition", "fields", "name", "size", "unpack", "unpack_from")

    def __init__(self, name: str, definition: cs.Struct) -> None:
        fmt = "<"
        for sub in definition.subcons:
            field = sub.subcon if isinstance(sub, cs.Renamed) else sub
            if not isinstance(field, cs.FormatField):
                raise TypeError(f"{name}.{sub.name} is not a fixed-size integer")
            fmt += field.fmtstr.lstrip("<>=")
        self.name = name
        self.definition = definition
        self._compiled: cs.Construct | None = None
        self.fields: tuple[str, ...] = tuple(sub.name for sub in definition.subcons)
        unpacker = _struct.Struct(fmt)
        if unpacker.size != definition.sizeof():
            raise TypeError(f"{name}: struct and construct sizes differ")
        self.size: int = unpacker.size
        #: The raw ``struct`` unpacker, for hot loops that have checked that ``size``
        #: bytes are available (so it cannot fail); everything else uses ``unpack``.
        self.unpack_from = unpacker.unpack_from
        #: ``unpack(buf, offset, table, where)``: the fields of the record at
        #: ``buf[offset:]``; a short buffer is a FormatError naming ``table`` and
        #: ``where``. A closure from :func:`binary.unpacker`, as cheap as a method.
        self.unpack: binary.Unpack = binary.unpacker(unpacker, name, "squashfs ")

    @property
    def compiled(self) -> cs.Construct:
        # Compiled on first use: compiling every record at import costs ~20 ms of
        # start-up, and the hot paths use ``unpack_from`` anyway. Safe to compile
        # because a Record holds integers only: construct 2.10's compiled ``Bytes``
        # does not check that the data is long enough.
        if self._compiled is None:
            self._compiled = self.definition.compile()
        return self._compiled

    def parse(self, data: bytes, table: str, where: int) -> cs.Container:
        what = self.name if table == self.name else f"{table} {self.name}"
        return binary.parse(self.compiled, data, f"squashfs {what}", where)

    def build(self, **fields: int) -> bytes:
        return binary.build(self.definition, fields, f"squashfs {self.name}")


# --- Superblock (offset 0) -------------------------------------------------

superblock = cs.Struct(
    "magic" / cs.Int32ul,
    "inode_count" / cs.Int32ul,
    "mkfs_time" / cs.Int32ul,
    "block_size" / cs.Int32ul,
    "fragment_entry_count" / cs.Int32ul,
    "compression_id" / cs.Int16ul,
    "block_log" / cs.Int16ul,
    "flags" / cs.Int16ul,
    "id_count" / cs.Int16ul,
    "version_major" / cs.Int16ul,
    "version_minor" / cs.Int16ul,
    "root_inode_ref" / cs.Int64ul,
    "bytes_used" / cs.Int64ul,
    "id_table_start" / cs.Int64ul,
    "xattr_id_table_start" / cs.Int64ul,
    "inode_table_start" / cs.Int64ul,
    "directory_table_start" / cs.Int64ul,
    "fragment_table_start" / cs.Int64ul,
    "export_table_start" / cs.Int64ul,
)
"""The 96-byte superblock at offset 0; table starts are absolute image offsets."""
SUPERBLOCK = Record("superblock", superblock)

# --- Metadata blocks ---------------------------------------------------------

metadata_header = cs.Struct("header" / cs.Int16ul)
"""Header before each metadata block (inode, directory, fragment, id, xattr, export
tables): on-disk size in bits 0-14, bit 15 set if stored uncompressed. The block
holds at most 8 KiB once decompressed; a table is a chain of such blocks."""
METADATA_HEADER = Record("metadata block header", metadata_header)

# --- Inode table -------------------------------------------------------------
# An inode reference is (metadata block offset from inode_table_start) << 16 | offset
# inside the decompressed block. Each inode is the common header, a fixed part
# per type, and a variable tail (block list, symlink target, directory index).

inode_header = cs.Struct(
    "type" / cs.Int16ul,
    "mode" / cs.Int16ul,  # permission bits only; the file type comes from ``type``
    "uid_idx" / cs.Int16ul,  # index into the id table
    "gid_idx" / cs.Int16ul,
    "mod_time" / cs.Int32ul,
    "inode_number" / cs.Int32ul,
)
"""Common header of every inode."""
INODE_HEADER = Record("inode header", inode_header)

inode_dir = cs.Struct(
    "start_block" / cs.Int32ul,  # listing's metadata block, from directory_table_start
    "nlink" / cs.Int32ul,
    "size" / cs.Int16ul,  # listing size + 3 (the implicit "." and "..")
    "offset" / cs.Int16ul,  # listing's offset inside that block
    "parent_inode" / cs.Int32ul,
)
"""Basic directory (type 1)."""
INODE_DIR_FIXED = Record("directory inode", inode_dir)

inode_dir_ext = cs.Struct(
    "nlink" / cs.Int32ul,
    "size" / cs.Int32ul,
    "start_block" / cs.Int32ul,
    "parent_inode" / cs.Int32ul,
    "inode_count" / cs.Int16ul,  # number of directory index entries that follow
    "offset" / cs.Int16ul,
    "xattr_idx" / cs.Int32ul,
)
"""Extended directory (type 8), followed by ``inode_count`` directory index entries."""
INODE_DIR_EXT_FIXED = Record("extended directory inode", inode_dir_ext)

inode_file = cs.Struct(
    "blocks_start" / cs.Int32ul,  # absolute offset of the first data block
    "fragment_index" / cs.Int32ul,  # 0xFFFFFFFF: no fragment (tail in a data block)
    "fragment_offset" / cs.Int32ul,  # tail's offset inside the decompressed fragment block
    "file_size" / cs.Int32ul,
)
"""Basic regular file (type 2), followed by one u32 size word per data block."""
INODE_FILE_FIXED = Record("file inode", inode_file)

inode_file_ext = cs.Struct(
    "blocks_start" / cs.Int64ul,
    "file_size" / cs.Int64ul,
    "sparse" / cs.Int64ul,  # bytes saved by sparse blocks (informational)
    "nlink" / cs.Int32ul,
    "fragment_index" / cs.Int32ul,
    "fragment_offset" / cs.Int32ul,
    "xattr_idx" / cs.Int32ul,
)
"""Extended regular file (type 9), followed by the block size list."""
INODE_FILE_EXT_FIXED = Record("extended file inode", inode_file_ext)

inode_slink = cs.Struct(
    "nlink" / cs.Int32ul,
    "target_size" / cs.Int32ul,
)
"""Symbolic link (types 3 and 10), followed by ``target_size`` bytes of target (no NUL);
the extended type then has a u32 ``xattr_idx`` (:data:`XATTR_IDX`)."""
INODE_SLINK_FIXED = Record("symlink inode", inode_slink)

inode_dev = cs.Struct(
    "nlink" / cs.Int32ul,
    "devno" / cs.Int32ul,  # old 32-bit dev_t: minor bits 0-7 and 20-31, major bits 8-19
)
"""Block or character device (types 4, 5)."""
INODE_DEV_FIXED = Record("device inode", inode_dev)

inode_dev_ext = cs.Struct(
    "nlink" / cs.Int32ul,
    "devno" / cs.Int32ul,
    "xattr_idx" / cs.Int32ul,
)
"""Extended block or character device (types 11, 12)."""
INODE_DEV_EXT_FIXED = Record("extended device inode", inode_dev_ext)

inode_ipc = cs.Struct("nlink" / cs.Int32ul)
"""FIFO or socket (types 6, 7)."""
INODE_IPC_FIXED = Record("ipc inode", inode_ipc)

inode_ipc_ext = cs.Struct("nlink" / cs.Int32ul, "xattr_idx" / cs.Int32ul)
"""Extended FIFO or socket (types 13, 14)."""
INODE_IPC_EXT_FIXED = Record("extended ipc inode", inode_ipc_ext)

xattr_idx = cs.Struct("xattr_idx" / cs.Int32ul)
"""The xattr index after an extended symlink's target."""
XATTR_IDX = Record("symlink xattr index", xattr_idx)

dir_index = cs.Struct(
    "index" / cs.Int32ul,  # byte offset of a directory header inside the listing
    "start_block" / cs.Int32ul,  # metadata block holding it, from directory_table_start
    "size" / cs.Int32ul,  # name length - 1
)
"""Directory index entry (after an extended directory inode): one per metadata block
the listing crosses, naming the first entry of the header that starts there."""
DIR_INDEX = Record("directory index", dir_index)
dir_index_named = cs.Struct(*dir_index.subcons, "name" / cs.Bytes(cs.this.size + 1))
"""Directory index entry with its name."""

# --- Directory table ---------------------------------------------------------
# A listing is a run of headers, each followed by up to 256 entries whose inodes
# share one inode-table metadata block.

dir_header = cs.Struct(
    "count" / cs.Int32ul,  # entries that follow - 1
    "start_block" / cs.Int32ul,  # inode metadata block of those entries, from inode_table_start
    "inode_number" / cs.Int32ul,  # base for the entries' ``inode_diff``
)
"""Directory header."""
DIR_HEADER = Record("directory header", dir_header)

dir_entry = cs.Struct(
    "offset" / cs.Int16ul,  # inode's offset inside the header's metadata block
    "inode_diff" / cs.Int16sl,  # inode number - header inode_number
    "type" / cs.Int16ul,  # basic inode type
    "size" / cs.Int16ul,  # name length - 1
)
"""Directory entry (fixed part); the name follows."""
DIR_ENTRY = Record("directory entry", dir_entry)
dir_entry_named = cs.Struct(*dir_entry.subcons, "name" / cs.Bytes(cs.this.size + 1))
"""Directory entry with its name (names are sorted bytewise, strcmp order)."""

# --- Fragment table ----------------------------------------------------------
# fragment_table_start points at an array of u64 absolute offsets of the metadata
# blocks that hold the entries (512 per block). The id, xattr-id and export tables
# use the same two-level layout.

fragment_entry = cs.Struct(
    "start_offset" / cs.Int64ul,  # absolute offset of the fragment block
    "size" / cs.Int32ul,  # on-disk size, bit 24 set if stored uncompressed
    "pad0" / cs.Int32ul,
)
"""Fragment table entry."""
FRAGMENT_ENTRY = Record("fragment entry", fragment_entry)

table_pointer = cs.Struct("start" / cs.Int64ul)
"""One entry of a table index (fragment, id, xattr-id, export tables)."""
TABLE_POINTER = Record("table pointer", table_pointer)

block_size_word = cs.Struct("size" / cs.Int32ul)
"""One entry of a file's block size list (bit 24: uncompressed; 0: sparse block)."""
BLOCK_SIZE_WORD = Record("block size", block_size_word)

id_entry = cs.Struct("id" / cs.Int32ul)
"""One uid/gid in the id table (2048 per metadata block)."""
ID_ENTRY = Record("id", id_entry)

# --- Xattr tables --------------------------------------------------------------

xattr_id_table = cs.Struct(
    "xattr_table_start" / cs.Int64ul,  # absolute offset of the key/value metadata blocks
    "xattr_ids" / cs.Int32ul,
    "unused" / cs.Int32ul,
)
"""Header at ``xattr_id_table_start``, followed by the u64 table index."""
XATTR_ID_TABLE = Record("xattr id table", xattr_id_table)

xattr_id = cs.Struct(
    "xattr" / cs.Int64ul,  # reference (block << 16 | offset) from xattr_table_start
    "count" / cs.Int32ul,  # key/value pairs
    "size" / cs.Int32ul,  # their total size
)
"""Xattr id entry (512 per metadata block); an inode's ``xattr_idx`` indexes these."""
XATTR_ID = Record("xattr id", xattr_id)

xattr_entry = cs.Struct(
    "type" / cs.Int16ul,  # namespace in bits 0-7, bit 8: value is out of line
    "size" / cs.Int16ul,  # key length, without the namespace prefix
)
"""Xattr key header; the key bytes follow, then an :data:`xattr_value`."""
XATTR_ENTRY = Record("xattr key", xattr_entry)

xattr_value = cs.Struct("size" / cs.Int32ul)
"""Xattr value header; the value follows."""
XATTR_VALUE = Record("xattr value", xattr_value)

xattr_value_ref = cs.Struct("ref" / cs.Int64ul)
"""The 8-byte value of a key flagged out-of-line: a reference (block << 16 | offset,
from xattr_table_start) to the xattr value header and value stored earlier."""
XATTR_VALUE_REF = Record("xattr value reference", xattr_value_ref)
