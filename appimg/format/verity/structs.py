"""On-disk layout of the dm-verity superblock (spec/format.md §Verity partition).

The verity partition starts with the superblock ``veritysetup format`` writes
(cryptsetup ``lib/verity/verity.c``, ``struct verity_sb``): 512 bytes,
little-endian, zero-padded to one hash block. Field names follow cryptsetup.
Only this module knows the byte layout; :mod:`appimg.format.verity.hashtree` builds on it.
Parsing and building go through :mod:`appimg.format.binary`, which turns the
parser's errors into :class:`~appimg.errors.FormatError`.
"""

from __future__ import annotations

from typing import Any

from construct import (
    Bytes,
    Const,
    Container,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Struct,
)

from appimg.errors import FormatError
from appimg.format import binary

#: ``signature`` of every verity superblock.
VERITY_SIGNATURE = b"verity\x00\x00"

#: The superblock ``version`` field cryptsetup writes and reads (the only one defined).
VERITY_SB_VERSION = 1

#: ``hash_type`` 1: the "normal" dm-verity format, digest = H(salt || block).
#: (0 is the Chrome OS format, H(block || salt), which appimg does not use.)
VERITY_HASH_TYPE = 1

#: Largest salt the superblock can hold.
VERITY_MAX_SALT_SIZE = 256

#: Room for the NUL-terminated algorithm name; cryptsetup keeps the last byte NUL.
VERITY_ALGORITHM_SIZE = 32

#: dm-verity superblock, cryptsetup ``struct verity_sb`` (spec/format.md §Verity partition).
#: ``salt`` holds ``salt_size`` meaningful bytes followed by zeros.
VERITY_SUPERBLOCK = Struct(
    "signature" / Const(VERITY_SIGNATURE),
    "version" / Int32ul,
    "hash_type" / Int32ul,
    "uuid" / Bytes(16),
    "algorithm" / PaddedString(VERITY_ALGORITHM_SIZE, "ascii"),
    "data_block_size" / Int32ul,
    "hash_block_size" / Int32ul,
    "data_blocks" / Int64ul,
    "salt_size" / Int16ul,
    "_pad1" / Bytes(6),
    "salt" / Bytes(VERITY_MAX_SALT_SIZE),
    "_pad2" / Bytes(168),
)

#: Size of the superblock proper (before its padding to a hash block).
VERITY_SUPERBLOCK_SIZE = VERITY_SUPERBLOCK.sizeof()


def parse_superblock(data: bytes, offset: int = 0) -> Container:
    """Parse the first :data:`VERITY_SUPERBLOCK_SIZE` bytes of ``data`` as a superblock."""
    if len(data) < VERITY_SUPERBLOCK_SIZE:
        raise FormatError(
            f"verity superblock at offset {offset}: truncated "
            f"({len(data)} of {VERITY_SUPERBLOCK_SIZE} bytes)"
        )
    return binary.parse(
        VERITY_SUPERBLOCK, data[:VERITY_SUPERBLOCK_SIZE], "verity superblock", offset
    )


def build_superblock(
    *,
    uuid: bytes,
    algorithm: str,
    data_block_size: int,
    hash_block_size: int,
    data_blocks: int,
    salt: bytes,
) -> bytes:
    """Return the 512-byte superblock exactly as ``veritysetup format`` writes it."""
    fields: dict[str, Any] = {
        "version": VERITY_SB_VERSION,
        "hash_type": VERITY_HASH_TYPE,
        "uuid": uuid,
        "algorithm": algorithm,
        "data_block_size": data_block_size,
        "hash_block_size": hash_block_size,
        "data_blocks": data_blocks,
        "salt_size": len(salt),
        "_pad1": bytes(6),
        "salt": salt.ljust(VERITY_MAX_SALT_SIZE, b"\x00"),
        "_pad2": bytes(168),
    }
    return binary.build(VERITY_SUPERBLOCK, fields, "verity superblock")
