"""Reading the dm-verity superblock with ``struct`` (spec/format.md §Verity partition).

The layout is cryptsetup's ``struct verity_sb`` (``lib/verity/verity.c``), declared
for tooling and tests as a ``construct`` definition in :mod:`.structs`. Opening an
image (to run it, too) parses it once, so this module reads the same 512 bytes
with one precompiled ``struct.Struct`` instead, without importing construct;
tests check that both readings agree. Errors are FormatErrors, as from
:func:`appimg.format.binary.parse`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

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

#: signature, version, hash_type, uuid, algorithm, data_block_size, hash_block_size,
#: data_blocks, salt_size, _pad1, salt, _pad2 (little-endian).
_SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6s256s168s")

#: Size of the superblock proper (before its padding to a hash block).
VERITY_SUPERBLOCK_SIZE = _SUPERBLOCK.size


class Superblock(NamedTuple):
    """The parsed fields, named as in cryptsetup and :data:`.structs.VERITY_SUPERBLOCK`
    (``pad1``, ``pad2``: its ``_pad1``, ``_pad2``)."""

    signature: bytes
    version: int
    hash_type: int
    uuid: bytes
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt_size: int
    pad1: bytes
    salt: bytes
    pad2: bytes


def parse_superblock(data: bytes, offset: int = 0) -> Superblock:
    """Parse the first :data:`VERITY_SUPERBLOCK_SIZE` bytes of ``data`` as a superblock."""
    what = "verity superblock"
    if len(data) < VERITY_SUPERBLOCK_SIZE:
        raise FormatError(
            f"{what} at offset {offset}: truncated ({len(data)} of {VERITY_SUPERBLOCK_SIZE} bytes)"
        )
    fields = list(_SUPERBLOCK.unpack_from(data))
    if fields[0] != VERITY_SIGNATURE:
        raise FormatError(f"{what} at offset {offset}: malformed (signature: expected "
                          f"{VERITY_SIGNATURE!r} but parsed {fields[0]!r})")  # fmt: skip
    try:
        # A NUL-padded ASCII name, as construct's PaddedString reads it.
        fields[4] = fields[4].rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError as exc:
        raise binary.malformed(what, offset, exc) from None
    return Superblock(*fields)


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
    what = "verity superblock"
    try:
        name = algorithm.encode("ascii")
    except UnicodeEncodeError as exc:
        raise FormatError(f"{what}: cannot encode ({exc})") from None
    if len(name) > VERITY_ALGORITHM_SIZE or len(salt) > VERITY_MAX_SALT_SIZE:
        raise FormatError(f"{what}: cannot encode (algorithm name or salt too long)")
    return binary.pack(_SUPERBLOCK, what, VERITY_SIGNATURE, VERITY_SB_VERSION, VERITY_HASH_TYPE,
                       uuid, name, data_block_size, hash_block_size, data_blocks, len(salt),
                       bytes(6), salt, bytes(168))  # fmt: skip
