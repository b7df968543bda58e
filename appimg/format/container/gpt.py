"""Writing and reading the GPT of an appimg image (spec/format.md §Container).

The layout is fixed: LBA 0 protective MBR, LBA 1 header, LBA 2-33 the 128-entry
array, the partitions from LBA 40 (4 KiB aligned, contiguous), and the backup
array and header in the last 33 sectors. The file size is a multiple of 4 KiB.
:class:`DiskLayout` says where everything goes; the structures are in
:mod:`.structs`, parsed and built through :mod:`appimg.format.binary`. Reading
(§3.3) checks the fields a reader relies on one by one, then rebuilds the head
and tail for the layout read and compares them byte for byte, so every other byte
a v1 writer MUST write is checked too.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass

import construct as cs

from appimg.errors import FormatError
from appimg.format import binary
from appimg.format.container import structs
from appimg.format.container.partitions import (
    ATTR_READ_ONLY,
    NAMES_BY_TYPE,
    ORDER,
    TYPE_GUIDS,
    Partition,
)
from appimg.format.limits import ALIGNMENT, GPT_ENTRY_COUNT, GPT_ENTRY_SIZE, SECTOR_SIZE

ENTRY_ARRAY_SIZE = GPT_ENTRY_COUNT * GPT_ENTRY_SIZE
ENTRY_ARRAY_SECTORS = ENTRY_ARRAY_SIZE // SECTOR_SIZE
#: First byte of the first partition: after MBR, header and array, rounded up to 4 KiB.
FIRST_PARTITION_OFFSET = 40 * SECTOR_SIZE
#: Backup array and header at the end of the disk.
TAIL_SIZE = (ENTRY_ARRAY_SECTORS + 1) * SECTOR_SIZE
GPT_REVISION = 0x00010000

STUB = b"""#!/bin/sh
# This file is an appimg image: a disk image holding an app. See appimg(1).
if command -v appimg >/dev/null 2>&1; then exec appimg run "$0" -- "$@"; fi
echo "$0: appimg is not installed; install it (pip install appimg) to run this app" >&2
exit 127
"""
assert len(STUB) <= 440


def align(value: int, to: int = ALIGNMENT) -> int:
    return -(-value // to) * to


@dataclass(frozen=True)
class DiskLayout:
    """Where everything goes in an image of the given partition sizes."""

    partitions: tuple[Partition, ...]
    disk_guid: uuid.UUID
    file_size: int

    @property
    def head_size(self) -> int:
        return self.partitions[0].offset

    @property
    def tail_offset(self) -> int:
        return self.partitions[-1].end

    def by_name(self, name: str) -> Partition:
        for part in self.partitions:
            if part.name == name:
                return part
        raise KeyError(name)


def plan(
    sizes: dict[str, int], partition_uuids: dict[str, uuid.UUID], disk_guid: uuid.UUID
) -> DiskLayout:
    """Place the four partitions (sizes already 4 KiB multiples) contiguously."""
    offset = FIRST_PARTITION_OFFSET
    parts = []
    for name in ORDER:
        size = sizes[name]
        if size <= 0 or size % ALIGNMENT:
            raise ValueError(f"partition {name} size {size} is not a positive multiple of 4 KiB")
        parts.append(Partition(name, TYPE_GUIDS[name], partition_uuids[name], offset, size))
        offset += size
    file_size = align(offset + TAIL_SIZE)
    return DiskLayout(tuple(parts), disk_guid, file_size)


def _entry_array(layout: DiskLayout) -> bytes:
    array = bytearray(ENTRY_ARRAY_SIZE)
    for index, part in enumerate(layout.partitions):
        entry = binary.build(
            structs.GPT_ENTRY,
            {
                "partition_type_guid": part.type_guid.bytes_le,
                "unique_partition_guid": part.uuid.bytes_le,
                "starting_lba": part.offset // SECTOR_SIZE,
                "ending_lba": part.end // SECTOR_SIZE - 1,
                "attributes": ATTR_READ_ONLY,
                "partition_name": part.name.encode("utf-16-le").ljust(72, b"\0"),
            },
            f"GPT entry {index}",
        )
        array[index * GPT_ENTRY_SIZE : (index + 1) * GPT_ENTRY_SIZE] = entry
    return bytes(array)


def _header(layout: DiskLayout, array_crc: int, backup: bool) -> bytes:
    last_lba = layout.file_size // SECTOR_SIZE - 1
    fields = {
        "revision": GPT_REVISION,
        "header_size": structs.GPT_HEADER_SIZE,
        "header_crc32": 0,
        "reserved": 0,
        "my_lba": last_lba if backup else 1,
        "alternate_lba": 1 if backup else last_lba,
        "first_usable_lba": 2 + ENTRY_ARRAY_SECTORS,
        "last_usable_lba": last_lba - 1 - ENTRY_ARRAY_SECTORS,
        "disk_guid": layout.disk_guid.bytes_le,
        "partition_entry_lba": (last_lba - ENTRY_ARRAY_SECTORS) if backup else 2,
        "number_of_partition_entries": GPT_ENTRY_COUNT,
        "size_of_partition_entry": GPT_ENTRY_SIZE,
        "partition_entry_array_crc32": array_crc,
    }
    what = "GPT backup header" if backup else "GPT primary header"
    fields["header_crc32"] = zlib.crc32(binary.build(structs.GPT_HEADER, fields, what))
    return binary.build(structs.GPT_HEADER, fields, what).ljust(SECTOR_SIZE, b"\0")


def _protective_mbr(file_size: int) -> bytes:
    sectors = file_size // SECTOR_SIZE
    record = {
        "boot_indicator": 0,
        "starting_chs": b"\x00\x02\x00",
        "os_type": 0xEE,
        "ending_chs": b"\xff\xff\xff",
        "starting_lba": 1,
        "size_in_lba": min(sectors - 1, 0xFFFFFFFF),
    }
    empty = {
        "boot_indicator": 0,
        "starting_chs": bytes(3),
        "os_type": 0,
        "ending_chs": bytes(3),
        "starting_lba": 0,
        "size_in_lba": 0,
    }
    return binary.build(
        structs.PROTECTIVE_MBR,
        {
            "boot_code": STUB.ljust(440, b"\0"),
            "unique_mbr_disk_signature": 0,
            "unknown": 0,
            "partition_record": [record, empty, empty, empty],
        },
        "protective MBR",
    )


def head_bytes(layout: DiskLayout) -> bytes:
    """Everything before the first partition: MBR, primary header, array, zero gap."""
    array = _entry_array(layout)
    head = _protective_mbr(layout.file_size) + _header(layout, zlib.crc32(array), backup=False)
    return (head + array).ljust(layout.head_size, b"\0")


def tail_bytes(layout: DiskLayout) -> bytes:
    """Everything after the last partition: zero gap, backup array, backup header."""
    array = _entry_array(layout)
    tail = array + _header(layout, zlib.crc32(array), backup=True)
    return tail.rjust(layout.file_size - layout.tail_offset, b"\0")


# --- reading ---------------------------------------------------------------------------


def _check_header(raw: bytes, where: str, offset: int) -> cs.Container:
    header = binary.parse(
        structs.GPT_HEADER, raw[: structs.GPT_HEADER_SIZE], f"GPT {where} header", offset
    )
    if header.header_size != structs.GPT_HEADER_SIZE:
        raise FormatError(f"GPT {where} header: unsupported header size {header.header_size}")
    fields = dict(header)
    fields.pop("_io", None)
    fields["header_crc32"] = 0
    raw_fields = binary.build(structs.GPT_HEADER, fields, f"GPT {where} header")
    if zlib.crc32(raw_fields) != header.header_crc32:
        raise FormatError(f"GPT {where} header: CRC32 mismatch")
    if header.revision != GPT_REVISION:
        raise FormatError(f"GPT {where} header: unsupported revision {header.revision:#x}")
    if (
        header.number_of_partition_entries != GPT_ENTRY_COUNT
        or header.size_of_partition_entry != GPT_ENTRY_SIZE
    ):
        raise FormatError(
            f"GPT {where} header: {header.number_of_partition_entries} entries of "
            f"{header.size_of_partition_entry} bytes (v1 requires {GPT_ENTRY_COUNT} of "
            f"{GPT_ENTRY_SIZE})"
        )
    if any(raw[structs.GPT_HEADER_SIZE : SECTOR_SIZE]):
        raise FormatError(f"GPT {where} header: reserved bytes are not zero")
    return header


def read_layout(head: bytes, tail: bytes, file_size: int) -> DiskLayout:
    """Validate the MBR and both GPTs; return the layout of the four partitions.

    ``head`` is the file's first FIRST_PARTITION_OFFSET bytes and ``tail`` its last
    TAIL_SIZE bytes. Raises FormatError for anything a v1 writer would not produce.
    """
    if file_size < FIRST_PARTITION_OFFSET + TAIL_SIZE or len(head) < FIRST_PARTITION_OFFSET:
        raise FormatError(f"file is too small to be an appimg image ({file_size} bytes)")
    if file_size % ALIGNMENT:
        raise FormatError(f"file size {file_size} is not a multiple of 4 KiB (truncated?)")
    mbr = binary.parse(structs.PROTECTIVE_MBR, head[:SECTOR_SIZE], "protective MBR", 0)
    if not mbr.boot_code.startswith(b"#!/bin/sh\n") or mbr.partition_record[0].os_type != 0xEE:
        raise FormatError("not an appimg image (no protective MBR with the appimg stub)")
    primary = _check_header(head[SECTOR_SIZE : 2 * SECTOR_SIZE], "primary", SECTOR_SIZE)
    last_lba = file_size // SECTOR_SIZE - 1
    if primary.my_lba != 1 or primary.partition_entry_lba != 2 or primary.alternate_lba != last_lba:
        raise FormatError("GPT primary header: LBAs do not match the file (truncated or resized?)")
    array = head[2 * SECTOR_SIZE : 2 * SECTOR_SIZE + ENTRY_ARRAY_SIZE]
    if zlib.crc32(array) != primary.partition_entry_array_crc32:
        raise FormatError("GPT primary partition entry array: CRC32 mismatch")
    backup = _check_header(tail[-SECTOR_SIZE:], "backup", file_size - SECTOR_SIZE)
    backup_array = tail[-SECTOR_SIZE - ENTRY_ARRAY_SIZE : -SECTOR_SIZE]
    if zlib.crc32(backup_array) != backup.partition_entry_array_crc32:
        raise FormatError("GPT backup partition entry array: CRC32 mismatch")
    if backup_array != array or backup.my_lba != last_lba or backup.alternate_lba != 1:
        raise FormatError("GPT backup does not mirror the primary GPT")
    for key in ("first_usable_lba", "last_usable_lba", "disk_guid"):
        if primary[key] != backup[key]:
            raise FormatError(f"GPT backup header: {key} differs from the primary header")
    first_usable, last_usable = primary.first_usable_lba, primary.last_usable_lba
    if first_usable != 2 + ENTRY_ARRAY_SECTORS or last_usable != last_lba - 1 - ENTRY_ARRAY_SECTORS:
        raise FormatError("GPT header: usable LBA range does not match the v1 layout")

    parts = _read_entries(array, first_usable, last_usable)
    # v1 places the partitions contiguously from LBA 40 and ends the file right after
    # the backup GPT (rounded to 4 KiB): this also bounds what the head and tail hold.
    offset = FIRST_PARTITION_OFFSET
    for part in parts:
        if part.offset != offset:
            raise FormatError(f"partition {part.name}: not where the v1 layout puts it")
        offset = part.end
    if file_size != align(offset + TAIL_SIZE):
        raise FormatError("the file does not end right after the backup GPT (resized?)")
    layout = DiskLayout(tuple(parts), uuid.UUID(bytes_le=primary.disk_guid), file_size)
    # §3.3 step 12: everything else in the head and tail (the stub, MBR records 1-3,
    # reserved fields, attributes, name padding, the backup PartitionEntryLBA, the zero
    # gaps) has exactly one v1 value; rebuilding is simpler than checking each field.
    if head[: layout.head_size] != head_bytes(layout):
        raise FormatError("protective MBR or primary GPT: not as a v1 writer writes them")
    if tail[-TAIL_SIZE:] != tail_bytes(layout)[-TAIL_SIZE:]:
        raise FormatError("backup GPT: not as a v1 writer writes it")
    return layout


def _read_entries(array: bytes, first_usable: int, last_usable: int) -> list[Partition]:
    parts: list[Partition] = []
    for index in range(GPT_ENTRY_COUNT):
        raw = array[index * GPT_ENTRY_SIZE : (index + 1) * GPT_ENTRY_SIZE]
        if not any(raw):
            continue
        at = 2 * SECTOR_SIZE + index * GPT_ENTRY_SIZE  # in the primary array
        entry = binary.parse(structs.GPT_ENTRY, raw, f"GPT entry {index}", at)
        type_guid = uuid.UUID(bytes_le=entry.partition_type_guid)
        name = NAMES_BY_TYPE.get(type_guid)
        if name is None:
            raise FormatError(f"GPT entry {index}: unknown partition type {type_guid}")
        if index >= len(ORDER) or ORDER[index] != name:
            raise FormatError(f"GPT entry {index}: {name} is out of place")
        if entry.starting_lba > entry.ending_lba:
            raise FormatError(f"partition {name}: ends before it starts")
        if entry.starting_lba < first_usable or entry.ending_lba > last_usable:
            raise FormatError(f"partition {name}: lies outside the usable area of the file")
        offset = entry.starting_lba * SECTOR_SIZE
        size = (entry.ending_lba + 1 - entry.starting_lba) * SECTOR_SIZE
        if offset % ALIGNMENT or size % ALIGNMENT:
            raise FormatError(f"partition {name}: not aligned to 4 KiB")
        if parts and offset < parts[-1].end:
            raise FormatError(f"partition {name}: overlaps {parts[-1].name}")
        label = entry.partition_name.decode("utf-16-le", "replace").rstrip("\0")
        if label != name:
            raise FormatError(f"partition {name}: has the name {label!r}")
        parts.append(
            Partition(
                name, type_guid, uuid.UUID(bytes_le=entry.unique_partition_guid), offset, size
            )
        )
    if [p.name for p in parts] != list(ORDER):
        missing = [n for n in ORDER if n not in {p.name for p in parts}]
        raise FormatError(f"not an appimg v1 image: missing partition(s) {', '.join(missing)}")
    return parts
