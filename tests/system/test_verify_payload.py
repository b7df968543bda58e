"""``verify --full`` checks the payload as SquashFS (spec/format.md §5.1, §11.3).

Forged images (valid verity tree and statement around chosen payload bytes) whose
payload is not SquashFS, or is padded other than as §5.1 says, pass ``inspect``
and ``verify`` (which read no payload byte) but fail ``verify --full`` with a
FormatError (exit 3).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ..forge import forge, payload_of
from ..helpers import appimg, assert_one_line_error


def _squashfs(hello_image: Path) -> bytearray:
    """The example app's payload without its padding: a genuine SquashFS filesystem."""
    data = bytearray(payload_of(hello_image))
    used = struct.unpack_from("<Q", data, 40)[0]  # bytes_used
    return data[:used]


def _patched(base: bytearray, offset: int, value: bytes) -> bytes:
    data = bytearray(base)
    data[offset : offset + len(value)] = value
    return bytes(data)


CASES = {
    "broken magic": lambda fs: _patched(fs, 0, b"hsqt"),
    "unknown compressor id": lambda fs: _patched(fs, 20, struct.pack("<H", 9)),
    "version 4.1": lambda fs: _patched(fs, 30, struct.pack("<H", 1)),
    "bytes_used beyond the partition": lambda fs: _patched(fs, 40, struct.pack("<Q", 1 << 20)),
    "padding beyond the next 4 KiB": lambda fs: bytes(fs) + bytes(8192),
    "non-zero padding": lambda fs: bytes(fs) + b"\x01",
}


@pytest.mark.parametrize("what", CASES)
def test_verify_full_refuses_a_payload_that_is_not_v1_squashfs(
    tmp_path: Path, hello_image: Path, what: str
) -> None:
    image = forge(tmp_path / "forged.appimg", payload=CASES[what](_squashfs(hello_image)))
    appimg("inspect", image)  # O(1): reads no payload byte
    appimg("verify", image)  # the tree only
    result = appimg("verify", "--full", image, check=False)
    assert_one_line_error(result)
    assert result.returncode == 3, result.stderr


def test_verify_full_accepts_the_genuine_payload(tmp_path: Path, hello_image: Path) -> None:
    image = forge(tmp_path / "genuine.appimg", payload=bytes(_squashfs(hello_image)))
    appimg("verify", "--full", image)
