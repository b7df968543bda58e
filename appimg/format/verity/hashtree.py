"""dm-verity hash trees, byte for byte as ``veritysetup format`` writes them.

Implements spec/format.md §Verity partition: the partition holds a verity
superblock (zero-padded to one hash block) followed by the hash tree, format
version 1 (``hash_type`` 1, digest = H(salt || block)). The kernel could check
the payload with this tree; appimg checks it in user space instead, so the same
image mounts unprivileged through FUSE.

Tree layout (cryptsetup ``lib/verity/verity_hash.c``): level 0 holds the digest
of every data block, level ``i + 1`` the digest of every hash block of level
``i``, until a level fits in one block. On disk the top level comes first and
level 0 last. Digests sit in power-of-two slots, ``hash_block_size / slot``
of them per block, and every unused byte is zero. The root hash is the digest
of the single top block, or of the only data block when there is just one (no
tree at all then).
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Any

from appimg.errors import FormatError, IntegrityError
from appimg.format.guid import Guid
from appimg.format.source import ByteSource
from appimg.format.verity.superblock import (
    VERITY_HASH_TYPE,
    VERITY_MAX_SALT_SIZE,
    VERITY_SB_VERSION,
    VERITY_SUPERBLOCK_SIZE,
    build_superblock,
    parse_superblock,
)
from appimg.values import FrozenFields

#: Hash algorithms accepted in verity parameters, with their digest sizes. hashlib
#: (OpenSSL, several times faster on blocks than CPython's own) is imported where
#: blocks are hashed: a launch that reuses a mount reads the parameters only.
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}

#: Accepted block sizes: powers of two the kernel can use (512 bytes up to 64 KiB pages).
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 65536

#: Bytes read per I/O while streaming the data or a tree level.
_CHUNK = 1 << 20

_HEX = re.compile(r"[0-9a-f]*")

#: ``progress(done_bytes, total_bytes)``.
Progress = Callable[[int, int], None]

_JSON_KEYS = frozenset(
    {
        "root_hash",
        "salt",
        "hash_algorithm",
        "data_block_size",
        "hash_block_size",
        "data_blocks",
        "uuid",
    }
)


def _is_block_size(n: object) -> bool:
    if type(n) is not int:  # bool is an int subclass; JSON true is not a size
        return False
    return MIN_BLOCK_SIZE <= n <= MAX_BLOCK_SIZE and n & (n - 1) == 0


class _Geometry:
    """Where each tree level lives inside the verity partition (positions in hash blocks).

    Follows cryptsetup's ``hash_levels``. Because block sizes are powers of two,
    ``per_block * slot_size == hash_block_size``: a level is just its slots end to end.
    """

    def __init__(self, data_blocks: int, hash_block_size: int, digest_size: int) -> None:
        self.data_blocks = data_blocks
        self.hash_block_size = hash_block_size
        self.digest_size = digest_size

    @cached_property
    def slot_size(self) -> int:
        """Bytes one digest occupies: the digest size rounded up to a power of two."""
        return 1 << (self.digest_size - 1).bit_length()

    @cached_property
    def per_block_bits(self) -> int:
        return (self.hash_block_size // self.digest_size).bit_length() - 1

    @cached_property
    def per_block(self) -> int:
        """Digests per hash block (128 for sha256 in 4 KiB blocks)."""
        return 1 << self.per_block_bits

    @cached_property
    def superblock_blocks(self) -> int:
        """Hash blocks the superblock occupies before the tree starts."""
        return -(-VERITY_SUPERBLOCK_SIZE // self.hash_block_size)

    @cached_property
    def level_blocks(self) -> tuple[int, ...]:
        """Number of blocks of level 0 (digests of data blocks) up to the top level."""
        bits = self.per_block_bits
        levels = 0
        while bits * levels < 64 and (self.data_blocks - 1) >> (bits * levels):
            levels += 1
        return tuple(
            (self.data_blocks + (1 << (bits * (i + 1))) - 1) >> (bits * (i + 1))
            for i in range(levels)
        )

    @property
    def levels(self) -> int:
        return len(self.level_blocks)

    @cached_property
    def level_start(self) -> tuple[int, ...]:
        """First hash block of each level; the top level is stored first."""
        starts = [0] * self.levels
        position = self.superblock_blocks
        for i in reversed(range(self.levels)):
            starts[i] = position
            position += self.level_blocks[i]
        return tuple(starts)

    @cached_property
    def size(self) -> int:
        """Bytes of superblock block plus tree."""
        return (self.superblock_blocks + sum(self.level_blocks)) * self.hash_block_size

    def level_bytes(self, slots: bytes | bytearray, level: int) -> bytes:
        """Pad the concatenated slots of ``level`` with zeros to that level's blocks."""
        return bytes(slots).ljust(self.level_blocks[level] * self.hash_block_size, b"\x00")


