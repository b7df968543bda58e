"""§11.1 opening checks where the spec and the reader were made to agree.

Each image here is re-sealed by :func:`tests.forge.reseal` (GPT CRCs, head and tail
digests, statement) so that only the one rule a test breaks can fail: the container
bytes a v1 writer MUST write (§3.3 step 12), the exact partition sizes, and the
error-class rule of §8.2 (malformed member: FormatError; well-formed value that
contradicts the file: IntegrityError).
"""

from __future__ import annotations

import shutil
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appimg.errors import FormatError, IntegrityError
from appimg.format.image import Image

from ..forge import grow_partition, reseal


@pytest.fixture
def image(tmp_path: Path, hello_image: Path) -> Path:
    return Path(shutil.copy(hello_image, tmp_path / "copy.appimg"))


def test_reseal_alone_keeps_the_image_valid(image: Path) -> None:
    reseal(image)
    with Image.open(image) as opened:
        assert opened.signature_block.signatures == []


# -- §3.3 step 12: the head and tail are exactly what a v1 writer writes ---------------------

LAST = -512  # the backup header's sector
CONTAINER_EDITS = {
    "stub text": (30, b"X"),
    "MBR disk signature": (440, b"\x01"),
    "MBR record 1": (462, b"\x01"),
    "MBR record 3": (494 + 4, b"\x83"),
    "protective record CHS": (446 + 1, b"\x00\x00\x00"),
    "primary header Reserved": (512 + 20, b"\x01"),
    "entry 0 attributes": (1024 + 48, struct.pack("<Q", 0)),
    "entry 1 attributes, an extra bit": (1024 + 128 + 48, struct.pack("<Q", 1 << 60 | 1)),
    "zero sectors 34-39": (17408 + 100, b"\x01"),
    "backup header Reserved": (LAST + 20, b"\x01"),
    "backup PartitionEntryLBA": (LAST + 72, struct.pack("<Q", 2)),
    "zero gap before the backup array": (-20480 + 7, b"\x01"),
}


@pytest.mark.parametrize("what", CONTAINER_EDITS)
def test_container_bytes_a_writer_must_write_are_checked(image: Path, what: str) -> None:
    offset, value = CONTAINER_EDITS[what]

    def edit(data: bytearray) -> None:
        at = offset if offset >= 0 else len(data) + offset
        data[at : at + len(value)] = value
        if 1024 <= offset < 1024 + 16384:  # an entry: the backup array must mirror it
            at = len(data) - 512 - 16384 + offset - 1024
            data[at : at + len(value)] = value

    reseal(image, edit)
    with pytest.raises(FormatError, match=r"as a v1 writer|gap before the backup"):
        Image.open(image).close()


# -- exact partition sizes (§4, §6, §7.3) ------------------------------------------------------


@pytest.mark.parametrize("name", ["appimg-manifest", "appimg-verity"])
def test_manifest_and_verity_partitions_have_exactly_their_aligned_size(
    image: Path, name: str
) -> None:
    grow_partition(image, name)
    with pytest.raises(FormatError, match=r"manifest partition|verity partition"):
        Image.open(image).close()


# -- the error-class rule for statement members (§8.2) -----------------------------------------


def _set(*path: Any, to: object) -> Callable[[dict[str, Any]], None]:
    def change(statement: dict[str, Any]) -> None:
        target = statement
        for key in path[:-1]:
            target = target[key]
        if to is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = to

    return change


MALFORMED = {
    "unknown disk member": _set("disk", "extra", to=1),
    "unknown manifest member": _set("manifest", "extra", to=1),
    "unknown partition member": _set("partitions", 0, "extra", to=1),
    "missing disk.head_sha256": _set("disk", "head_sha256", to=KeyError),
    "missing manifest.sha256": _set("manifest", "sha256", to=KeyError),
    "string disk.size": _set("disk", "size", to="118784"),
    "boolean disk.size": _set("disk", "size", to=True),
    "uppercase disk.guid": lambda s: s["disk"].update(guid=s["disk"]["guid"].upper()),
    "braced disk.guid": lambda s: s["disk"].update(guid="{" + s["disk"]["guid"] + "}"),
    "uppercase head_sha256": lambda s: s["disk"].update(
        head_sha256=s["disk"]["head_sha256"].upper()
    ),
    "short tail_sha256": lambda s: s["disk"].update(tail_sha256="00"),
    "partitions not a list": _set("partitions", to={}),
    "three partitions": lambda s: s["partitions"].pop(),
    "boolean partition offset": _set("partitions", 0, "offset", to=True),
    "string partition size": _set("partitions", 1, "size", to="4096"),
    "uppercase partition uuid": lambda s: s["partitions"][2].update(
        uuid=s["partitions"][2]["uuid"].upper()
    ),
    "boolean manifest.size": _set("manifest", "size", to=True),
    "uppercase manifest.sha256": lambda s: s["manifest"].update(
        sha256=s["manifest"]["sha256"].upper()
    ),
    "integer app_id": _set("app_id", to=1),
    "null app_version": _set("app_version", to=None),
    "boolean verity.data_blocks": _set("verity", "data_blocks", to=True),
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_statement_members_are_format_errors(image: Path, what: str) -> None:
    reseal(image, statement=MALFORMED[what])
    with pytest.raises(FormatError):
        Image.open(image).close()


CONTRADICTING = {
    "disk.size": _set("disk", "size", to=4096),
    "disk.guid": _set("disk", "guid", to=str(uuid.UUID(int=1))),
    "disk.head_sha256": _set("disk", "head_sha256", to="0" * 64),
    "partition offset": _set("partitions", 0, "offset", to=24576),
    "partition uuid": _set("partitions", 3, "uuid", to=str(uuid.UUID(int=2))),
    "manifest.sha256": _set("manifest", "sha256", to="0" * 64),
    "app_id": _set("app_id", to="org.example.Other"),
}


@pytest.mark.parametrize("what", CONTRADICTING)
def test_well_formed_values_that_contradict_the_file_are_integrity_errors(
    image: Path, what: str
) -> None:
    reseal(image, statement=CONTRADICTING[what])
    with pytest.raises(IntegrityError):
        Image.open(image).close()
