"""Tests for appimg.format.verity.hashtree: byte-exact against veritysetup, and tamper detection."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import shutil
import subprocess
import threading
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.errors import FormatError, IntegrityError
from appimg.format.source import FileRegion
from appimg.format.verity.hashtree import (
    VerifiedSource,
    VerityParams,
    build_from_file,
    build_hash_tree,
    check_data,
    check_superblock,
    check_tree,
    hash_tree_size,
)
from appimg.format.verity.structs import (
    VERITY_SUPERBLOCK,
    VERITY_SUPERBLOCK_SIZE,
    build_superblock,
    parse_superblock,
)

pytestmark = pytest.mark.skipif(shutil.which("veritysetup") is None, reason="needs veritysetup")

UUID = uuidlib.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
SALT = bytes(range(32))


class MemorySource:
    """A ByteSource over bytes held in memory (a real implementation, not a stand-in)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(self._data):
            raise FormatError(f"read of {length} at {offset} outside {len(self._data)}")
        return self._data[offset : offset + length]


def flipped(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def payload(blocks: int, seed: int, block_size: int = 4096) -> bytes:
    """Random blocks with a few all-zero and repeated ones (identical blocks, same digest)."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(blocks * block_size))
    for b in rng.sample(range(blocks), min(blocks, 3)):
        data[b * block_size : (b + 1) * block_size] = bytes(block_size)
    if blocks > 4:
        data[block_size : 2 * block_size] = data[3 * block_size : 4 * block_size]
    return bytes(data)


def veritysetup_format(
    data_path: Path,
    hash_path: Path,
    data_blocks: int,
    salt: bytes,
    *,
    algorithm: str = "sha256",
    data_block_size: int = 4096,
    hash_block_size: int = 4096,
) -> bytes:
    """Run the reference tool; return its root hash."""
    out = subprocess.run(
        [
            "veritysetup",
            "format",
            "--hash-offset",
            "0",
            "--salt",
            salt.hex() or "-",
            "--uuid",
            str(UUID),
            "--data-blocks",
            str(data_blocks),
            "--hash",
            algorithm,
            "--data-block-size",
            str(data_block_size),
            "--hash-block-size",
            str(hash_block_size),
            str(data_path),
            str(hash_path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"^Root hash:\s+([0-9a-f]+)$", out, re.MULTILINE)
    assert match, out
    return bytes.fromhex(match.group(1))


def veritysetup_verify(data_path: Path, hash_path: Path, root_hash: bytes) -> None:
    subprocess.run(
        ["veritysetup", "verify", str(data_path), str(hash_path), root_hash.hex()],
        check=True,
        capture_output=True,
    )


def build(
    data: bytes,
    salt: bytes = SALT,
    *,
    hash_algorithm: str = "sha256",
    data_block_size: int = 4096,
    hash_block_size: int = 4096,
) -> tuple[bytes, VerityParams]:
    """Build through the streaming API, fed in chunks that split blocks unevenly."""
    cuts = [0, 1, 5000, 4096 * 3 + 7, *range(20000, len(data), 300_000), len(data)]
    cuts = sorted({min(c, len(data)) for c in cuts})
    return build_hash_tree(
        [data[a:b] for a, b in itertools.pairwise(cuts)],
        len(data) // data_block_size,
        salt,
        UUID.bytes,
        hash_algorithm=hash_algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )


# --- byte-exact against veritysetup ----------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 2, 127, 128, 129, 16384, 16385])
def test_matches_veritysetup(tmp_path: Path, blocks: int) -> None:
    data = payload(blocks, seed=blocks)
    data_path = tmp_path / "data"
    data_path.write_bytes(data)
    fd = os.open(data_path, os.O_RDONLY)
    try:
        content, params = build_from_file(fd, 0, len(data), SALT, UUID.bytes)
    finally:
        os.close(fd)

    ref_root = veritysetup_format(data_path, tmp_path / "ref", blocks, SALT)
    ref = (tmp_path / "ref").read_bytes()
    assert len(content) == hash_tree_size(blocks) == params.tree_size
    assert ref[: len(content)] == content
    assert ref[len(content) :].strip(b"\0") == b""
    assert params.root_hash == ref_root
    assert params == VerityParams(ref_root, SALT, blocks, UUID.bytes)
    assert build(data) == (content, params)

    ours = tmp_path / "ours"
    ours.write_bytes(content)
    veritysetup_verify(data_path, ours, params.root_hash)
    check_tree(MemorySource(content), params)
    check_data(MemorySource(data), MemorySource(content), params)


@pytest.mark.parametrize(
    ("algorithm", "data_block_size", "hash_block_size", "blocks", "salt"),
    [
        ("sha1", 4096, 4096, 300, SALT),  # 20-byte digests in 32-byte slots
        ("sha512", 4096, 4096, 4097, SALT),  # 64 digests per block
        ("sha256", 512, 512, 4097, SALT),  # 16 digests per block: four levels
        ("sha256", 4096, 1024, 1000, SALT),
        ("sha256", 1024, 4096, 129, b"\x01\x02\x03\x04\x05"),
        ("sha256", 4096, 4096, 200, b""),
        ("sha256", 4096, 4096, 200, bytes(range(256))),
    ],
)
def test_other_parameters_match_veritysetup(
    tmp_path: Path,
    algorithm: str,
    data_block_size: int,
    hash_block_size: int,
    blocks: int,
    salt: bytes,
) -> None:
    data = payload(blocks, seed=7, block_size=data_block_size)
    (tmp_path / "data").write_bytes(data)
    ref_root = veritysetup_format(
        tmp_path / "data",
        tmp_path / "ref",
        blocks,
        salt,
        algorithm=algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )
    content, params = build(
        data,
        salt,
        hash_algorithm=algorithm,
        data_block_size=data_block_size,
        hash_block_size=hash_block_size,
    )
    assert (tmp_path / "ref").read_bytes() == content
    assert params.root_hash == ref_root
    assert len(content) == hash_tree_size(blocks, hash_block_size, params.digest_size)
    check_tree(MemorySource(content), params)
    check_data(MemorySource(data), MemorySource(content), params)
    source = VerifiedSource(MemorySource(data), MemorySource(content), params)
    assert source.read(0, len(data)) == data


def test_hash_tree_size_levels() -> None:
    # Superblock block + one block per 128 digests, level by level (sha256, 4 KiB).
    assert hash_tree_size(1) == 4096
    assert hash_tree_size(128) == 2 * 4096
    assert hash_tree_size(129) == (1 + 2 + 1) * 4096
    assert hash_tree_size(16384) == (1 + 128 + 1) * 4096
    assert hash_tree_size(16385) == (1 + 129 + 2 + 1) * 4096
    n = 128**3 + 1
    assert hash_tree_size(n) == (1 + 16385 + 129 + 2 + 1) * 4096
    assert hash_tree_size(200, 4096, 64) == (1 + 4 + 1) * 4096
    with pytest.raises(ValueError):
        hash_tree_size(0)


# --- superblock and parameters ---------------------------------------------------------------


def test_superblock_round_trip(tmp_path: Path) -> None:
    raw = build_superblock(
        uuid=UUID.bytes,
        algorithm="sha256",
        data_block_size=4096,
        hash_block_size=1024,
        data_blocks=123456789,
        salt=SALT,
    )
    assert len(raw) == VERITY_SUPERBLOCK_SIZE == 512
    sb = parse_superblock(raw)
    assert (sb.signature, sb.version, sb.hash_type) == (b"verity\0\0", 1, 1)
    assert (sb.uuid, sb.algorithm) == (UUID.bytes, "sha256")
    assert (sb.data_block_size, sb.hash_block_size, sb.data_blocks) == (4096, 1024, 123456789)
    assert (sb.salt_size, sb.salt) == (32, SALT + bytes(224))
    assert VERITY_SUPERBLOCK.build(sb) == raw

    # The reference tool's superblock parses to the same fields.
    data = payload(3, seed=1)
    (tmp_path / "data").write_bytes(data)
    veritysetup_format(tmp_path / "data", tmp_path / "ref", 3, SALT)
    ref = parse_superblock((tmp_path / "ref").read_bytes()[:512])
    assert VERITY_SUPERBLOCK.build(ref) == (tmp_path / "ref").read_bytes()[:512]
    assert (ref.uuid, ref.algorithm, ref.data_blocks) == (UUID.bytes, "sha256", 3)


@pytest.mark.parametrize(
    "raw",
    [b"", bytes(511), b"VERITY\0\0" + bytes(504), bytes(512)],
    ids=["empty", "short", "bad-signature", "zeros"],
)
def test_superblock_parse_errors(raw: bytes) -> None:
    with pytest.raises(FormatError):
        parse_superblock(raw)


def test_check_superblock_rejects_other_parameters() -> None:
    content, params = build(payload(10, seed=2))
    check_superblock(MemorySource(content), params)
    for other in [
        VerityParams(params.root_hash, bytes(32), 10, UUID.bytes),
        VerityParams(params.root_hash, SALT, 11, UUID.bytes),
        VerityParams(params.root_hash, SALT, 10, bytes(16)),
        VerityParams(params.root_hash, SALT[:16], 10, UUID.bytes),
    ]:
        with pytest.raises(IntegrityError):
            check_superblock(MemorySource(content), other)
    with pytest.raises(FormatError):
        check_superblock(MemorySource(content[:1000]), params)


def test_params_json_round_trip() -> None:
    _, params = build(payload(5, seed=3))
    d = params.to_json()
    assert d == {
        "root_hash": params.root_hash.hex(),
        "salt": SALT.hex(),
        "hash_algorithm": "sha256",
        "data_block_size": 4096,
        "hash_block_size": 4096,
        "data_blocks": 5,
        "uuid": str(UUID),
    }
    assert VerityParams.from_json(d) == params


@pytest.mark.parametrize(
    "change",
    [
        {"root_hash": "00" * 31},
        {"root_hash": "AB" * 32},
        {"root_hash": "ab cd" + "00" * 30},
        {"root_hash": 5},
        {"salt": "0"},
        {"salt": "00" * 257},
        {"hash_algorithm": "md5"},
        {"hash_algorithm": ["sha256"]},
        {"data_block_size": 4095},
        {"data_block_size": 256},
        {"hash_block_size": "4096"},
        {"hash_block_size": True},
        {"data_blocks": 0},
        {"data_blocks": 1.5},
        {"data_blocks": 1 << 63},
        {"uuid": "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"},
        {"uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
        {"uuid": "nope"},
        {"extra": 1},
        {"salt": None},
    ],
)
def test_params_from_json_rejects(change: dict[str, object]) -> None:
    _, params = build(payload(2, seed=4))
    d = {**params.to_json(), **change}
    if change == {"salt": None}:
        del d["salt"]
    with pytest.raises(FormatError):
        VerityParams.from_json(d)


def test_build_rejects_wrong_length() -> None:
    data = payload(4, seed=5)
    with pytest.raises(FormatError):
        build_hash_tree([data[:-1]], 4, SALT, UUID.bytes)
    with pytest.raises(FormatError):
        build_hash_tree([data, b"x"], 4, SALT, UUID.bytes)
    with pytest.raises(FormatError):
        build_hash_tree([data], 5, SALT, UUID.bytes)
    with pytest.raises(FormatError):
        build_from_file(0, 0, 4097, SALT, UUID.bytes)


# --- check_tree ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_levels() -> tuple[bytes, bytes, VerityParams]:
    """16385 blocks: levels of 129, 2 and 1 blocks after the superblock block."""
    data = payload(16385, seed=16385)
    content, params = build(data)
    return data, content, params


def test_check_tree_detects_every_flip(three_levels: tuple[bytes, bytes, VerityParams]) -> None:
    _, content, params = three_levels
    slack = 3 * 4096  # a partition larger than the tree: the rest must stay zero
    image = content + bytes(slack)
    check_tree(MemorySource(image), params)

    top, level1, level0 = 4096, 2 * 4096, 4 * 4096
    rng = random.Random(0)
    positions = {
        *range(0, 96),  # superblock fields
        *rng.sample(range(96, 512), 40),  # salt, padding
        *rng.sample(range(512, 4096), 40),  # superblock block tail
        top + 0,
        top + 63,
        top + 64,  # first unused slot of the top block (it holds two digests)
        *rng.sample(range(top, level1), 30),
        level1,
        level1 + 4095,
        level1 + 4096 + 32,  # level 1, second block: first unused slot
        *rng.sample(range(level1, level0), 30),
        level0,
        len(content) - 4096 + 31,  # last digest of level 0
        len(content) - 4096 + 32,  # unused slots of level 0
        len(content) - 1,
        *rng.sample(range(level0, len(content)), 80),
        len(content),
        len(image) - 1,
        *rng.sample(range(len(content), len(image)), 10),
    }
    for pos in sorted(positions):
        with pytest.raises((IntegrityError, FormatError)):
            check_tree(MemorySource(flipped(image, pos, 1 << (pos % 8))), params)


def test_check_tree_names_the_bad_block(three_levels: tuple[bytes, bytes, VerityParams]) -> None:
    _, content, params = three_levels
    cases = {
        4096 + 5: "level 2 (top) block 0",
        2 * 4096 + 4096 + 7: "level 1 block 1",
        4 * 4096 + 17 * 4096 + 100: "level 0 block 17",
        4 * 4096 + 128 * 4096 + 40: "level 0 block 128",
    }
    for pos, words in cases.items():
        with pytest.raises(IntegrityError, match=re.escape(words)):
            check_tree(MemorySource(flipped(content, pos)), params)
    with pytest.raises(FormatError):
        check_tree(MemorySource(content[:-4096]), params)
    wrong_root = VerityParams(bytes(32), SALT, params.data_blocks, UUID.bytes)
    with pytest.raises(IntegrityError, match="root hash"):
        check_tree(MemorySource(content), wrong_root)


@pytest.mark.parametrize(
    ("pos", "words"),
    [
        (2 * 4096 + 4096 + 32, "level 0 unused digest slots"),  # level 0 block 1, slot 1
        (4096 + 64, "level 1 block 0 has non-zero unused digest bytes"),  # top block, slot 2
    ],
)
def test_check_tree_rejects_nonzero_padding_with_valid_hashes(
    tmp_path: Path, pos: int, words: str
) -> None:
    """A tree whose hashes all match but whose unused bytes are not zero, as veritysetup sees it."""
    data = payload(129, seed=13)  # level 0: 2 blocks (128 + 1 digests); level 1: 1 block
    content, params = build(data)
    forged = bytearray(flipped(content, pos))

    def digest(block: bytes | bytearray) -> bytes:
        return hashlib.sha256(SALT + block).digest()

    top, level0 = 4096, 2 * 4096
    forged[top + 32 : top + 64] = digest(forged[level0 + 4096 : level0 + 8192])
    root = digest(forged[top : top + 4096])
    forged_params = VerityParams(root, SALT, 129, UUID.bytes)
    check_data(MemorySource(data), MemorySource(content), params)
    with pytest.raises(IntegrityError, match=re.escape(words)):
        check_tree(MemorySource(bytes(forged)), forged_params)

    (tmp_path / "data").write_bytes(data)
    (tmp_path / "hash").write_bytes(forged)
    with pytest.raises(subprocess.CalledProcessError):
        veritysetup_verify(tmp_path / "data", tmp_path / "hash", root)


# --- check_data ------------------------------------------------------------------------------


def test_check_data_detects_flipped_byte(three_levels: tuple[bytes, bytes, VerityParams]) -> None:
    data, content, params = three_levels
    seen: list[tuple[int, int]] = []
    check_data(MemorySource(data), MemorySource(content), params, lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    for block in (0, 5000, 16384):
        pos = block * 4096 + 1234
        bad = MemorySource(flipped(data, pos))
        with pytest.raises(
            IntegrityError, match=rf"payload block {block} \(offset {block * 4096}\)"
        ):
            check_data(bad, MemorySource(content), params)
    with pytest.raises(FormatError):
        check_data(MemorySource(data[:-4096]), MemorySource(content), params)


def test_check_data_single_block() -> None:
    data = payload(1, seed=9)
    content, params = build(data)
    check_data(MemorySource(data), MemorySource(content), params)
    with pytest.raises(IntegrityError, match="payload block 0"):
        check_data(MemorySource(flipped(data, 4095)), MemorySource(content), params)


# --- VerifiedSource --------------------------------------------------------------------------


@pytest.fixture
def image_files(tmp_path: Path) -> Iterator[tuple[bytes, int, int, VerityParams, Path, Path]]:
    data = payload(1000, seed=11)
    content, params = build(data)
    data_path, hash_path = tmp_path / "data", tmp_path / "hash"
    data_path.write_bytes(data)
    hash_path.write_bytes(content)
    data_fd = os.open(data_path, os.O_RDWR)
    hash_fd = os.open(hash_path, os.O_RDWR)
    try:
        yield data, data_fd, hash_fd, params, data_path, hash_path
    finally:
        os.close(data_fd)
        os.close(hash_fd)


def test_verified_source_random_reads(
    image_files: tuple[bytes, int, int, VerityParams, Path, Path],
) -> None:
    data, data_fd, hash_fd, params, _, _ = image_files
    source = VerifiedSource(
        FileRegion.whole_file(data_fd, "payload"),
        FileRegion.whole_file(hash_fd, "verity"),
        params,
        hash_cache_blocks=3,
    )
    assert source.size == len(data)
    rng = random.Random(1)
    for _ in range(500):
        offset = rng.randrange(len(data))
        length = rng.randrange(min(len(data) - offset, 70000) + 1)
        assert source.read(offset, length) == data[offset : offset + length]
    assert source.read(len(data), 0) == b""
    assert source.read(0, len(data)) == data
    with pytest.raises(FormatError):
        source.read(len(data) - 1, 2)
    with pytest.raises(FormatError):
        source.read(-1, 1)


def test_verified_source_detects_tampered_data(
    image_files: tuple[bytes, int, int, VerityParams, Path, Path],
) -> None:
    data, data_fd, hash_fd, params, _, _ = image_files
    source = VerifiedSource(
        FileRegion.whole_file(data_fd, "payload"), FileRegion.whole_file(hash_fd, "verity"), params
    )
    assert source.read(0, len(data)) == data  # warm the hash cache first
    bad_block = 777
    pos = bad_block * 4096 + 321
    os.pwrite(data_fd, bytes([data[pos] ^ 0x80]), pos)
    message = rf"payload block {bad_block} \(offset {bad_block * 4096}\) does not match"
    for offset, length in [(pos, 1), (bad_block * 4096, 4096), (pos - 5000, 10000)]:
        with pytest.raises(IntegrityError, match=message) as info:
            source.read(offset, length)
        assert info.value.errno == 5  # EIO for FUSE
    for block in (0, bad_block - 1, bad_block + 1, 999):
        assert source.read(block * 4096, 4096) == data[block * 4096 : (block + 1) * 4096]
    with pytest.raises(IntegrityError):
        check_data(FileRegion.whole_file(data_fd), FileRegion.whole_file(hash_fd), params)


def test_verified_source_detects_tampered_tree(
    image_files: tuple[bytes, int, int, VerityParams, Path, Path],
) -> None:
    data, data_fd, hash_fd, params, _, _ = image_files
    # 1000 blocks: superblock block, top block, then 8 level-0 blocks of 128 digests.
    level0 = 2 * 4096
    pos = level0 + 3 * 4096 + 100
    old = os.pread(hash_fd, 1, pos)[0]
    os.pwrite(hash_fd, bytes([old ^ 1]), pos)
    source = VerifiedSource(FileRegion.whole_file(data_fd), FileRegion.whole_file(hash_fd), params)
    with pytest.raises(IntegrityError, match="level 0 block 3"):
        source.read(3 * 128 * 4096 + 10, 10)
    assert source.read(0, 3 * 128 * 4096) == data[: 3 * 128 * 4096]
    assert source.read(4 * 128 * 4096, 4096) == data[4 * 128 * 4096 : 4 * 128 * 4096 + 4096]
    with pytest.raises(IntegrityError):
        check_tree(FileRegion.whole_file(hash_fd), params)


def test_verified_source_checks_sizes_and_superblock(
    image_files: tuple[bytes, int, int, VerityParams, Path, Path],
) -> None:
    data, _, _, params, _, _ = image_files
    content, _ = build(data)
    with pytest.raises(FormatError):
        VerifiedSource(MemorySource(data + bytes(4096)), MemorySource(content), params)
    with pytest.raises(FormatError):
        VerifiedSource(MemorySource(data), MemorySource(content[:-1]), params)
    with pytest.raises(IntegrityError):
        VerifiedSource(MemorySource(data), MemorySource(flipped(content, 100)), params)


def test_verified_source_single_block() -> None:
    data = payload(1, seed=12)
    content, params = build(data)
    source = VerifiedSource(MemorySource(data), MemorySource(content), params)
    assert source.read(10, 100) == data[10:110]
    bad = VerifiedSource(MemorySource(flipped(data, 0)), MemorySource(content), params)
    with pytest.raises(IntegrityError, match="payload block 0"):
        bad.read(4000, 10)


def test_verified_source_concurrent_reads(
    three_levels: tuple[bytes, bytes, VerityParams],
) -> None:
    data, content, params = three_levels
    # A tiny cache forces constant eviction and re-verification under contention.
    source = VerifiedSource(MemorySource(data), MemorySource(content), params, hash_cache_blocks=4)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                offset = rng.randrange(len(data) - 1)
                length = rng.randrange(1, min(len(data) - offset, 140000) + 1)
                if source.read(offset, length) != data[offset : offset + length]:
                    raise AssertionError(f"wrong bytes at {offset}+{length}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