def _digests(base: Any, buf: bytes | memoryview, block_size: int, slot_size: int) -> bytes:
    """Digest of every ``block_size`` block of ``buf``, each zero-padded to ``slot_size``.

    ``base`` is a hash object already fed the salt: copying it costs far less than
    re-hashing the salt, and hashlib releases the GIL while hashing a whole block.
    """
    view = memoryview(buf)
    pad = bytes(slot_size - base.digest_size)
    out = []
    for i in range(0, len(view), block_size):
        h = base.copy()
        h.update(view[i : i + block_size])
        out.append(h.digest())
    return pad.join(out) + pad if pad and out else b"".join(out)


class VerityParams(FrozenFields):
    """Everything needed to check a payload against its tree; the signed statement carries it.

    Immutable, compared and hashed by value. A plain class, not a frozen dataclass:
    importing dataclasses costs every launch ~5 ms.
    """

    _FIELDS = (
        "root_hash", "salt", "data_blocks", "uuid", "hash_algorithm", "data_block_size",
        "hash_block_size",
    )  # fmt: skip
    root_hash: bytes
    salt: bytes
    data_blocks: int
    uuid: bytes
    hash_algorithm: str
    data_block_size: int
    hash_block_size: int

    def __init__(
        self,
        root_hash: bytes,
        salt: bytes,
        data_blocks: int,
        uuid: bytes,
        hash_algorithm: str = "sha256",
        data_block_size: int = 4096,
        hash_block_size: int = 4096,
    ) -> None:
        self._set(
            root_hash=root_hash, salt=salt, data_blocks=data_blocks, uuid=uuid,
            hash_algorithm=hash_algorithm, data_block_size=data_block_size,
            hash_block_size=hash_block_size,
        )  # fmt: skip
        self._check()

    def _check(self) -> None:
        # Validate here so that parameters from any source (JSON, a caller) can never
        # describe a tree this module would mis-handle.
        if not isinstance(self.hash_algorithm, str) or self.hash_algorithm not in DIGEST_SIZES:
            raise FormatError(f"verity: unsupported hash algorithm {self.hash_algorithm!r}")
        for name in ("root_hash", "salt", "uuid"):
            if not isinstance(getattr(self, name), bytes):
                raise FormatError(f"verity: {name} must be bytes")
        if len(self.root_hash) != self.digest_size:
            raise FormatError(
                f"verity: root_hash is {len(self.root_hash)} bytes, "
                f"{self.hash_algorithm} needs {self.digest_size}"
            )
        if len(self.salt) > VERITY_MAX_SALT_SIZE:
            raise FormatError(f"verity: salt longer than {VERITY_MAX_SALT_SIZE} bytes")
        if len(self.uuid) != 16:
            raise FormatError("verity: uuid must be 16 bytes")
        for name in ("data_block_size", "hash_block_size"):
            if not _is_block_size(getattr(self, name)):
                raise FormatError(
                    f"verity: {name} must be a power of two from {MIN_BLOCK_SIZE} "
                    f"to {MAX_BLOCK_SIZE}"
                )
        if type(self.data_blocks) is not int or not (
            1 <= self.data_blocks < (1 << 63) // self.data_block_size
        ):
            raise FormatError(f"verity: invalid data_blocks {self.data_blocks!r}")

    @property
    def digest_size(self) -> int:
        return DIGEST_SIZES[self.hash_algorithm]

    @property
    def data_size(self) -> int:
        """Bytes of payload the tree covers."""
        return self.data_blocks * self.data_block_size

    @property
    def tree_size(self) -> int:
        """Bytes of the verity partition content (superblock block + tree)."""
        return self.geometry.size

    @cached_property
    def geometry(self) -> _Geometry:
        return _Geometry(self.data_blocks, self.hash_block_size, self.digest_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "root_hash": self.root_hash.hex(),
            "salt": self.salt.hex(),
            "hash_algorithm": self.hash_algorithm,
            "data_block_size": self.data_block_size,
            "hash_block_size": self.hash_block_size,
            "data_blocks": self.data_blocks,
            "uuid": str(Guid(self.uuid)),
        }

    @classmethod
    def from_json(cls, d: object) -> VerityParams:
        """Inverse of :meth:`to_json`; strict, since the input comes from a signed statement."""
        if not isinstance(d, dict):
            raise FormatError("verity: parameters must be a JSON object")
        if missing := _JSON_KEYS - d.keys():
            raise FormatError(f"verity: missing parameters: {', '.join(sorted(missing))}")
        if unknown := d.keys() - _JSON_KEYS:
            raise FormatError(f"verity: unknown parameters: {', '.join(sorted(map(str, unknown)))}")

        def hex_field(name: str) -> bytes:
            value = d[name]
            if not isinstance(value, str) or len(value) % 2 or not _HEX.fullmatch(value):
                raise FormatError(f"verity: {name} must be a lowercase hex string")
            return bytes.fromhex(value)

        parsed_uuid = Guid.parse(d["uuid"])
        if parsed_uuid is None:
            raise FormatError("verity: uuid must be a canonical lowercase UUID string")
        return cls(
            root_hash=hex_field("root_hash"),
            salt=hex_field("salt"),
            data_blocks=d["data_blocks"],
            uuid=parsed_uuid.bytes,
            hash_algorithm=d["hash_algorithm"],
            data_block_size=d["data_block_size"],
            hash_block_size=d["hash_block_size"],
        )

    def superblock_block(self) -> bytes:
        """The first hash block(s) of the partition: superblock plus zero padding."""
        sb = build_superblock(
            uuid=self.uuid,
            algorithm=self.hash_algorithm,
            data_block_size=self.data_block_size,
            hash_block_size=self.hash_block_size,
            data_blocks=self.data_blocks,
            salt=self.salt,
        )
        return sb.ljust(self.geometry.superblock_blocks * self.hash_block_size, b"\x00")


