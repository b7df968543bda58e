"""Integrity: any changed byte outside the payload fails `verify`; payload bytes fail on read."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from appimg.errors import AppimgError, IntegrityError
from appimg.format.image import Image
from appimg.host.dirs import UserDirs
from appimg.services.verify import verify

from ..helpers import appimg, assert_one_line_error, write_app

DIRS = UserDirs(Path("/nonexistent"))
REGIONS = ("head", "appimg-manifest", "appimg-verity", "appimg-signature", "tail")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, keypair) -> Path:
    """An image with a multi-level verity tree (payload > 512 KiB) and two files."""
    base = tmp_path_factory.mktemp("integrity")
    tree = write_app(base / "tree")
    rng = random.Random(7)
    (tree / "first.bin").write_bytes(rng.randbytes(3 << 20))
    (tree / "second.bin").write_bytes(rng.randbytes(3 << 20))
    out = base / "app.appimg"
    appimg("pack", tree, "-o", out, "--sign", keypair[0], "--compression", "lz4")
    return out


def _regions(path: Path) -> dict[str, tuple[int, int]]:
    with Image.open(path) as img:
        layout = img.layout
        regions = {p.name: (p.offset, p.size) for p in layout.partitions}
        regions["head"] = (0, layout.head_size)
        regions["tail"] = (layout.tail_offset, layout.file_size - layout.tail_offset)
    return regions


def _flip(src: Path, dst: Path, offset: int) -> None:
    shutil.copyfile(src, dst)
    with dst.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


@pytest.mark.parametrize("region", REGIONS)
def test_any_flipped_byte_fails_verify(image: Path, tmp_path: Path, region: str) -> None:
    offset, size = _regions(image)[region]
    rng = random.Random(region)
    # Edges, the first 600 bytes densely (headers, JSON), then random samples.
    positions = {0, size - 1, *range(0, min(size, 600), 7), *rng.sample(range(size), 60)}
    bad = tmp_path / "bad.appimg"
    for position in sorted(positions):
        _flip(image, bad, offset + position)
        with pytest.raises(AppimgError):
            verify(bad, DIRS)


@pytest.mark.parametrize("region", REGIONS)
def test_cli_names_what_failed(image: Path, tmp_path: Path, region: str) -> None:
    offset, size = _regions(image)[region]
    bad = tmp_path / "bad.appimg"
    _flip(image, bad, offset + size // 2)
    result = appimg("verify", bad, check=False)
    assert_one_line_error(result)
    words = {
        "head": ("GPT", "MBR"),
        "tail": ("GPT",),
        "appimg-manifest": ("manifest",),
        "appimg-verity": ("verity", "hash", "tree", "superblock", "level"),
        "appimg-signature": ("signature", "statement"),
    }[region]
    assert any(w.lower() in result.stderr.lower() for w in words), result.stderr


def test_payload_change_caught_on_read_and_by_full(image: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.appimg"
    regions = _regions(image)
    payload_offset, _ = regions["appimg-payload"]
    # Change a byte in the middle of the payload: the data of first.bin (written first).
    target = payload_offset + (1 << 20)
    _flip(image, bad, target)
    # Without --full the payload is not read, so verify still passes...
    verify(bad, DIRS)
    assert appimg("verify", bad).returncode == 0
    # ... --full reads every block and fails, naming the block.
    result = appimg("verify", "--full", bad, check=False)
    assert_one_line_error(result)
    assert "payload block" in result.stderr
    # Through the library reader: the changed block fails with EIO, other files still read.
    with Image.open(bad) as img:
        reader = img.payload
        first = reader.lookup("/first.bin")
        with pytest.raises(IntegrityError) as excinfo:
            reader.read(first, 0, first.size)
        assert excinfo.value.errno == 5
        second = reader.lookup("/second.bin")
        assert len(reader.read(second, 0, second.size)) == second.size
        assert reader.read(first, 0, 4096)  # the start of the file is intact


def test_verify_does_not_read_the_payload(image: Path, tmp_path: Path) -> None:
    """Zeroing the whole payload leaves `verify` (without --full) passing: it never reads it."""
    bad = tmp_path / "zeroed.appimg"
    shutil.copyfile(image, bad)
    offset, size = _regions(image)["appimg-payload"]
    with bad.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(size))
    verify(bad, DIRS)
    with pytest.raises(IntegrityError):
        verify(bad, DIRS, full=True)


def test_key_requirement(image: Path, tmp_path: Path, keypair) -> None:
    appimg("verify", "--key", keypair[1], image)
    other = tmp_path / "other.key"
    appimg("keygen", "-o", other)
    result = appimg("verify", "--key", f"{other}.pub", image, check=False)
    assert_one_line_error(result)
    assert "not signed by" in result.stderr
    # sign adds a second signature in place; both keys are then accepted
    signed = tmp_path / "signed.appimg"
    shutil.copyfile(image, signed)
    appimg("sign", signed, "--key", other)
    appimg("verify", "--key", f"{other}.pub", signed)
    appimg("verify", "--key", keypair[1], signed)
