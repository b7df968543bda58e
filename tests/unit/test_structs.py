"""Every on-disk structure round-trips, and corrupt bytes raise FormatError and nothing else.

Covers the construct definitions of the container (spec/format.md §Container),
the verity superblock (§Verity partition) and SquashFS (§Payload), all parsed
through :mod:`appimg.format.binary`, the one place a parser error changes type.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import construct as cs
import pytest

from appimg.errors import FormatError
from appimg.format import binary
from appimg.format.container import gpt
from appimg.format.container import structs as container
from appimg.format.container.partitions import PAYLOAD, VERITY
from appimg.format.image import Image
from appimg.format.squashfs import structs as squashfs
from appimg.format.verity import structs as verity

ROOT = Path(__file__).resolve().parents[2]
MODULES = (container, verity, squashfs)

#: Every construct Struct the three struct modules define, by qualified name.
STRUCTS: dict[str, cs.Struct] = {
    f"{module.__name__.rsplit('.', 2)[-2]}.{name}": value
    for module in MODULES
    for name, value in vars(module).items()
    if isinstance(value, cs.Struct)
}


def sample(con: cs.Construct, rng: random.Random, ctx: cs.Container, bits: int = 64) -> Any:
    """A random value ``con`` can build: the generator knows every construct the modules use.

    Integers have at most ``bits`` bits (a name length must stay allocatable).
    """
    if isinstance(con, cs.Renamed):
        return sample(con.subcon, rng, ctx, bits)
    if isinstance(con, cs.Struct):
        out = cs.Container()
        named = any(sub.name == "name" for sub in con.subcons)
        for sub in con.subcons:
            out[sub.name] = sample(sub, rng, out, 8 if named and sub.name == "size" else 64)
        return out
    if isinstance(con, cs.Const):
        return con.value
    if isinstance(con, cs.FormatField):
        bits = min(bits, con.sizeof() * 8)
        if con.fmtstr[-1].islower():
            return rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        return rng.randint(0, (1 << bits) - 1)
    if isinstance(con, cs.Bytes):
        length = con.length(ctx) if callable(con.length) else con.length
        return rng.randbytes(length)
    if isinstance(con, cs.Array):
        return cs.ListContainer(sample(con.subcon, rng, ctx) for _ in range(con.count))
    if isinstance(con, cs.StringEncoded):  # PaddedString: printable ASCII, room for a NUL
        size = con.subcon.length
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(size - 1))
    raise TypeError(f"no sample for {con!r}")


def test_every_struct_is_covered() -> None:
    # A new definition in a struct module is picked up here; a new kind of field
    # makes sample() fail loudly rather than go untested.
    assert {"container.GPT_HEADER", "container.GPT_ENTRY", "container.PROTECTIVE_MBR",
            "verity.VERITY_SUPERBLOCK", "squashfs.superblock", "squashfs.dir_entry_named",
            "squashfs.dir_index_named", "squashfs.xattr_value_ref"} <= set(STRUCTS)  # fmt: skip


@pytest.mark.parametrize("name", STRUCTS)
def test_build_then_parse_gives_the_same_fields(name: str) -> None:
    struct = STRUCTS[name]
    rng = random.Random(name)
    for _ in range(5):
        value = sample(struct, rng, cs.Container())
        raw = binary.build(struct, value, name)
        parsed = binary.parse(struct, raw, name)
        assert parsed == value
        assert binary.build(struct, parsed, name) == raw
        if _integers_only(struct):  # the compiled form Record.parse uses
            assert binary.parse(struct.compile(), raw, name) == value


def _integers_only(struct: cs.Struct) -> bool:
    return all(isinstance(sub.subcon, cs.FormatField) for sub in struct.subcons)


def _parse_or_format_error(struct: cs.Construct, data: bytes) -> bool:
    """True if ``data`` parses; False on FormatError; anything else fails the test."""
    try:
        binary.parse(struct, data, "test", 0)
    except FormatError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("test at offset 0: "), exc
        return False
    return True


@pytest.mark.parametrize("name", STRUCTS)
def test_corrupt_bytes_raise_format_error_only(name: str) -> None:
    struct = STRUCTS[name]
    rng = random.Random(name)
    raw = binary.build(struct, sample(struct, rng, cs.Container()), name)
    # construct's compiled parsers read Bytes fields without checking their length
    # (construct 2.10), so only integer-only structs (squashfs Records) are compiled.
    compiled = struct.compile() if _integers_only(struct) else struct
    for cut in range(len(raw)):
        assert not _parse_or_format_error(struct, raw[:cut])
        assert not _parse_or_format_error(compiled, raw[:cut])
    with pytest.raises(FormatError, match="truncated"):
        binary.parse(struct, raw[:-1], "test", 0)
    for _ in range(300):
        flipped = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        _parse_or_format_error(struct, bytes(flipped))
        _parse_or_format_error(compiled, bytes(flipped))
    _parse_or_format_error(struct, rng.randbytes(len(raw)))
    _parse_or_format_error(struct, bytes(len(raw)))
    _parse_or_format_error(struct, b"\xff" * len(raw))


@pytest.mark.parametrize("record", [v for v in vars(squashfs).values()
                                    if isinstance(v, squashfs.Record)],
                         ids=lambda record: record.name)  # fmt: skip
def test_record_fast_path_errors_are_format_errors(record: squashfs.Record) -> None:
    raw = record.build(**dict.fromkeys(record.fields, 1))
    assert record.unpack(raw, 0, "t", 0) == (1,) * len(record.fields)
    for cut in range(record.size):
        with pytest.raises(FormatError, match=rf"^squashfs t {record.name} at offset 9: trunc"):
            record.unpack(raw[:cut], 0, "t", 9)
    with pytest.raises(FormatError, match="truncated"):
        record.unpack(raw, 1, "t", 9)  # runs past the end of the buffer
    with pytest.raises(FormatError):
        record.unpack(raw, -record.size - 1, "t", 9)


def test_unencodable_values_are_format_errors() -> None:
    with pytest.raises(FormatError, match=r"^verity superblock: cannot encode"):
        verity.build_superblock(
            uuid=bytes(16),
            algorithm="sha256é",
            data_block_size=4096,
            hash_block_size=4096,
            data_blocks=1,
            salt=b"",
        )
    with pytest.raises(FormatError, match=r"^squashfs id: cannot encode"):
        squashfs.ID_ENTRY.build(id=1 << 32)
    entry = sample(container.GPT_ENTRY, random.Random(), cs.Container())
    entry["partition_name"] = b"too short"
    with pytest.raises(FormatError, match=r"^GPT entry: cannot encode"):
        binary.build(container.GPT_ENTRY, entry, "GPT entry")


# --- real structures, from an image made by appimg's own packer -----------------------


@pytest.fixture(scope="module")
def real(hello_image: Path) -> dict[str, tuple[cs.Struct, bytes, int]]:
    """Each on-disk structure of a packed image: (definition, its bytes, its offset)."""
    with Image.open(hello_image) as image:
        payload, vpart, size = image.partition(PAYLOAD), image.partition(VERITY), image.layout
    fd = os.open(hello_image, os.O_RDONLY)
    try:

        def read(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        backup = size.file_size - 512
        found = {
            "protective MBR": (container.PROTECTIVE_MBR, read(0, 512), 0),
            "GPT primary header": (container.GPT_HEADER, read(512, 92), 512),
            "GPT backup header": (container.GPT_HEADER, read(backup, 92), backup),
            "verity superblock": (verity.VERITY_SUPERBLOCK, read(vpart.offset, 512), vpart.offset),
            "squashfs superblock": (squashfs.superblock, read(payload.offset, 96), payload.offset),
        }
        for index in range(4):
            at = 1024 + 128 * index
            found[f"GPT entry {index}"] = (container.GPT_ENTRY, read(at, 128), at)
        return found
    finally:
        os.close(fd)


def test_real_structures_round_trip(real: dict[str, tuple[cs.Struct, bytes, int]]) -> None:
    for what, (struct, raw, offset) in real.items():
        parsed = binary.parse(struct, raw, what, offset)
        assert binary.build(struct, parsed, what) == raw, what
    assert binary.parse(*real["squashfs superblock"][:2], "sb").magic == squashfs.SQUASHFS_MAGIC


def test_real_structures_truncated_name_themselves(
    real: dict[str, tuple[cs.Struct, bytes, int]],
) -> None:
    for what, (struct, raw, offset) in real.items():
        with pytest.raises(FormatError, match=rf"^{what} at offset {offset}: truncated \("):
            binary.parse(struct, raw[: len(raw) // 2], what, offset)


def test_bit_flips_in_the_gpt_raise_format_error_only(hello_image: Path) -> None:
    # Every single-bit flip in the MBR signature, the primary header and the first
    # entry: read_layout refuses each with a FormatError (CRCs catch the rest).
    data = hello_image.read_bytes()
    head, tail = data[: gpt.FIRST_PARTITION_OFFSET], data[-gpt.TAIL_SIZE :]
    assert gpt.read_layout(head, tail, len(data)).file_size == len(data)
    positions = [510, 511, *range(512, 512 + 92), *range(1024, 1024 + 128)]
    for pos in positions:
        for bit in (0, 7):
            broken = bytearray(head)
            broken[pos] ^= 1 << bit
            with pytest.raises(FormatError):
                gpt.read_layout(bytes(broken), tail, len(data))


def test_only_binary_names_parser_errors() -> None:
    # The choke point stays the only one: no other format module catches
    # construct's errors or struct.error itself.
    pattern = re.compile(r"ConstructError|struct\.error|_struct\.error")
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "appimg" / "format").rglob("*.py"))
        if path.name != "binary.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


# --- the struct twins the launch path reads with ------------------------------------


def test_struct_records_match_their_construct_definitions() -> None:
    # Each records.Record (what the reader uses) has its construct definition's
    # fields and byte layout.
    from appimg.format.squashfs import records

    twins = {v.name: v for v in vars(records).values() if isinstance(v, records.Record)}
    defined = [v for v in vars(squashfs).values() if isinstance(v, squashfs.Record)]
    assert sorted(twins) == sorted(r.name for r in defined)
    for record in defined:
        twin = twins[record.name]
        assert twin.fields == record.fields and twin.size == record.size, record.name
        values = dict(zip(record.fields, range(1, len(record.fields) + 1), strict=True))
        assert twin.unpack(record.build(**values), 0, "t", 0) == tuple(values.values())


def test_struct_readers_agree_with_construct(real: dict[str, tuple[cs.Struct, bytes, int]],
                                             hello_image: Path) -> None:  # fmt: skip
    from appimg.format.squashfs import records
    from appimg.format.verity import superblock

    definition, raw, offset = real["verity superblock"]
    expected = binary.parse(definition, raw, "verity superblock", offset)
    parsed = superblock.parse_superblock(raw, offset)._asdict()
    parsed["_pad1"], parsed["_pad2"] = parsed.pop("pad1"), parsed.pop("pad2")
    assert parsed == {k: v for k, v in expected.items() if k != "_io"}
    assert verity.build_superblock(**{k: expected[k] for k in (
        "uuid", "algorithm", "data_block_size", "hash_block_size", "data_blocks")},
        salt=expected.salt[: expected.salt_size]) == superblock.build_superblock(
        uuid=expected.uuid, algorithm=expected.algorithm,
        data_block_size=expected.data_block_size, hash_block_size=expected.hash_block_size,
        data_blocks=expected.data_blocks, salt=expected.salt[: expected.salt_size])  # fmt: skip
    definition, raw, offset = real["squashfs superblock"]
    expected = binary.parse(definition, raw, "squashfs superblock", offset)
    assert records.SUPERBLOCK.read(raw, "superblock", offset)._asdict() == {
        k: v for k, v in expected.items() if k != "_io"
    }
    # The GPT writer (struct) writes what the construct definitions build.
    data = hello_image.read_bytes()
    layout = gpt.read_layout(data[: gpt.FIRST_PARTITION_OFFSET], data[-gpt.TAIL_SIZE :], len(data))
    head = gpt.head_bytes(layout)
    for what in ("protective MBR", "GPT primary header", "GPT entry 0", "GPT entry 3"):
        definition, raw, offset = real[what]
        rebuilt = binary.build(definition, binary.parse(definition, raw, what, offset), what)
        assert head[offset : offset + len(raw)] == rebuilt, what