def hash_tree_size(data_blocks: int, hash_block_size: int = 4096, digest_size: int = 32) -> int:
    """Bytes of the verity partition content: superblock block + all tree blocks."""
    if data_blocks < 1:
        raise ValueError("data_blocks must be at least 1")
    return _Geometry(data_blocks, hash_block_size, digest_size).size


# --- building ------------------------------------------------------------------------------


def build_hash_tree(
    read_block_stream: Iterable[bytes],
    data_blocks: int,
    salt: bytes,
    uuid: bytes,
    *,
    hash_algorithm: str = "sha256",
    data_block_size: int = 4096,
    hash_block_size: int = 4096,
) -> tuple[bytes, VerityParams]:
    """Hash a payload; return the verity partition content and its parameters.

    ``read_block_stream`` yields the payload in chunks of any size; together they
    must be exactly ``data_blocks * data_block_size`` bytes. The returned bytes
    (superblock block + tree) equal what ``veritysetup format --hash-offset 0``
    writes for the same salt and uuid.
    """
    # Constructing the params first rejects a bad salt or size before hashing anything.
    digest_size = DIGEST_SIZES.get(hash_algorithm, 0)
    VerityParams(
        root_hash=bytes(digest_size),
        salt=salt,
        data_blocks=data_blocks,
        uuid=uuid,
        hash_algorithm=hash_algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )
    import hashlib

    base = hashlib.new(hash_algorithm, salt)
    g = _Geometry(data_blocks, hash_block_size, digest_size)
    level0 = bytearray()
    carry = b""
    total = 0
    for chunk in read_block_stream:
        total += len(chunk)
        if total > data_blocks * data_block_size:
            break
        if carry:
            chunk = carry + chunk
        whole = len(chunk) - len(chunk) % data_block_size
        level0 += _digests(base, memoryview(chunk)[:whole], data_block_size, g.slot_size)
        carry = bytes(chunk[whole:])
    if total != data_blocks * data_block_size:
        raise FormatError(
            f"verity: payload is {'more than ' if total > data_blocks * data_block_size else ''}"
            f"{total} bytes, expected {data_blocks} blocks of {data_block_size} bytes"
        )

    levels: list[bytes] = []
    slots = bytes(level0)
    for level in range(g.levels):
        levels.append(g.level_bytes(slots, level))
        slots = _digests(base, levels[-1], hash_block_size, g.slot_size)
    # One slot is left: the digest of the top block, or of the only data block.
    params = VerityParams(
        root_hash=slots[:digest_size],
        salt=salt,
        data_blocks=data_blocks,
        uuid=uuid,
        hash_algorithm=hash_algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )
    content = b"".join([params.superblock_block(), *reversed(levels)])
    assert len(content) == g.size
    return content, params


