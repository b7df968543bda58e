"""Bad input: one clear error line, non-zero exit, bounded time and memory, never a traceback."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appimg.errors import AppimgError
from appimg.format.image import Image

from ..forge import forge, payload_of
from ..helpers import appimg, assert_one_line_error, pack_small_image, write_app

#: Address-space cap for the CLI under hostile input: allocations must stay bounded.
MEMORY_LIMIT = 1 << 30


def run_bad(*args: object) -> None:
    result = appimg(*args, check=False, timeout=60, memory_limit=MEMORY_LIMIT)
    assert_one_line_error(result)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.appimg"
    empty.write_bytes(b"")
    for command in ("inspect", "verify", "ls"):
        run_bad(command, empty)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    run_bad("inspect", tmp_path / "missing.appimg")
    run_bad("verify", tmp_path)
    run_bad("extract", tmp_path, tmp_path / "out")
    run_bad("pack", tmp_path / "missing-dir")


def test_random_bytes_and_wrong_magic(tmp_path: Path, hello_image: Path) -> None:
    noise = tmp_path / "noise.appimg"
    noise.write_bytes(random.Random(1).randbytes(200_000))
    run_bad("inspect", noise)
    wrong = tmp_path / "wrong.appimg"
    data = bytearray(hello_image.read_bytes())
    data[510:512] = b"\0\0"  # MBR signature
    wrong.write_bytes(data)
    run_bad("verify", wrong)
    data = bytearray(hello_image.read_bytes())
    data[512:520] = b"NOT PART"  # GPT signature
    wrong.write_bytes(data)
    run_bad("verify", wrong)


def test_truncated_at_many_points(tmp_path: Path, hello_image: Path) -> None:
    data = hello_image.read_bytes()
    cut = tmp_path / "cut.appimg"
    ends = {len(data) // 2, len(data) - 4096, len(data) - 512, len(data) - 1}
    sampled = random.Random(2).sample(range(len(data)), 20)
    points = sorted({1, 511, 512, 1024, 20480, 24576, *ends, *sampled})
    for point in points:
        cut.write_bytes(data[:point])
        with pytest.raises(AppimgError):
            Image.open(cut).close()
    for point in points[:: max(1, len(points) // 5)]:
        cut.write_bytes(data[:point])
        run_bad("inspect", cut)


def _rewrite_gpt(data: bytearray, edit) -> None:
    """Apply ``edit(header: bytearray, entries: bytearray)`` and fix both CRCs (primary)."""
    header = bytearray(data[512:604])
    entries = bytearray(data[1024 : 1024 + 128 * 128])
    edit(header, entries)
    header[88:92] = struct.pack("<I", zlib.crc32(entries))
    header[16:20] = b"\0\0\0\0"
    header[16:20] = struct.pack("<I", zlib.crc32(header))
    data[512:604] = header
    data[1024 : 1024 + len(entries)] = entries


def test_bad_gpt_crcs(tmp_path: Path, hello_image: Path) -> None:
    bad = tmp_path / "bad.appimg"
    data = bytearray(hello_image.read_bytes())
    data[512 + 16] ^= 0xFF  # header CRC
    bad.write_bytes(data)
    run_bad("inspect", bad)
    data = bytearray(hello_image.read_bytes())
    data[1024 + 40] ^= 0xFF  # an entry, so the array CRC no longer matches
    bad.write_bytes(data)
    run_bad("inspect", bad)


@pytest.mark.parametrize(
    "case",
    ["overlap", "outside-file", "huge-entry-count", "tiny-entry-size", "end-before-start",
     "unknown-type", "swapped"],
)  # fmt: skip
def test_hostile_partition_tables(tmp_path: Path, hello_image: Path, case: str) -> None:
    def edit(header: bytearray, entries: bytearray) -> None:
        first = lambda i: 128 * i + 32  # noqa: E731  (offset of starting_lba in entry i)
        if case == "overlap":
            entries[first(1) : first(1) + 8] = struct.pack("<Q", 44)
        elif case == "outside-file":
            entries[first(3) + 8 : first(3) + 16] = struct.pack("<Q", 10**12)
        elif case == "huge-entry-count":
            header[80:84] = struct.pack("<I", 0xFFFFFFFF)
        elif case == "tiny-entry-size":
            header[84:88] = struct.pack("<I", 1)
        elif case == "end-before-start":
            entries[first(2) + 8 : first(2) + 16] = struct.pack("<Q", 1)
        elif case == "unknown-type":
            entries[0:16] = os.urandom(16)
        elif case == "swapped":
            entries[0:128], entries[128:256] = entries[128:256], entries[0:128]

    bad = tmp_path / "bad.appimg"
    data = bytearray(hello_image.read_bytes())
    _rewrite_gpt(data, edit)
    bad.write_bytes(data)
    run_bad("inspect", bad)
    with pytest.raises(AppimgError):
        Image.open(bad).close()


def test_invalid_and_oversized_manifest(tmp_path: Path, hello_image: Path) -> None:
    payload = payload_of(hello_image)
    cases = {
        "not-json": b"{not json",
        "not-canonical": b'{ "id": 1 }',
        "float": b'{"format_version":1.5}',
        "bad-id": None,
        "oversized": b'{"name":"' + b"x" * (300 * 1024) + b'"}',
    }
    for name, raw in cases.items():
        image = tmp_path / f"{name}.appimg"
        if raw is None:
            manifest = {
                "format_version": 1, "id": "not reverse dns", "name": "X", "version": "1",
                "arch": "x86_64", "entrypoint": "bin/hello", "profile": "none",
            }  # fmt: skip
            forge(image, payload=payload, manifest=manifest)
        else:
            forge(image, payload=payload, manifest_json=raw)
        run_bad("inspect", image)


def test_unknown_format_version(tmp_path: Path, hello_image: Path) -> None:
    manifest = {
        "format_version": 2, "id": "org.example.Future", "name": "X", "version": "1",
        "arch": "x86_64", "entrypoint": "bin/hello", "profile": "none",
    }  # fmt: skip
    image = forge(tmp_path / "v2.appimg", payload=payload_of(hello_image), manifest=manifest)
    result = appimg("inspect", image, check=False)
    assert_one_line_error(result)
    assert "unknown format version 2" in result.stderr


def test_payload_that_is_not_squashfs(tmp_path: Path) -> None:
    image = forge(tmp_path / "junk.appimg", payload=random.Random(3).randbytes(64 * 1024))
    appimg("verify", image)  # the hashes are all consistent...
    run_bad("verify", "--full", image)  # ... but the payload is not a filesystem (§11.3)
    run_bad("ls", image)
    run_bad("extract", image, tmp_path / "out")


def test_huge_directory_and_names_are_bounded(tmp_path: Path) -> None:
    """A real payload with a 20k-entry directory lists in bounded time and memory."""
    tree = write_app(tmp_path / "tree")
    big = tree / "big"
    big.mkdir()
    for i in range(20_000):
        (big / f"{'n' * 200}{i:06}").touch()
    image = tmp_path / "big.appimg"
    appimg("pack", tree, "-o", image, "--compression", "lz4")
    result = appimg("ls", image, "big", timeout=60, memory_limit=MEMORY_LIMIT)
    assert len(result.stdout.splitlines()) == 20_000


def test_pack_refuses_bad_app_dirs(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    (app / "appimg.toml").write_text(
        'id = "bad"\nname = "x"\nversion = "1"\nentrypoint = "bin/app"\n'
    )
    run_bad("pack", app, "-o", tmp_path / "x.appimg")
    (app / "appimg.toml").write_text("this is = not toml [")
    run_bad("pack", app, "-o", tmp_path / "x.appimg")
    write_app(app)
    (app / "bin" / "app").chmod(0o644)
    run_bad("pack", app, "-o", tmp_path / "x.appimg")
    (app / "bin" / "app").chmod(0o755)
    run_bad("pack", app, "-o", tmp_path / "x.appimg", "--level", "99")
    run_bad("pack", app, "-o", app / "inside.appimg")
    assert not (tmp_path / "x.appimg").exists()


# --- property: mutated images raise only appimg's own errors ----------------------------


def _read_everything(path: Path) -> None:
    with Image.open(path) as image:
        image.check_tree()
        reader = image.payload
        for _, inode in reader.walk():
            if inode.is_file():
                reader.read(inode, 0, inode.size)
            elif inode.is_symlink():
                reader.readlink(inode)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pack_small_image(tmp_path_factory.mktemp("mut"))


FIXTURE_CHECK = HealthCheck.function_scoped_fixture
mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    min_size=1, max_size=8,
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations)
def test_mutated_images_raise_only_our_errors(small_image: Path, tmp_path: Path, changes) -> None:
    data = bytearray(small_image.read_bytes())
    for position, value in changes:
        data[position % len(data)] = value
    path = tmp_path / "mutated.appimg"
    path.write_bytes(data)
    with contextlib.suppress(AppimgError):
        _read_everything(path)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations, cut=st.one_of(st.none(), st.integers(min_value=96)))
def test_mutated_payloads_behind_valid_hashes(
    small_image: Path, tmp_path: Path, changes, cut
) -> None:
    """The hostile case: corrupt squashfs wrapped in a consistent verity tree and statement."""
    payload = bytearray(payload_of(small_image))
    for position, value in changes:
        payload[position % len(payload)] = value
    if cut is not None:
        payload = payload[: cut % len(payload)]
    path = forge(tmp_path / "forged.appimg", payload=bytes(payload) or b"\0")
    with contextlib.suppress(AppimgError):
        _read_everything(path)


def test_copy_of_image_is_unchanged_by_reading(small_image: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.appimg"
    shutil.copyfile(small_image, copy)
    _read_everything(copy)
    assert copy.read_bytes() == small_image.read_bytes()
