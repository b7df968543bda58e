"""Signed but hostile payloads: resource bombs in the reader, and a safe extract.

A signature only says who made an image, so every payload here is wrapped in a
valid verity tree and statement (:func:`tests.forge.forge`) and must still give
one clear error line (or a bounded, correct result), never a traceback, a hang,
unbounded memory, or a write outside the target directory.

Payloads the packers cannot make are built by :func:`_squashfs`, a minimal
SquashFS 4.0 writer (gzip, one directory listing block, no fragments).

The fuzz test runs a fixed, derandomized set of examples by default (a few
seconds in CI); ``APPIMG_FUZZ_EXAMPLES=N`` runs N examples instead (for
example ``APPIMG_FUZZ_EXAMPLES=20000 pytest tests/system/test_hostile_payload.py -k fuzz``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appimg.errors import AppimgError
from appimg.format.image import Image

from ..forge import forge, payload_of
from ..helpers import appimg, assert_one_line_error, pack_small_image, write_app

#: Address-space cap for processes reading hostile payloads.
MEMORY_LIMIT = 256 << 20
META = 8192
S_IFDIR, S_IFREG = 1, 2


# --- a minimal SquashFS writer ----------------------------------------------------------


def _metablocks(stream: bytes) -> tuple[bytes, list[int]]:
    """``stream`` as gzip metadata blocks, and the on-disk offset of each block."""
    out = bytearray()
    offsets = []
    for i in range(0, max(len(stream), 1), META):
        offsets.append(len(out))
        packed = zlib.compress(stream[i : i + META], 9)
        out += struct.pack("<H", len(packed)) + packed
    return bytes(out), offsets


def _image(inodes: list[tuple[int, int, bytes]], listing: list[tuple[str, int]],
           *, block_log: int = 17, data: bytes = b"",
           numbers: dict[int, int] | None = None) -> bytes:  # fmt: skip
    """A SquashFS image. ``inodes`` are (type, mode, body after the header),
    numbered 1.. in order, the last one the root directory; every directory
    (start block and offset 0) has the one listing, of ``listing`` (name,
    inode number) entries. ``data`` goes right after the superblock, at 96.
    ``numbers`` overrides the number an inode's header claims (position -> number)."""
    # Inode stream, with each inode's position, so references can be made.
    stream = bytearray()
    positions = []
    for number, (itype, mode, body) in enumerate(inodes, 1):
        positions.append(len(stream))
        claimed = (numbers or {}).get(number, number)
        stream += struct.pack("<HHHHII", itype, mode, 0, 0, 0, claimed) + body
    itable, block_offsets = _metablocks(bytes(stream))

    def ref(number: int) -> int:
        pos = positions[number - 1]
        return block_offsets[pos // META] << 16 | pos % META

    # One directory header per entry keeps the listing valid whatever the blocks.
    dlist = bytearray()
    for name, number in sorted(listing):
        r = ref(number)
        itype = inodes[number - 1][0]
        basic = itype if itype <= 7 else itype - 7
        dlist += struct.pack("<III", 0, r >> 16, (numbers or {}).get(number, number))
        dlist += struct.pack("<HhHH", r & 0xFFFF, 0, basic, len(name) - 1) + name.encode()
    dtable, _ = _metablocks(bytes(dlist))
    ids, _ = _metablocks(struct.pack("<I", 0))
    inode_start = 96 + len(data)
    dir_start = inode_start + len(itable)
    id_block = dir_start + len(dtable)
    id_start = id_block + len(ids)
    end = id_start + 8
    sb = struct.pack(
        "<IIIIIHHHHHHQQQQQQQQ",
        0x73717368, len(inodes), 0, 1 << block_log, 0, 1, block_log, 0x0010 | 0x0200, 1, 4, 0,
        ref(len(inodes)), end, id_start, 2**64 - 1, inode_start, dir_start, 2**64 - 1, 2**64 - 1,
    )  # fmt: skip
    image = sb + data + itable + dtable + ids + struct.pack("<Q", id_block)
    return image + bytes(-len(image) % 4096)


def _dir_body(listing: list[tuple[str, int]], parent: int) -> bytes:
    size = sum(12 + 8 + len(name) for name, _ in listing) + 3
    return struct.pack("<IIHHI", 0, 2, size, 0, parent)


def _sparse_file(blocks: int, size: int) -> tuple[int, int, bytes]:
    """An extended file inode of ``blocks`` sparse blocks (all-zero size words)."""
    fixed = struct.pack("<QQQIIII", 0, size, size, 1, 0xFFFFFFFF, 0, 0xFFFFFFFF)
    return 9, 0o644, fixed + bytes(4 * blocks)


# --- helpers ----------------------------------------------------------------------------


def _run_capped(code: str, *args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a subprocess with the address space capped."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
    )  # fmt: skip


def run_bad(*args: object) -> str:
    result = appimg(*args, check=False, timeout=60, memory_limit=MEMORY_LIMIT)
    assert_one_line_error(result)
    return result.stderr


# --- 1. sparse block lists --------------------------------------------------------------

BLOCKS = 1 << 24  # 2 TiB at 128 KiB blocks


@pytest.fixture(scope="module")
def sparse_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    listing = [("sparse", 1)]
    payload = _image(
        [_sparse_file(BLOCKS, BLOCKS << 17), (1, 0o755, _dir_body(listing, 3))], listing
    )
    assert len(payload) < 1 << 20
    return forge(tmp_path_factory.mktemp("sparse") / "sparse.appimg", payload=payload)


READ_AT = """
import sys, time
from appimg.format.image import Image
with Image.open(sys.argv[1]) as image:
    reader = image.payload
    inode = reader.lookup("/sparse")
    start = time.monotonic()
    for offset in (0, 5 << 17, inode.size // 2 + 1234, inode.size - 3000, 1 << 40):
        for _ in range(3):  # the block list must not be rebuilt per read
            assert reader.read(inode, offset, 4096) == bytes(min(4096, inode.size - offset))
    runs = list(reader.data_ranges(inode))
    print(inode.size, len(runs), round(time.monotonic() - start, 2))
"""


def test_sparse_file_reads_are_bounded(sparse_image: Path) -> None:
    start = time.monotonic()
    result = _run_capped(READ_AT, sparse_image)
    assert result.returncode == 0, result.stderr
    size, runs, _ = result.stdout.split()
    assert int(size) == BLOCKS << 17 and int(runs) == 0
    assert time.monotonic() - start < 30


def test_sparse_file_extracts_sparsely(sparse_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    appimg("extract", sparse_image, out, timeout=60, memory_limit=MEMORY_LIMIT)
    st = (out / "sparse").stat()
    assert st.st_size == BLOCKS << 17
    assert st.st_blocks * 512 < 1 << 20  # holes, not 2 TiB of zeros


def test_extract_refuses_data_beyond_free_space(tmp_path: Path) -> None:
    # 64 blocks of 1 MiB, each stored as a compressed block of zeros: 64 MiB of
    # "real" data from a tiny image, extracted into a 16 MiB tmpfs-like cap.
    block = zlib.compress(bytes(1 << 20), 9)
    n = 64
    fixed = struct.pack("<QQQIIII", 96, n << 20, 0, 1, 0xFFFFFFFF, 0, 0xFFFFFFFF)
    words = struct.pack(f"<{n}I", *([len(block)] * n))
    listing = [("zeros", 1)]
    payload = _image([(9, 0o644, fixed + words), (1, 0o755, _dir_body(listing, 3))], listing,
                     block_log=20, data=block * n)  # fmt: skip
    image = forge(tmp_path / "zeros.appimg", payload=payload)
    from appimg.format import extract as ex

    with Image.open(image) as img, pytest.raises(AppimgError, match="not enough free space"):
        orig = ex.Extractor._free_space
        ex.Extractor._free_space = staticmethod(lambda target: 16 << 20)  # type: ignore[method-assign]
        try:
            ex.extract(img.payload, tmp_path / "out", [])
        finally:
            ex.Extractor._free_space = orig  # type: ignore[method-assign]
    appimg("extract", image, tmp_path / "out2", timeout=60, memory_limit=MEMORY_LIMIT)
    st = (tmp_path / "out2" / "zeros").stat()
    assert st.st_size == n << 20 and st.st_blocks * 512 < 1 << 20  # zero chunks seeked over


def test_free_space_check_counts_files_sharing_an_inode_number(tmp_path: Path) -> None:
    """Two files (nlink 1) whose headers claim the same inode number, over the same
    blocks: both are written, so both count; only real hard links (nlink > 1) are
    counted once (extract links those)."""
    block = zlib.compress(b"\x01" * (1 << 20), 9)
    n = 8
    fixed = struct.pack("<QQQIIII", 96, n << 20, 0, 1, 0xFFFFFFFF, 0, 0xFFFFFFFF)
    words = struct.pack(f"<{n}I", *([len(block)] * n))
    listing = [("a", 1), ("b", 2)]
    payload = _image([(9, 0o644, fixed + words), (9, 0o644, fixed + words),
                      (1, 0o755, _dir_body(listing, 3))], listing,
                     block_log=20, data=block * n, numbers={2: 1})  # fmt: skip
    image = forge(tmp_path / "twins.appimg", payload=payload)
    from appimg.format import extract as ex

    orig = ex.Extractor._free_space
    ex.Extractor._free_space = staticmethod(lambda target: (n << 20) * 3 // 2)  # type: ignore[method-assign]
    try:
        with Image.open(image) as img, pytest.raises(AppimgError, match="not enough free space"):
            ex.extract(img.payload, tmp_path / "out", [])
    finally:
        ex.Extractor._free_space = orig  # type: ignore[method-assign]


# --- 2. xattr bombs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def xattr_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 4096 keys sharing one 64 KiB value: squashfs stores the value once, out of
    # line, so the image is tiny but naive reading materialises 256 MiB. The
    # tree lives on tmpfs (/dev/shm), which takes this many xattrs; the
    # identical values become one out-of-line value in the image.
    base = tmp_path_factory.mktemp("xattr")
    value = bytes([0xAB]) * 65536
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        (Path(shm) / "bomb").write_bytes(b"x")
        try:
            for i in range(4096):
                os.setxattr(Path(shm) / "bomb", f"user.k{i:05}", value)
        except OSError as exc:
            pytest.skip(f"tmpfs does not take the xattrs: {exc}")
        sqfs = base / "bomb.sqfs"
        subprocess.run(
            ["gensquashfs", "-q", "-c", "gzip", "-D", shm, "-x", sqfs],
            check=True, capture_output=True,
        )  # fmt: skip
    assert sqfs.stat().st_size < 1 << 20
    return forge(base / "bomb.appimg", payload=sqfs.read_bytes())


XATTRS = """
import sys
from appimg.errors import AppimgError
from appimg.format.image import Image
with Image.open(sys.argv[1]) as image:
    reader = image.payload
    try:
        reader.xattrs(reader.lookup("/bomb"))
    except AppimgError as exc:
        print(type(exc).__name__, getattr(exc, "errno", None), exc)
"""


def test_shared_out_of_line_xattr_values_are_budgeted(xattr_image: Path) -> None:
    result = _run_capped(XATTRS, xattr_image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("FormatError") and "too large" in result.stdout


# --- 3-8. extract -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def special_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("special")
    tree = write_app(base / "tree")
    (tree / "suid").write_text("#!/bin/sh\n")
    (tree / "suid").chmod(0o6755)
    (tree / "sticky").write_text("x\n")
    (tree / "sticky").chmod(0o1644)
    (tree / "sgid-dir").mkdir()
    (tree / "sgid-dir").chmod(0o2755)
    os.mknod(tree / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(tree / "fifo")
    image = base / "special.appimg"
    appimg("pack", tree, "-o", image)
    return image


def test_extract_drops_setuid_and_skips_devices(special_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = appimg("extract", special_image, out)
    assert (out / "suid").stat().st_mode & 0o7777 == 0o755
    assert (out / "sticky").stat().st_mode & 0o7777 == 0o644
    assert (out / "sgid-dir").stat().st_mode & 0o7777 == 0o755
    assert not (out / "null").exists()
    assert "null" in result.stderr and "device" in result.stderr
    assert (out / "fifo").is_fifo()


def test_extract_refuses_dotdot_paths(special_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    for path in ("../../x", "bin/../../x", ".."):
        assert "'..'" in run_bad("extract", special_image, out, path)
    assert not (tmp_path / "a" / "x").exists() and not (tmp_path / "x").exists()


def test_extract_many_directories_and_deep_trees(tmp_path: Path) -> None:
    try:
        tree = write_app(tmp_path / "tree")
        for i in range(2000):
            (tree / "wide" / f"d{i:04}").mkdir(parents=True)
        deep = tree / "deep"
        deep.mkdir()
        fd = os.open(deep, os.O_RDONLY)
        try:
            for _ in range(1100):  # deeper than Python's recursion limit
                os.mkdir("d", dir_fd=fd)
                nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = nxt
            with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                f.write("leaf\n")
        finally:
            os.close(fd)
        # The project's packer walks its input iteratively: a tree of any depth packs.
        image = tmp_path / "dirs.appimg"
        appimg("pack", tree, "-o", image, "--compression", "lz4", timeout=300)

        def limit() -> None:
            # O(depth) descriptors fit, one per directory (3100) do not.
            resource.setrlimit(resource.RLIMIT_NOFILE, (1400, 1400))

        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "appimg", "extract", str(image), str(out)],
            capture_output=True, text=True, timeout=120, preexec_fn=limit,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert len(os.listdir(out / "wide")) == 2000
        listing = appimg("ls", "-R", image, "deep", timeout=60)
        assert listing.stdout.count("\n") == 1101
        assert listing.stdout.rstrip().endswith("leaf")
    finally:
        # shutil.rmtree (pytest's cleanup) recurses: remove the deep trees first.
        subprocess.run(["rm", "-rf", tmp_path / "tree", tmp_path / "out"], check=True)


@pytest.fixture(scope="module")
def loop_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Root (3) lists "file" (1) and "loop" (2); "loop" shares the root's listing.
    listing = [("file", 1), ("loop", 2)]
    body = _dir_body(listing, 3)
    payload = _image(
        [(2, 0o644, struct.pack("<IIII", 0, 0xFFFFFFFF, 0, 0)), (1, 0o755, body), (1, 0o755, body)],
        listing,
    )
    return forge(tmp_path_factory.mktemp("loop") / "loop.appimg", payload=payload)


def test_directory_loop_is_refused(loop_image: Path, tmp_path: Path) -> None:
    assert "directory loop" in run_bad("extract", loop_image, tmp_path / "out")
    assert "directory loop" in run_bad("ls", "-R", loop_image)
    appimg("ls", loop_image)  # one level is fine


# --- bounded fuzz of the reader behind valid hashes --------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("APPIMG_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def fuzz_payload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return payload_of(pack_small_image(tmp_path_factory.mktemp("fuzz")))


def _read_all(path: Path) -> None:
    with Image.open(path) as image:
        reader = image.payload
        for _, inode in reader.walk():
            if inode.is_file():
                reader.read(inode, 0, inode.size)
                list(reader.data_ranges(inode))
            elif inode.is_symlink():
                reader.readlink(inode)
            reader.xattrs(inode)


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


@contextlib.contextmanager
def _capped_memory(limit: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@settings(
    max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(
    changes=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1, max_size=16,
    )
)  # fmt: skip
def test_fuzz_reader_behind_valid_hashes(fuzz_payload: bytes, tmp_path: Path, changes) -> None:
    payload = bytearray(fuzz_payload)
    for position, value in changes:
        # Most of the payload is data; aim half the changes at the metadata tail.
        if position % 2:
            position = len(payload) - 1 - (position // 2) % 4096
        payload[position % len(payload)] = value
    path = forge(tmp_path / "fuzzed.appimg", payload=bytes(payload))
    # The test process already holds its own address space: cap what reading adds.
    with _capped_memory(_address_space() + MEMORY_LIMIT), contextlib.suppress(AppimgError):
        _read_all(path)