def build_from_file(
    fd: int,
    offset: int,
    size: int,
    salt: bytes,
    uuid: bytes,
    *,
    hash_algorithm: str = "sha256",
    data_block_size: int = 4096,
    hash_block_size: int = 4096,
) -> tuple[bytes, VerityParams]:
    """:func:`build_hash_tree` over ``size`` bytes of ``fd`` at ``offset`` (read with pread)."""
    if size <= 0 or size % data_block_size:
        raise FormatError(f"verity: payload size {size} is not a multiple of {data_block_size}")

    def chunks() -> Iterator[bytes]:
        done = 0
        while done < size:
            chunk = os.pread(fd, min(_CHUNK, size - done), offset + done)
            if not chunk:
                raise FormatError(f"verity: payload file is truncated at offset {offset + done}")
            done += len(chunk)
            yield chunk

    return build_hash_tree(
        chunks(),
        size // data_block_size,
        salt,
        uuid,
        hash_algorithm=hash_algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )


# --- checking ------------------------------------------------------------------------------


def _first_difference(a: bytes, b: bytes) -> int:
    """Index of the first differing byte of two equal-length buffers (bisecting in C)."""
    lo, hi = 0, len(a)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] != b[lo:mid]:
            hi = mid
        else:
            lo = mid
    return next(i for i in range(lo, hi) if a[i] != b[i])


def _check_zero(source: ByteSource, start: int, end: int, what: str) -> None:
    zero = bytes(min(_CHUNK, max(end - start, 0)))
    for offset in range(start, end, _CHUNK):
        chunk = source.read(offset, min(_CHUNK, end - offset))
        if chunk != zero[: len(chunk)]:
            bad = offset + _first_difference(chunk, zero[: len(chunk)])
            raise IntegrityError(f"{what}: non-zero byte at offset {bad}")


def _check_sizes(data: ByteSource | None, verity: ByteSource, params: VerityParams) -> None:
    if params.tree_size > verity.size:
        raise FormatError(
            f"verity tree: needs {params.tree_size} bytes but the partition holds {verity.size}"
        )
    # Bytes past the tree's coverage would be readable yet unverified, so refuse them.
    if data is not None and data.size != params.data_size:
        raise FormatError(
            f"verity: payload is {data.size} bytes but the tree covers {params.data_size}"
        )


def check_superblock(verity_source: ByteSource, expected: VerityParams) -> None:
    """Check the superblock block against the signed parameters, byte for byte.

    The superblock is not covered by the root hash, so it is trusted only as far as it
    agrees with ``expected``. FormatError if it is not a verity superblock at all,
    IntegrityError if it describes a different tree or has non-zero padding.
    """
    wanted_block = expected.superblock_block()
    if verity_source.size < len(wanted_block):
        raise FormatError(f"verity superblock: partition holds only {verity_source.size} bytes")
    block = verity_source.read(0, len(wanted_block))
    sb = parse_superblock(block)
    if sb.version != VERITY_SB_VERSION:
        raise FormatError(f"verity superblock: unsupported version {sb.version}")
    if sb.hash_type != VERITY_HASH_TYPE:
        raise FormatError(f"verity superblock: unsupported hash type {sb.hash_type}")
    fields = [
        ("uuid", sb.uuid, expected.uuid),
        ("hash algorithm", sb.algorithm, expected.hash_algorithm),
        ("data block size", sb.data_block_size, expected.data_block_size),
        ("hash block size", sb.hash_block_size, expected.hash_block_size),
        ("data blocks", sb.data_blocks, expected.data_blocks),
        ("salt", sb.salt[: sb.salt_size], expected.salt),
    ]
    for name, actual, wanted in fields:
        if actual != wanted:
            raise IntegrityError(f"verity superblock: {name} does not match the signed parameters")
    if block != wanted_block:
        raise IntegrityError("verity superblock: padding or unused salt bytes are not zero")


