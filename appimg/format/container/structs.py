"""On-disk structures of the container: protective MBR and GPT (spec/format.md §Container).

Field names follow the UEFI specification (2.10, §5.2 and §5.3). Only the
definitions live here; every parse and build goes through :mod:`appimg.format.binary`,
which turns the parser's errors into :class:`~appimg.errors.FormatError`.
"""

from __future__ import annotations

import construct as cs

MBR_PARTITION_RECORD = cs.Struct(
    "boot_indicator" / cs.Int8ul,
    "starting_chs" / cs.Bytes(3),
    "os_type" / cs.Int8ul,
    "ending_chs" / cs.Bytes(3),
    "starting_lba" / cs.Int32ul,
    "size_in_lba" / cs.Int32ul,
)
"""One of the four MBR partition records (UEFI §5.2.1)."""

PROTECTIVE_MBR = cs.Struct(
    "boot_code" / cs.Bytes(440),
    "unique_mbr_disk_signature" / cs.Int32ul,
    "unknown" / cs.Int16ul,
    "partition_record" / cs.Array(4, MBR_PARTITION_RECORD),
    "signature" / cs.Const(b"\x55\xaa"),
)
"""Sector 0: a protective MBR whose boot-code area holds the sh stub (UEFI §5.2.3)."""

GPT_HEADER = cs.Struct(
    "signature" / cs.Const(b"EFI PART"),
    "revision" / cs.Int32ul,
    "header_size" / cs.Int32ul,
    "header_crc32" / cs.Int32ul,
    "reserved" / cs.Int32ul,
    "my_lba" / cs.Int64ul,
    "alternate_lba" / cs.Int64ul,
    "first_usable_lba" / cs.Int64ul,
    "last_usable_lba" / cs.Int64ul,
    "disk_guid" / cs.Bytes(16),
    "partition_entry_lba" / cs.Int64ul,
    "number_of_partition_entries" / cs.Int32ul,
    "size_of_partition_entry" / cs.Int32ul,
    "partition_entry_array_crc32" / cs.Int32ul,
)
"""The 92-byte GPT header (UEFI §5.3.2); the rest of its sector is zero."""

GPT_HEADER_SIZE = GPT_HEADER.sizeof()

GPT_ENTRY = cs.Struct(
    "partition_type_guid" / cs.Bytes(16),
    "unique_partition_guid" / cs.Bytes(16),
    "starting_lba" / cs.Int64ul,
    "ending_lba" / cs.Int64ul,
    "attributes" / cs.Int64ul,
    "partition_name" / cs.Bytes(72),
)
"""One 128-byte GPT partition entry (UEFI §5.3.3); GUIDs in mixed-endian order."""
