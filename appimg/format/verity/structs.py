"""On-disk layout of the dm-verity superblock (spec/format.md §Verity partition).

The verity partition starts with the superblock ``veritysetup format`` writes
(cryptsetup ``lib/verity/verity.c``, ``struct verity_sb``): 512 bytes,
little-endian, zero-padded to one hash block. Field names follow cryptsetup.
This module declares the byte layout for building and for tooling; opening an
image reads it with the ``struct`` twin in :mod:`.superblock`, which holds the
constants. Parsing and building go through :mod:`appimg.format.binary`, which
turns the parser's errors into :class:`~appimg.errors.FormatError`.
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
from appimg.format.verity.superblock import (
    VERITY_ALGORITHM_SIZE,
    VERITY_HASH_TYPE,
    VERITY_MAX_SALT_SIZE,
    VERITY_SB_VERSION,
    VERITY_SIGNATURE,
)

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