def check_tree(verity_source: ByteSource, params: VerityParams) -> None:
    """Verify the whole verity partition against the root hash without reading the data.

    Checks the superblock, every hash block against its parent up to the root hash, and
    that every unused byte (superblock tail, unused digest slots, bytes after the tree up
    to ``verity_source.size``) is zero. Reads the tree once, top level first; memory is
    bounded by level 1 (1/16384 of the payload for sha256 in 4 KiB blocks). With a single
    data block there is no tree, and only :func:`check_data` can check the root hash.
    """
    check_superblock(verity_source, params)
    _check_sizes(None, verity_source, params)
    g = params.geometry
    hbs = params.hash_block_size
    import hashlib

    base = hashlib.new(params.hash_algorithm, params.salt)
    if g.levels:
        top = g.levels - 1
        parent = verity_source.read(g.level_start[top] * hbs, hbs)
        if _digests(base, parent, hbs, g.digest_size) != params.root_hash:
            raise IntegrityError(
                f"verity tree: level {top} (top) block 0 at offset "
                f"{g.level_start[top] * hbs} does not match the root hash"
            )
        # Walk down. ``parent`` (level + 1) is verified; rebuild it from the blocks of
        # ``level``: any byte that differs is a bad child block or non-zero padding.
        for level in reversed(range(top)):
            start = g.level_start[level] * hbs
            length = g.level_blocks[level] * hbs
            slots = bytearray()
            kept = []
            for offset in range(0, length, _CHUNK):
                chunk = verity_source.read(start + offset, min(_CHUNK, length - offset))
                slots += _digests(base, chunk, hbs, g.slot_size)
                if level:
                    kept.append(chunk)
            expected = g.level_bytes(slots, level + 1)
            if expected != parent:
                pos = _first_difference(expected, parent)
                child = pos // g.slot_size
                if child < g.level_blocks[level] and pos % g.slot_size < g.digest_size:
                    raise IntegrityError(
                        f"verity tree: level {level} block {child} at offset "
                        f"{start + child * hbs} does not match its digest in level {level + 1}"
                    )
                raise IntegrityError(
                    f"verity tree: level {level + 1} block {pos // hbs} has non-zero "
                    f"unused digest bytes"
                )
            parent = b"".join(kept)
        _check_level0_padding(verity_source, params)
    _check_zero(verity_source, g.size, verity_source.size, "verity partition after the tree")


def _check_level0_padding(verity_source: ByteSource, params: VerityParams) -> None:
    """Unused bytes of level 0 are zero (its digests themselves need the data to check)."""
    g = params.geometry
    start = g.level_start[0] * params.hash_block_size
    used = params.data_blocks * g.slot_size
    end = start + g.level_blocks[0] * params.hash_block_size
    _check_zero(verity_source, start + used, end, "verity tree: level 0 unused digest slots")
    if g.slot_size != g.digest_size:
        # Digests narrower than their slot (sha1) leave a gap in every slot.
        pad = bytes(g.slot_size - g.digest_size)
        for offset in range(0, used, _CHUNK):
            chunk = verity_source.read(start + offset, min(_CHUNK, used - offset))
            for at in range(g.digest_size, len(chunk), g.slot_size):
                if chunk[at : at - g.digest_size + g.slot_size] != pad:
                    raise IntegrityError(
                        f"verity tree: level 0 slot {(offset + at) // g.slot_size} "
                        f"has non-zero padding"
                    )


def _block_error(block: int, data_block_size: int) -> IntegrityError:
    return IntegrityError(
        f"payload block {block} (offset {block * data_block_size}) does not match the verity tree"
    )


