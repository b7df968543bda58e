"""SquashFS 4.0 records as precompiled ``struct.Struct`` s: what the reader parses
(spec/format.md §Payload).

The constants of the format and one :class:`Record` per fixed-size, integer-only
structure (superblock, metadata block header, inode parts, directory headers
and entries, table entries, xattr records), little-endian, field names as in
libsquashfs. :mod:`.structs` declares the same structures as ``construct``
definitions for tooling and tests (which check that both agree); the reader
uses these records alone, so opening a payload (``appimg run`` checks its
program) does not import construct. A short buffer is a FormatError naming
the table and offset (:func:`appimg.format.binary.unpacker`).
"""

from __future__ import annotations

import struct as _struct
import sys
from array import array
from collections import namedtuple
from typing import Any

from appimg.errors import FormatError
from appimg.format import binary

SQUASHFS_MAGIC = 0x73717368  # "hsqs"
SUPERBLOCK_SIZE = 96
#: Uncompressed size of every metadata block but the last of a table.
METADATA_SIZE = 8192
#: Metadata block header: bit 15 set = stored uncompressed; low 15 bits = on-disk size.
METADATA_UNCOMPRESSED = 0x8000
METADATA_SIZE_MASK = 0x7FFF
#: Data block / fragment size word: bit 24 set = stored uncompressed; size 0 = sparse block.
DATA_UNCOMPRESSED = 1 << 24
DATA_SIZE_MASK = ~DATA_UNCOMPRESSED & 0xFFFFFFFF
#: "No such table" (xattr, export, fragment table start) and "no xattrs" / "no fragment".
INVALID_U64 = 0xFFFFFFFFFFFFFFFF
INVALID_U32 = 0xFFFFFFFF
#: Entries per metadata block in the fragment, id and xattr-id tables.
FRAGMENTS_PER_BLOCK = METADATA_SIZE // 16
IDS_PER_BLOCK = METADATA_SIZE // 4
XATTR_IDS_PER_BLOCK = METADATA_SIZE // 16
#: Longest name in a directory entry / directory index.
MAX_NAME = 256
#: Most entries one directory header may cover.
MAX_DIR_ENTRIES = 256
#: Largest directory listing a reader accepts (the bytes its inode's size counts, less
#: the 3 for "." and ".."): ~300,000 entries of 20-byte names. The format allows 4 GiB,
#: which metadata compression packs into a small image: a mount holds a listing whole.
MAX_DIR_LISTING = 8 * 1024 * 1024
#: What a directory header and an entry take in a listing, the name aside.
DIR_HEADER_BYTES = 12
DIR_ENTRY_BYTES = 8

# Superblock ``flags``.
FLAG_UNCOMPRESSED_INODES = 0x0001
FLAG_UNCOMPRESSED_DATA = 0x0002
FLAG_UNCOMPRESSED_FRAGMENTS = 0x0008
FLAG_NO_FRAGMENTS = 0x0010
FLAG_ALWAYS_FRAGMENTS = 0x0020
FLAG_DUPLICATES = 0x0040
FLAG_EXPORTABLE = 0x0080
FLAG_UNCOMPRESSED_XATTRS = 0x0100
FLAG_NO_XATTRS = 0x0200
FLAG_COMPRESSOR_OPTIONS = 0x0400
FLAG_UNCOMPRESSED_IDS = 0x0800

# Inode ``type``; extended types are basic + 7. Directory entries use basic types.
INODE_DIR = 1
INODE_FILE = 2
INODE_SYMLINK = 3
INODE_BLOCK = 4
INODE_CHAR = 5
INODE_FIFO = 6
INODE_SOCKET = 7
INODE_EXT_DIR = 8
INODE_EXT_FILE = 9
INODE_EXT_SYMLINK = 10
INODE_EXT_BLOCK = 11
INODE_EXT_CHAR = 12
INODE_EXT_FIFO = 13
INODE_EXT_SOCKET = 14

# Xattr key ``type``: namespace in the low byte, flag for an out-of-line value.
XATTR_PREFIXES = {0: "user.", 1: "trusted.", 2: "security."}
XATTR_VALUE_OOL = 0x0100


class Record:
    """A fixed-size, integer-only record: ``struct`` format codes and field names.

    ``unpack`` returns a plain tuple in field order (see ``fields``); ``read``
    the same as a named tuple (cold paths: the superblock).
    """

    __slots__ = ("_named", "fields", "format", "name", "size", "unpack", "unpack_from")

    def __init__(self, name: str, codes: str, fields: str) -> None:
        self.name = name
        self.fields: tuple[str, ...] = tuple(fields.split())
        if len(codes) != len(self.fields):
            raise TypeError(f"{name}: {len(codes)} codes for {len(self.fields)} fields")
        #: The ``struct`` format, little-endian, no padding.
        self.format = "<" + codes
        unpacker = _struct.Struct(self.format)
        self.size: int = unpacker.size
        #: The raw ``struct`` unpacker, for hot loops that have checked that ``size``
        #: bytes are available (so it cannot fail); everything else uses ``unpack``.
        self.unpack_from = unpacker.unpack_from
        #: ``unpack(buf, offset, table, where)``: the fields of the record at
        #: ``buf[offset:]``; a short buffer is a FormatError naming ``table`` and
        #: ``where``. A closure from :func:`binary.unpacker`, as cheap as a method.
        self.unpack: binary.Unpack = binary.unpacker(unpacker, name, "squashfs ")
        self._named: Any = None

    def read(self, data: bytes, table: str, where: int) -> Any:
        """The record at the start of ``data`` as a named tuple of its fields."""
        if self._named is None:
            self._named = namedtuple("_" + self.name.replace(" ", "_"), self.fields)
        return self._named(*self.unpack(data, 0, table, where))


