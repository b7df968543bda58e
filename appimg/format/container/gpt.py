"""Writing and reading the GPT of an appimg image (spec/format.md §Container).

The layout is fixed: LBA 0 protective MBR, LBA 1 header, LBA 2-33 the 128-entry
array, the partitions from LBA 40 (4 KiB aligned, contiguous), and the backup
array and header in the last 33 sectors. The file size is a multiple of 4 KiB.
:class:`DiskLayout` says where everything goes. Reading (§3.3) checks the fields a
reader relies on one by one, then rebuilds the head and tail for the layout read
and compares them byte for byte, so every other byte a v1 writer MUST write is
checked too.

Opening an image to run it goes through here, so this module reads and writes
the three structures with precompiled ``struct.Struct`` records (microseconds,
no ``construct`` import); :mod:`.structs` keeps their ``construct`` definitions,
the reference for tooling and tests, which check that both agree byte for byte.
Short or malformed bytes still become a FormatError through
:func:`appimg.format.binary.unpack`.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, NamedTuple

from appimg.errors import FormatError
from appimg.format import binary
from appimg.format.container.partitions import (
    ATTR_READ_ONLY,
    NAMES_BY_TYPE,
    ORDER,
    TYPE_GUIDS,
    Partition,
)
from appimg.format.guid import Guid
from appimg.format.limits import ALIGNMENT, GPT_ENTRY_COUNT, GPT_ENTRY_SIZE, SECTOR_SIZE

if TYPE_CHECKING:
    from uuid import UUID

ENTRY_ARRAY_SIZE = GPT_ENTRY_COUNT * GPT_ENTRY_SIZE
ENTRY_ARRAY_SECTORS = ENTRY_ARRAY_SIZE // SECTOR_SIZE
#: First byte of the first partition: after MBR, header and array, rounded up to 4 KiB.
FIRST_PARTITION_OFFSET = 40 * SECTOR_SIZE
#: Backup array and header at the end of the disk.
TAIL_SIZE = (ENTRY_ARRAY_SECTORS + 1) * SECTOR_SIZE
GPT_REVISION = 0x00010000

# The structures of :mod:`.structs` (UEFI 2.10 §5.2-§5.3), field for field, little-endian.
#: Protective MBR: boot code, disk signature, unknown, 4 records of (boot indicator,
#: starting CHS, OS type, ending CHS, starting LBA, size in LBA), signature 55 AA.
_MBR = struct.Struct("<440sIH" + "B3sB3sII" * 4 + "2s")
_MBR_SIGNATURE = b"\x55\xaa"
#: GPT header: signature, revision, header size, header CRC32, reserved, my LBA,
#: alternate LBA, first and last usable LBA, disk GUID, partition entry LBA, number
#: and size of partition entries, partition entry array CRC32.
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_HEADER_SIGNATURE = b"EFI PART"
#: The 92 bytes the header's CRC covers (``structs.GPT_HEADER_SIZE``).
GPT_HEADER_SIZE = _HEADER.size
#: GPT entry: type GUID, unique GUID, starting and ending LBA, attributes, UTF-16 name.
_ENTRY = struct.Struct("<16s16sQQQ72s")


# NamedTuples, not frozen dataclasses: defined at import on the launch path, they
# cost ~70 us each instead of ~500 us.
class _Header(NamedTuple):
    """A parsed GPT header (field names as in :data:`.structs.GPT_HEADER`)."""

    revision: int
    header_size: int
    header_crc32: int
    reserved: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: bytes
    partition_entry_lba: int
    number_of_partition_entries: int
    size_of_partition_entry: int
    partition_entry_array_crc32: int


#: The boot code (§2.1): runs the image through ``appimg run``, found on PATH or where
#: the README's ``pipx install`` (or ``pip install --user``) puts it, else says how to get it.
STUB = (
    b"#!/bin/sh\n"
    b"# This file is an appimg image: a disk image holding an app. See appimg(1).\n"
    b"a=$(command -v appimg) || a=$HOME/.local/bin/appimg\n"
    b'[ -x "$a" ] && exec "$a" run "$0" -- "$@"\n'
    b'echo "$0: appimg is not on PATH or in ~/.local/bin; to run this app, install appimg '
    b'(from its source tree: pipx install --system-site-packages .; see its README)" >&2\n'
    b"exit 127\n"
)
assert len(STUB) <= 440
#: The stub the first v1 writers wrote (§2.1): readers accept it, writers no longer
#: write it, so that images packed before the stub changed still open.
EARLIER_STUBS = (
    b"#!/bin/sh\n"
    b"# This file is an appimg image: a disk image holding an app. See appimg(1).\n"
    b'if command -v appimg >/dev/null 2>&1; then exec appimg run "$0" -- "$@"; fi\n'
    b'echo "$0: appimg is not installed; install it (pip install appimg) to run this app" >&2\n'
    b"exit 127\n",
)
_BOOT_CODES = {stub.ljust(440, b"\0") for stub in (STUB, *EARLIER_STUBS)}


def align(value: int, to: int = ALIGNMENT) -> int:
    return -(-value // to) * to


class DiskLayout(NamedTuple):
    """Where everything goes in an image of the given partition sizes."""

    partitions: tuple[Partition, ...]
    disk_guid: Guid
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
    sizes: dict[str, int], partition_uuids: dict[str, Guid | UUID], disk_guid: Guid | UUID
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
        name = part.name.encode("utf-16-le")
        if len(name) > 72:
            raise FormatError(f"GPT entry {index}: cannot encode (partition_name is too long)")
        entry = binary.pack(_ENTRY, f"GPT entry {index}", part.type_guid.bytes_le,
                            part.uuid.bytes_le, part.offset // SECTOR_SIZE,
                            part.end // SECTOR_SIZE - 1, ATTR_READ_ONLY,
                            name.ljust(72, b"\0"))  # fmt: skip
        array[index * GPT_ENTRY_SIZE : (index + 1) * GPT_ENTRY_SIZE] = entry
    return bytes(array)


def _header(layout: DiskLayout, array_crc: int, backup: bool) -> bytes:
    last_lba = layout.file_size // SECTOR_SIZE - 1
    header = _Header(
        revision=GPT_REVISION,
        header_size=GPT_HEADER_SIZE,
        header_crc32=0,
        reserved=0,
        my_lba=last_lba if backup else 1,
        alternate_lba=1 if backup else last_lba,
        first_usable_lba=2 + ENTRY_ARRAY_SECTORS,
        last_usable_lba=last_lba - 1 - ENTRY_ARRAY_SECTORS,
        disk_guid=layout.disk_guid.bytes_le,
        partition_entry_lba=(last_lba - ENTRY_ARRAY_SECTORS) if backup else 2,
        number_of_partition_entries=GPT_ENTRY_COUNT,
        size_of_partition_entry=GPT_ENTRY_SIZE,
        partition_entry_array_crc32=array_crc,
    )
    what = "GPT backup header" if backup else "GPT primary header"
    return _header_bytes(header, what).ljust(SECTOR_SIZE, b"\0")


def _header_bytes(header: _Header, what: str, crc: int | None = None) -> bytes:
    """The 92 header bytes with ``crc`` as its CRC32 (None: the right CRC)."""
    fields = list(header)
    raw = binary.pack(_HEADER, what, _HEADER_SIGNATURE, *fields[:2], 0, *fields[3:])
    if crc is None:
        crc = zlib.crc32(raw)
    return raw[:16] + crc.to_bytes(4, "little") + raw[20:]


def _protective_mbr(file_size: int) -> bytes:
    sectors = file_size // SECTOR_SIZE
    # boot_indicator, starting_chs, os_type, ending_chs, starting_lba, size_in_lba
    record = (0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, min(sectors - 1, 0xFFFFFFFF))
    empty = (0, bytes(3), 0, bytes(3), 0, 0)
    return binary.pack(_MBR, "protective MBR", STUB.ljust(440, b"\0"), 0, 0,
                 *record, *empty, *empty, *empty, _MBR_SIGNATURE)  # fmt: skip


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


def _check_header(raw: bytes, where: str, offset: int) -> _Header:
    signature, *fields = binary.unpack(_HEADER, raw, f"GPT {where} header", offset)
    if signature != _HEADER_SIGNATURE:
        raise FormatError(f"GPT {where} header at offset {offset}: malformed (signature: "
                          f"expected {_HEADER_SIGNATURE!r} but parsed {signature!r})")  # fmt: skip
    header = _Header(*fields)
    if header.header_size != GPT_HEADER_SIZE:
        raise FormatError(f"GPT {where} header: unsupported header size {header.header_size}")
    if zlib.crc32(_header_bytes(header, f"GPT {where} header", 0)) != header.header_crc32:
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
    if any(raw[GPT_HEADER_SIZE:SECTOR_SIZE]):
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
    mbr = binary.unpack(_MBR, head, "protective MBR", 0)
    boot_code, first_os_type, signature = mbr[0], mbr[5], mbr[-1]
    if signature != _MBR_SIGNATURE:
        raise FormatError("protective MBR at offset 0: malformed (signature: "
                          f"expected {_MBR_SIGNATURE!r} but parsed {signature!r})")  # fmt: skip
    if not boot_code.startswith(b"#!/bin/sh\n") or first_os_type != 0xEE:
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
        if getattr(primary, key) != getattr(backup, key):
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
    layout = DiskLayout(tuple(parts), Guid.from_bytes_le(primary.disk_guid), file_size)
    # §3.3 step 12: everything else in the head and tail (the stub, MBR records 1-3,
    # reserved fields, attributes, name padding, the backup PartitionEntryLBA, the zero
    # gaps) has exactly one v1 value; rebuilding is simpler than checking each field.
    # The boot code may be any stub v1 writers have written (§2.1).
    expected = head_bytes(layout)
    if head[:440] not in _BOOT_CODES or head[440 : layout.head_size] != expected[440:]:
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
        type_bytes, unique, starting_lba, ending_lba, _attributes, label_bytes = binary.unpack(
            _ENTRY, raw, f"GPT entry {index}", at
        )
        type_guid = Guid.from_bytes_le(type_bytes)
        name = NAMES_BY_TYPE.get(type_guid)
        if name is None:
            raise FormatError(f"GPT entry {index}: unknown partition type {type_guid}")
        if index >= len(ORDER) or ORDER[index] != name:
            raise FormatError(f"GPT entry {index}: {name} is out of place")
        if starting_lba > ending_lba:
            raise FormatError(f"partition {name}: ends before it starts")
        if starting_lba < first_usable or ending_lba > last_usable:
            raise FormatError(f"partition {name}: lies outside the usable area of the file")
        offset = starting_lba * SECTOR_SIZE
        size = (ending_lba + 1 - starting_lba) * SECTOR_SIZE
        if offset % ALIGNMENT or size % ALIGNMENT:
            raise FormatError(f"partition {name}: not aligned to 4 KiB")
        if parts and offset < parts[-1].end:
            raise FormatError(f"partition {name}: overlaps {parts[-1].name}")
        label = label_bytes.decode("utf-16-le", "replace").rstrip("\0")
        if label != name:
            raise FormatError(f"partition {name}: has the name {label!r}")
        parts.append(Partition(name, type_guid, Guid.from_bytes_le(unique), offset, size))
    if [p.name for p in parts] != list(ORDER):
        missing = [n for n in ORDER if n not in {p.name for p in parts}]
        raise FormatError(f"not an appimg v1 image: missing partition(s) {', '.join(missing)}")
    return parts