def check_data(
    data_source: ByteSource,
    verity_source: ByteSource,
    params: VerityParams,
    progress: Progress | None = None,
) -> None:
    """Check every data block against level 0 (``verify --full``).

    Runs :func:`check_tree` first, so passing means the whole payload matches the root
    hash. Streams the data in 1 MiB chunks; ``progress(done, total)`` gets byte counts
    after each chunk. IntegrityError names the first bad data block.
    """
    check_tree(verity_source, params)
    _check_sizes(data_source, verity_source, params)
    g = params.geometry
    dbs = params.data_block_size
    import hashlib

    base = hashlib.new(params.hash_algorithm, params.salt)
    total = params.data_size
    level0 = g.level_start[0] * params.hash_block_size if g.levels else 0
    step = max(_CHUNK // dbs, 1) * dbs
    for offset in range(0, total, step):
        length = min(step, total - offset)
        if g.levels:
            computed = _digests(base, data_source.read(offset, length), dbs, g.slot_size)
            stored = verity_source.read(level0 + offset // dbs * g.slot_size, len(computed))
        else:
            computed = _digests(base, data_source.read(offset, length), dbs, g.digest_size)
            stored = params.root_hash
        if computed != stored:
            first = offset // dbs + _first_difference(computed, stored) // g.slot_size
            raise _block_error(first, dbs)
        if progress is not None:
            progress(offset + length, total)


# --- reading -------------------------------------------------------------------------------


class VerifiedSource:
    """A :class:`~appimg.format.source.ByteSource` whose every byte is checked against the
    root hash.

    Each read hashes the data blocks it covers and compares them with their level-0
    digests; hash blocks are verified up the chain to the root hash before use. Data
    blocks are not cached (the payload reader above caches what it decodes).
    Thread-safe: FUSE calls ``read`` from many threads.
    """

    def __init__(
        self,
        data: ByteSource,
        verity: ByteSource,
        params: VerityParams,
        hash_cache_blocks: int = 4096,
    ) -> None:
        if hash_cache_blocks < 1:
            raise ValueError("hash_cache_blocks must be at least 1")
        check_superblock(verity, params)
        _check_sizes(data, verity, params)
        self._data = data
        self._verity = verity
        self._params = params
        self._g = params.geometry
        import hashlib

        self._base = hashlib.new(params.hash_algorithm, params.salt)
        # Hash block cache contract: maps (level, index) to the bytes of that hash block
        # and holds only blocks already verified up to the root hash, so a hit needs no
        # re-check. At most ``hash_cache_blocks`` entries; the least recently used is
        # evicted. Every access to it is under ``_lock``; I/O and hashing run outside
        # the lock, so two threads missing the same block may both verify it, which is
        # harmless. A block that fails is never cached: later reads fail again.
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._cache_max = hash_cache_blocks
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._data.size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(
                f"verified payload: read of {length} bytes at offset {offset} "
                f"is outside its {self.size} bytes"
            )
        if length == 0:
            return b""
        g = self._g
        dbs = self._params.data_block_size
        first = offset // dbs
        last = (offset + length - 1) // dbs
        buf = self._data.read(first * dbs, (last - first + 1) * dbs)
        computed = _digests(self._base, buf, dbs, g.slot_size)
        if not g.levels:
            if computed[: g.digest_size] != self._params.root_hash:
                raise _block_error(0, dbs)
        else:
            # Compare whole runs of slots against each level-0 block the read touches.
            block = first
            while block <= last:
                index = block >> g.per_block_bits
                run_end = min(last + 1, (index + 1) << g.per_block_bits)
                hashes = self._hash_block(0, index)
                at = (block & (g.per_block - 1)) * g.slot_size
                stored = hashes[at : at + (run_end - block) * g.slot_size]
                mine = computed[(block - first) * g.slot_size : (run_end - first) * g.slot_size]
                if stored != mine:
                    raise _block_error(block + _first_difference(stored, mine) // g.slot_size, dbs)
                block = run_end
        skip = offset - first * dbs
        return buf[skip : skip + length]

    def _hash_block(self, level: int, index: int) -> bytes:
        """Block ``index`` of tree ``level``, verified up to the root hash."""
        key = (level, index)
        with self._lock:
            block = self._cache.get(key)
            if block is not None:
                self._cache.move_to_end(key)
                return block
        g = self._g
        hbs = self._params.hash_block_size
        offset = (g.level_start[level] + index) * hbs
        block = self._verity.read(offset, hbs)
        digest = _digests(self._base, block, hbs, g.digest_size)
        if level == g.levels - 1:
            stored = self._params.root_hash
        else:
            parent = self._hash_block(level + 1, index >> g.per_block_bits)
            at = (index & (g.per_block - 1)) * g.slot_size
            stored = parent[at : at + g.digest_size]
        if stored != digest:
            raise IntegrityError(
                f"verity tree: level {level} block {index} (offset {offset}) "
                f"does not match the root hash"
            )
        with self._lock:
            self._cache[key] = block
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return block
