"""Round trip: extract reproduces the packed tree exactly; reference tools agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PySquashfsImage import SquashFsImage

from appimg.format.image import Image

from ..helpers import appimg, make_rich_tree, relax_readonly, snapshot


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rich")
    tree = make_rich_tree(base / "tree")
    image = base / "rich.appimg"
    appimg("pack", tree, "-o", image)
    yield tree, image
    relax_readonly(base)


@pytest.mark.parametrize("compression", ["zstd", "xz", "lz4", "gzip"])
def test_extract_reproduces_tree(tmp_path: Path, compression: str) -> None:
    tree = make_rich_tree(tmp_path / "tree")
    image = tmp_path / "app.appimg"
    appimg("pack", tree, "-o", image, "--compression", compression, "--block-size", "64K")
    appimg("extract", image, tmp_path / "out")
    try:
        expected = snapshot(tree)
        kind, mode, data = expected["data/setuid-like"]
        expected["data/setuid-like"] = (kind, mode & 0o777, data)  # extract drops setuid
        assert snapshot(tmp_path / "out") == expected
    finally:
        relax_readonly(tmp_path)


def test_extract_selected_paths(rich: tuple[Path, Path], tmp_path: Path) -> None:
    _, image = rich
    appimg("extract", image, tmp_path / "out", "names", "data/small.txt")
    assert (tmp_path / "out" / "data" / "small.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "out" / "names" / "new\nline").read_bytes() == b"newline\n"
    assert not (tmp_path / "out" / "many").exists()


def _payload_file(image_path: Path, tmp_path: Path) -> Path:
    with Image.open(image_path) as image:
        part = image.partition("appimg-payload")
    payload = tmp_path / "payload.sqfs"
    with image_path.open("rb") as src:
        src.seek(part.offset)
        payload.write_bytes(src.read(part.size))
    return payload


def test_pysquashfsimage_agrees(rich: tuple[Path, Path], tmp_path: Path) -> None:
    """PySquashfsImage, an independent reader, sees the same files and bytes as the input."""
    tree, image_path = rich
    payload = _payload_file(image_path, tmp_path)
    expected = snapshot(tree)
    seen = {}
    with SquashFsImage.from_file(str(payload)) as sqfs:
        for entry in sqfs:
            rel = entry.path.lstrip("/")
            if not rel:
                continue
            if entry.is_symlink:
                seen[rel] = entry.readlink()
            elif entry.is_file:
                seen[rel] = entry.read_bytes()
    for rel, (_, _, detail) in expected.items():
        if isinstance(detail, tuple):
            detail = detail[0]
        if detail is not None:
            assert seen[rel] == detail, rel


def test_unsquashfs_lists_and_extracts(rich: tuple[Path, Path], tmp_path: Path) -> None:
    tree, image_path = rich
    with Image.open(image_path) as image:
        offset = image.partition("appimg-payload").offset
    listing = subprocess.run(
        ["unsquashfs", "-o", str(offset), "-lc", str(image_path)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    assert "squashfs-root/data/multi-block.bin" in listing
    out = tmp_path / "unsq"
    subprocess.run(
        ["unsquashfs", "-o", str(offset), "-d", str(out), str(image_path)],
        capture_output=True, check=True,
    )  # fmt: skip
    try:
        assert snapshot(out) == snapshot(tree)
    finally:
        relax_readonly(tmp_path)


def test_cat_and_ls(rich: tuple[Path, Path]) -> None:
    tree, image = rich
    assert (
        appimg("cat", image, "data/multi-block.bin").stdout_bytes
        == (tree / "data" / "multi-block.bin").read_bytes()
    )
    # Symlinks are followed inside the image only.
    assert appimg("cat", image, "data/link-rel").stdout_bytes == b"hello\n"
    listing = appimg("ls", image, "data").stdout
    assert "link-rel -> small.txt" in listing
    assert "-rwsr-xr-x" in listing
    rows = {
        r["path"]: r for r in __import__("json").loads(appimg("ls", "--json", "-R", image).stdout)
    }
    assert rows["/names/new\nline"]["type"] == "file"
    assert rows["/data/link-escape"]["target"] == "../../../../etc"
    assert rows["/names/hardlink-to-small"]["nlink"] == 2