SUPERBLOCK = Record(
    "superblock",
    "LLLLLHHHHHHQQQQQQQQ",
    "magic inode_count mkfs_time block_size fragment_entry_count compression_id block_log "
    "flags id_count version_major version_minor root_inode_ref bytes_used id_table_start "
    "xattr_id_table_start inode_table_start directory_table_start fragment_table_start "
    "export_table_start",
)
METADATA_HEADER = Record("metadata block header", "H", "header")
INODE_HEADER = Record("inode header", "HHHHLL", "type mode uid_idx gid_idx mod_time inode_number")
INODE_DIR_FIXED = Record("directory inode", "LLHHL", "start_block nlink size offset parent_inode")
INODE_DIR_EXT_FIXED = Record(
    "extended directory inode",
    "LLLLHHL",
    "nlink size start_block parent_inode inode_count offset xattr_idx",
)
INODE_FILE_FIXED = Record(
    "file inode", "LLLL", "blocks_start fragment_index fragment_offset file_size"
)
INODE_FILE_EXT_FIXED = Record(
    "extended file inode",
    "QQQLLLL",
    "blocks_start file_size sparse nlink fragment_index fragment_offset xattr_idx",
)
INODE_SLINK_FIXED = Record("symlink inode", "LL", "nlink target_size")
INODE_DEV_FIXED = Record("device inode", "LL", "nlink devno")
INODE_DEV_EXT_FIXED = Record("extended device inode", "LLL", "nlink devno xattr_idx")
INODE_IPC_FIXED = Record("ipc inode", "L", "nlink")
INODE_IPC_EXT_FIXED = Record("extended ipc inode", "LL", "nlink xattr_idx")
XATTR_IDX = Record("symlink xattr index", "L", "xattr_idx")
DIR_INDEX = Record("directory index", "LLL", "index start_block size")
DIR_HEADER = Record("directory header", "LLL", "count start_block inode_number")
DIR_ENTRY = Record("directory entry", "HhHH", "offset inode_diff type size")
FRAGMENT_ENTRY = Record("fragment entry", "QLL", "start_offset size pad0")
TABLE_POINTER = Record("table pointer", "Q", "start")
BLOCK_SIZE_WORD = Record("block size", "L", "size")
ID_ENTRY = Record("id", "L", "id")
XATTR_ID_TABLE = Record("xattr id table", "QLL", "xattr_table_start xattr_ids unused")
XATTR_ID = Record("xattr id", "QLL", "xattr count size")
XATTR_ENTRY = Record("xattr key", "HH", "type size")
XATTR_VALUE = Record("xattr value", "L", "size")
XATTR_VALUE_REF = Record("xattr value reference", "Q", "ref")

#: inode ``type`` -> its fixed part after the common header.
INODE_FIXED: dict[int, Record] = {
    INODE_DIR: INODE_DIR_FIXED,
    INODE_FILE: INODE_FILE_FIXED,
    INODE_SYMLINK: INODE_SLINK_FIXED,
    INODE_BLOCK: INODE_DEV_FIXED,
    INODE_CHAR: INODE_DEV_FIXED,
    INODE_FIFO: INODE_IPC_FIXED,
    INODE_SOCKET: INODE_IPC_FIXED,
    INODE_EXT_DIR: INODE_DIR_EXT_FIXED,
    INODE_EXT_FILE: INODE_FILE_EXT_FIXED,
    INODE_EXT_SYMLINK: INODE_SLINK_FIXED,
    INODE_EXT_BLOCK: INODE_DEV_EXT_FIXED,
    INODE_EXT_CHAR: INODE_DEV_EXT_FIXED,
    INODE_EXT_FIFO: INODE_IPC_EXT_FIXED,
    INODE_EXT_SOCKET: INODE_IPC_EXT_FIXED,
}
#: inode ``type`` -> its basic type (the one directory entries use).
BASIC_TYPE: dict[int, int] = {t: t if t <= INODE_SOCKET else t - 7 for t in INODE_FIXED}
#: Largest common header + fixed part (the extended file inode).
INODE_MAX_FIXED = INODE_HEADER.size + max(record.size for record in INODE_FIXED.values())


# --- Arrays ------------------------------------------------------------------

_BIG_ENDIAN = sys.byteorder == "big"


def _array(code: str, data: bytes) -> array:
    out = array(code)
    out.frombytes(data)
    if _BIG_ENDIAN:
        out.byteswap()
    return out


def u32_array(data: bytes, table: str, where: int) -> array:
    """A packed array of little-endian u32 (block size lists, id table blocks)."""
    if len(data) % 4:
        raise FormatError(f"squashfs {table}: truncated u32 array at {where}")
    return _array("I" if array("I").itemsize == 4 else "L", data)


def u64_array(data: bytes, table: str, where: int) -> array:
    """A packed array of little-endian u64 (table indexes)."""
    if len(data) % 8:
        raise FormatError(f"squashfs {table}: truncated u64 array at {where}")
    return _array("Q", data)
