"""The signed statement and the signature partition (spec/format.md §Signature partition)."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg import FORMAT_VERSION
from appimg.errors import FormatError
from appimg.format import canonical, keys
from appimg.format.container import gpt
from appimg.format.container.partitions import ORDER, SIGNATURE
from appimg.format.image import Image
from appimg.format.limits import MAX_SIGNATURES, SIGNATURE_PARTITION_SIZE
from appimg.format.statement import SignatureBlock, build_statement, decode
from appimg.format.verity.hashtree import VerityParams


@pytest.fixture(scope="module")
def partition(hello_image: Path) -> bytes:
    """The signature partition of an image made by appimg's own packer."""
    with Image.open(hello_image) as image:
        part = image.partition(SIGNATURE)
    fd = os.open(hello_image, os.O_RDONLY)
    try:
        return os.pread(fd, part.size, part.offset)
    finally:
        os.close(fd)


@pytest.fixture
def value(partition: bytes) -> dict[str, Any]:
    """The decoded partition as plain JSON, for tests to break."""
    return canonical.loads(partition.rstrip(b"\0"), "t")


def encoded(value: object) -> bytes:
    return canonical.dumps(value).ljust(SIGNATURE_PARTITION_SIZE, b"\0")


def test_decode_encode_round_trip(partition: bytes) -> None:
    block = decode(partition)
    assert len(block.signatures) == 1
    assert block.statement["format_version"] == FORMAT_VERSION
    assert block.encode() == partition
    assert decode(block.encode()) == block
    assert keys.check(block.signatures[0], block.message)
    assert block.message == canonical.dumps(block.statement)


def test_build_statement_round_trip() -> None:
    layout = gpt.plan(
        dict(zip(ORDER, (4096, 8192, 4096, SIGNATURE_PARTITION_SIZE), strict=True)),
        {name: uuid.uuid4() for name in ORDER},
        uuid.uuid4(),
    )
    head, tail = gpt.head_bytes(layout), gpt.tail_bytes(layout)
    verity = VerityParams(bytes(32), bytes(range(32)), 2, uuid.uuid4().bytes)
    manifest = {"id": "org.example.App", "version": "1.0"}
    statement = build_statement(layout, head, tail, b"{}", manifest, verity)
    block = SignatureBlock(statement)
    key = Ed25519PrivateKey.generate()
    block.signatures.append(keys.sign(key, block.message))
    data = block.encode()
    assert len(data) == SIGNATURE_PARTITION_SIZE
    back = decode(data)
    assert back == block
    assert back.statement["disk"]["size"] == layout.file_size
    assert [p["name"] for p in back.statement["partitions"]] == list(ORDER)
    assert VerityParams.from_json(back.statement["verity"]) == verity
    assert decode(SignatureBlock(statement).encode()).signatures == []  # unsigned


def _set(path: tuple[Any, ...], new: object) -> Any:
    def change(v: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            v = v[key]
        v[last] = new

    return change


def _drop(path: tuple[Any, ...]) -> Any:
    def change(v: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            v = v[key]
        del v[last]

    return change


MALFORMED = {
    "top level is a list": (lambda v: [v], "expected an object"),
    "no signatures key": (_drop(("signatures",)), "expected an object"),
    "extra top-level key": (_set(("extra",), 1), "expected an object"),
    "statement is a list": (_set(("statement",), []), "no appimg statement"),
    "wrong statement type": (_set(("statement", "type"), "other"), "no appimg statement"),
    "no statement type": (_drop(("statement", "type")), "no appimg statement"),
    "missing statement field": (_drop(("statement", "verity")), "fields are not those of v1"),
    "extra statement field": (_set(("statement", "extra"), 1), "fields are not those of v1"),
    "signatures not a list": (_set(("signatures",), {}), "must be a list"),
    "signature not an object": (_set(("signatures", 0), "sig"), "malformed signature entry"),
    "signature field missing": (_drop(("signatures", 0, "key_id")), "malformed signature entry"),
    "signature field extra": (_set(("signatures", 0, "x"), ""), "malformed signature entry"),
    "signature field not a string": (_set(("signatures", 0, "signature"), 1),
                                     "malformed signature entry"),
}  # fmt: skip


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_shapes_refused(value: dict[str, Any], name: str) -> None:
    change, message = MALFORMED[name]
    broken = copy.deepcopy(value)
    broken = change(broken) or broken
    with pytest.raises(FormatError, match=message):
        decode(encoded(broken))


@pytest.mark.parametrize("version", [0, 2, FORMAT_VERSION + 1, "1", True, None, [1]])
def test_unknown_format_version(value: dict[str, Any], version: object) -> None:
    value["statement"]["format_version"] = version
    with pytest.raises(FormatError, match="unknown format version"):
        decode(encoded(value))


@pytest.mark.parametrize("algorithm", ["rsa", "Ed25519", "ed448", ""])
def test_unknown_algorithm(value: dict[str, Any], algorithm: str) -> None:
    value["signatures"][0]["algorithm"] = algorithm
    with pytest.raises(FormatError, match="unknown algorithm"):
        decode(encoded(value))


def test_too_many_signatures(value: dict[str, Any]) -> None:
    value["signatures"] = value["signatures"] * MAX_SIGNATURES
    assert len(decode(encoded(value)).signatures) == MAX_SIGNATURES
    value["signatures"].append(value["signatures"][0])
    with pytest.raises(FormatError, match=f"list of <= {MAX_SIGNATURES}"):
        decode(encoded(value))


def test_too_many_signatures_to_fit(partition: bytes) -> None:
    block = decode(partition)
    block.signatures *= SIGNATURE_PARTITION_SIZE // len(canonical.dumps(block.signatures[0]))
    with pytest.raises(FormatError, match="too many signatures to fit"):
        block.encode()


def test_bytes_after_the_json_must_be_zero(partition: bytes) -> None:
    end = partition.index(b"\0")
    for at in (end + 1, len(partition) - 1):
        broken = bytearray(partition)
        broken[at] = 0x20
        with pytest.raises(FormatError, match="not zero"):
            decode(bytes(broken))


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"statement": {}, "signatures": []}', b'{"signatures":[],"statement":1.5}'],
)
def test_not_canonical_json(body: bytes) -> None:
    with pytest.raises(FormatError, match=r"^signature partition: "):
        decode(body.ljust(SIGNATURE_PARTITION_SIZE, b"\0"))


def test_full_partition_without_padding(value: dict[str, Any]) -> None:
    # A body that fills the partition exactly has no NUL terminator; it still decodes.
    body = canonical.dumps(value)
    value["statement"]["app_version"] += " " * (SIGNATURE_PARTITION_SIZE - len(body))
    full = canonical.dumps(value)
    assert len(full) == SIGNATURE_PARTITION_SIZE
    assert decode(full).statement == value["statement"]
