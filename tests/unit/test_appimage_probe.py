"""Finding an AppImage's filesystem without running it (spec/manifest.md §7.1): the
offset from the ELF header, the metadata sections, and links that leave the image.
Corrupt runtimes raise UsageError and nothing else."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from appimg.errors import UsageError
from appimg.services.authoring import appimage

BUSYBOX = shutil.which("busybox")


@pytest.mark.parametrize(
    ("link", "target", "escapes"),
    [
        ("/AppRun", "usr/bin/app", False),
        ("/usr/lib/libx.so", "libx.so.1", False),
        ("/usr/lib/libx.so", "../../usr/lib/libx.so.1", False),
        ("/usr/lib/up", "../../..", True),
        ("/usr/lib/up", "../../../etc/passwd", True),
        ("/usr/lib/a", "./b/../../../x", False),
        ("/usr/lib/a", "./b/../../../../x", True),
        ("/x", "/etc/passwd", True),
        ("/.DirIcon", "app.png", False),
    ],
)
def test_links_that_leave_the_image(link: str, target: str, escapes: bool) -> None:
    assert appimage._escapes(link, target) is escapes


def _runtime(tmp_path: Path, magic: bytes = b"AI\x02", extra: bytes = b"hsqs") -> Path:
    assert BUSYBOX is not None
    data = bytearray(Path(BUSYBOX).read_bytes())
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    end = shoff + shnum * shentsize
    data = data[:end].ljust(end, b"\0")
    data[8:11] = magic
    path = tmp_path / "a.AppImage"
    path.write_bytes(bytes(data) + extra)
    return path


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox, a static ELF to stand in")
def test_offset_is_the_end_of_the_section_header_table(tmp_path: Path) -> None:
    path = _runtime(tmp_path)
    info = appimage.probe(path)
    assert info.offset == os.path.getsize(path) - 4
    assert (info.update_info, info.signed, info.has_key) == ("", False, False)


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox, a static ELF to stand in")
def test_corrupt_runtimes_raise_usage_errors(tmp_path: Path) -> None:
    path = _runtime(tmp_path)
    good = path.read_bytes()
    with pytest.raises(UsageError, match="type 1 AppImage"):
        appimage.probe(_runtime(tmp_path, magic=b"AI\x01"))
    with pytest.raises(UsageError, match="past the end"):
        appimage.probe(_runtime(tmp_path, extra=b""))
    for cut in (0, 8, 20, 63):
        path.write_bytes(good[:cut])
        with pytest.raises(UsageError):
            appimage.probe(path)
    # Flipped header fields: every outcome is a UsageError or a probe that found an offset.
    for where in range(16, 64):
        data = bytearray(good)
        data[where] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            info = appimage.probe(path)
        except UsageError:
            continue
        assert 0 < info.offset < len(data)
