"""Round trips of the on-disk structures and the layout rules (spec/format.md §Container)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from appimg.errors import FormatError
from appimg.format import binary
from appimg.format.container import gpt, structs
from appimg.format.container.partitions import ORDER
from appimg.format.verity.structs import VERITY_SUPERBLOCK


def _layout() -> gpt.DiskLayout:
    sizes = dict(zip(ORDER, (4096, 8192 * 16, 8192, 65536), strict=True))
    return gpt.plan(sizes, {n: uuid.uuid4() for n in ORDER}, uuid.uuid4())


@pytest.mark.parametrize("struct", [structs.GPT_HEADER, structs.GPT_ENTRY, structs.PROTECTIVE_MBR,
                                    VERITY_SUPERBLOCK])  # fmt: skip
def test_struct_round_trip(struct) -> None:
    layout = _layout()
    sample = {
        structs.GPT_HEADER: gpt.head_bytes(layout)[512 : 512 + structs.GPT_HEADER_SIZE],
        structs.GPT_ENTRY: gpt.head_bytes(layout)[1024 : 1024 + 128],
        structs.PROTECTIVE_MBR: gpt.head_bytes(layout)[:512],
    }.get(struct)
    if sample is None:
        from appimg.format.verity.hashtree import VerityParams

        params = VerityParams(bytes(32), bytes(range(32)), 10, uuid.uuid4().bytes)
        sample = params.superblock_block()[: struct.sizeof()]
    assert struct.build(struct.parse(sample)) == sample


def test_layout_reads_back() -> None:
    layout = _layout()
    head, tail = gpt.head_bytes(layout), gpt.tail_bytes(layout)
    assert len(head) == gpt.FIRST_PARTITION_OFFSET
    assert layout.file_size % 4096 == 0
    read = gpt.read_layout(head, tail[-gpt.TAIL_SIZE :], layout.file_size)
    assert read == layout
    assert head[:10] == b"#!/bin/sh\n"
    assert head[510:512] == b"\x55\xaa"


def test_partitions_are_aligned_and_contiguous() -> None:
    layout = _layout()
    offset = gpt.FIRST_PARTITION_OFFSET
    for part in layout.partitions:
        assert part.offset == offset and part.offset % 4096 == 0
        offset = part.end


def test_parse_errors_become_format_errors() -> None:
    with pytest.raises(FormatError):
        binary.parse(structs.GPT_HEADER, b"short", "GPT header")
    with pytest.raises(FormatError):
        gpt.read_layout(bytes(gpt.FIRST_PARTITION_OFFSET), bytes(gpt.TAIL_SIZE), 1 << 20)


def test_stub_fits_the_boot_code_area() -> None:
    assert len(gpt.STUB) <= 440
    assert gpt.STUB.startswith(b"#!/bin/sh\n")


def test_the_stub_is_the_one_spec_format_md_gives() -> None:
    """§2.1 gives the stub's bytes, their count and the zero padding after them."""
    text = (Path(__file__).resolve().parents[2] / "spec" / "format.md").read_text("utf-8")
    section = text[text.index("### 2.1 The stub") :]
    shown = section[section.index("```sh\n") + 6 :]
    assert shown[: shown.index("```")].encode("ascii") == gpt.STUB
    count = f"exactly these {len(gpt.STUB)} bytes"
    padding = f"followed by {440 - len(gpt.STUB)} zero bytes"
    assert count in section and padding in section


def test_an_image_with_an_earlier_v1_stub_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images packed before the stub changed keep opening and verifying (§2.1): the
    reader takes every stub v1 writers have written, and nothing else."""
    from appimg.format import packer
    from appimg.format.image import Image

    from ..helpers import appimg, write_app

    monkeypatch.setattr(gpt, "STUB", gpt.EARLIER_STUBS[0])
    image = tmp_path / "old.appimg"
    packer.pack(write_app(tmp_path / "tree"), image, packer.PackOptions(),
                {"SOURCE_DATE_EPOCH": "0"})  # fmt: skip
    monkeypatch.undo()
    assert image.read_bytes().startswith(gpt.EARLIER_STUBS[0])
    with Image.open(image) as opened:
        assert opened.manifest["name"] == "Tree"
    assert appimg("verify", "--full", image).returncode == 0  # a fresh process, today's stub
    # Any other boot code is refused, whatever the statement says of the head.
    data = bytearray(image.read_bytes())
    data[200:201] = b"X"
    image.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="not as a v1 writer writes them"):
        Image.open(image)
