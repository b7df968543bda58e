"""The Xauthority reader and writer of the x11 socket (spec/run.md, "Sockets")."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appimg.errors import FormatError
from appimg.services.run import xauth
from appimg.services.run.xauth import FAMILY_LOCAL, FAMILY_WILD, XauthEntry

COOKIE = bytes(range(16))
ENTRIES = [
    XauthEntry(FAMILY_LOCAL, b"myhost", b"5", b"MIT-MAGIC-COOKIE-1", COOKIE),
    XauthEntry(FAMILY_LOCAL, b"myhost", b"6", b"MIT-MAGIC-COOKIE-1", b"other-display"),
    XauthEntry(FAMILY_LOCAL, b"otherhost", b"5", b"MIT-MAGIC-COOKIE-1", b"other-host"),
    XauthEntry(0, b"\x7f\x00\x00\x01", b"5", b"MIT-MAGIC-COOKIE-1", b"tcp"),  # Internet
    XauthEntry(FAMILY_WILD, b"", b"", b"MIT-MAGIC-COOKIE-1", b"any-display"),
]


def test_round_trip() -> None:
    blob = xauth.serialize(ENTRIES)
    assert xauth.parse(blob) == ENTRIES
    assert xauth.parse(b"") == []


def test_only_this_display_of_this_host_rewritten_wild() -> None:
    kept = xauth.for_display(ENTRIES, "5", "myhost")
    assert [e.data for e in kept] == [COOKIE, b"any-display"]
    assert all(e.family == FAMILY_WILD and e.address == b"" and e.number == b"5" for e in kept)


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 40])
def test_truncated_is_a_format_error(cut: int) -> None:
    blob = xauth.serialize(ENTRIES[:1])
    with pytest.raises(FormatError):
        xauth.parse(blob[:-cut])


def test_a_huge_length_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        xauth.parse(b"\x01\x00\xff\xff" + b"x" * 100)


def test_read_file_caps_the_size_and_wants_a_regular_file(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (xauth.MAX_XAUTHORITY_BYTES + 1))
    with pytest.raises(FormatError, match="larger"):
        xauth.read_file(str(big))
    with pytest.raises(FormatError, match="regular"):
        xauth.read_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="regular"):
        xauth.read_file(str(fifo))


def test_write_private_is_0600_and_never_follows(tmp_path: Path) -> None:
    path = tmp_path / "Xauthority"
    xauth.write_private(str(path), ENTRIES[:1])
    assert path.stat().st_mode & 0o777 == 0o600
    assert xauth.parse(path.read_bytes()) == ENTRIES[:1]
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        xauth.write_private(str(tmp_path / "link"), ENTRIES[:1])
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(shutil.which("xauth") is None, reason="needs xauth (tools/setup)")
def test_agrees_with_the_xauth_tool(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    subprocess.run(["xauth", "-f", theirs, "add", ":7", ".", COOKIE.hex()], check=True,
                   capture_output=True)  # fmt: skip
    entries = xauth.parse(theirs.read_bytes())
    assert [(e.family, e.number, e.name, e.data) for e in entries] == [
        (FAMILY_LOCAL, b"7", b"MIT-MAGIC-COOKIE-1", COOKIE)
    ]
    ours = tmp_path / "ours"
    xauth.write_private(str(ours), xauth.for_display(entries, "7", entries[0].address.decode()))
    listed = subprocess.run(["xauth", "-f", ours, "list"], check=True, capture_output=True,
                            text=True).stdout.split()  # fmt: skip
    assert listed[1:] == ["MIT-MAGIC-COOKIE-1", COOKIE.hex()]
    assert listed[0].endswith(":7")
