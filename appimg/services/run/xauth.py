"""The X authority file of one run: only the cookies of one display (spec/run.md, "Sockets").

An ``.Xauthority`` file is a sequence of entries, each a big-endian ``u16``
family then four counted strings (``u16`` length + bytes): address, display
number, authorization name, data (Xau's ``XauReadAuth`` / ``XauWriteAuth``).
As Flatpak's ``write_xauth`` (common/flatpak-run.c), the sandbox gets only the
entries of the caller's display that are for this machine (family Local with
this host's name, or Wild), rewritten with family Wild so that the sandbox's
own hostname (a UTS namespace of its own) does not matter. The caller's file is
read with a size cap and parsed strictly: a malformed file yields no cookie,
never a traceback.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import NamedTuple

from appimg.errors import FormatError

FAMILY_LOCAL = 256
FAMILY_WILD = 65535
#: A real file holds a handful of entries of ~50 bytes; anything past this is not one.
MAX_XAUTHORITY_BYTES = 64 * 1024
_U16 = struct.Struct(">H")


# A NamedTuple, not a frozen dataclass: defined at import on the launch path, it
# costs ~70 us instead of ~500 us.
class XauthEntry(NamedTuple):
    family: int
    address: bytes
    number: bytes
    name: bytes
    data: bytes


def parse(blob: bytes) -> list[XauthEntry]:
    """Every entry of an Xauthority file; :class:`FormatError` if it is malformed."""
    entries = []
    offset = 0

    def take(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(blob):
            raise FormatError(f"Xauthority truncated at byte {offset}")
        chunk = blob[offset : offset + size]
        offset += size
        return chunk

    while offset < len(blob):
        (family,) = _U16.unpack(take(2))
        fields = []
        for _ in range(4):
            (length,) = _U16.unpack(take(2))
            fields.append(take(length))
        entries.append(XauthEntry(family, *fields))
    return entries


def serialize(entries: list[XauthEntry]) -> bytes:
    out = bytearray()
    for entry in entries:
        out += _U16.pack(entry.family)
        for value in (entry.address, entry.number, entry.name, entry.data):
            if len(value) > 0xFFFF:
                raise FormatError("Xauthority field longer than 65535 bytes")
            out += _U16.pack(len(value)) + value
    return bytes(out)


def for_display(entries: list[XauthEntry], number: str, hostname: str) -> list[XauthEntry]:
    """The entries of display ``number`` on this machine, rewritten with family Wild.

    An entry for a remote host (Internet, other families) or another display is
    left out, as in Flatpak's ``xauth_entry_should_propagate``; an entry without
    a number is valid for every display of the host.
    """
    kept = []
    for entry in entries:
        if entry.family not in (FAMILY_LOCAL, FAMILY_WILD):
            continue
        if entry.family == FAMILY_LOCAL and entry.address != hostname.encode():
            continue
        if entry.number and entry.number != number.encode():
            continue
        kept.append(XauthEntry(FAMILY_WILD, b"", number.encode(), entry.name, entry.data))
    return kept


def read_file(path: str) -> bytes:
    """The caller's file, at most :data:`MAX_XAUTHORITY_BYTES` (else :class:`FormatError`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FormatError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        blob = handle.read(MAX_XAUTHORITY_BYTES + 1)
    if len(blob) > MAX_XAUTHORITY_BYTES:
        raise FormatError(f"{path} is larger than {MAX_XAUTHORITY_BYTES} bytes")
    return blob


def write_private(path: str, entries: list[XauthEntry]) -> None:
    """Write ``entries`` to a new file ``path`` (0600; it must not exist)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(serialize(entries))
