"""Random-access byte sources: the seam between the container and the payload.

A :class:`ByteSource` is a window of ``size`` bytes that can be read at any
offset from several threads at once. The container hands the payload reader
either a plain :class:`FileRegion` (no integrity checks, used by the packer and
tests) or a verity-checked source (:mod:`appimg.format.verity.hashtree`).
"""

from __future__ import annotations

import os
from typing import Protocol

from appimg.errors import FormatError


class ByteSource(Protocol):
    """A thread-safe, random-access, read-only window of bytes."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes:
        """Return exactly ``length`` bytes at ``offset``; raise FormatError past the end."""
        ...


class FileRegion:
    """``size`` bytes of an open file starting at ``offset``; reads use pread (thread-safe)."""

    def __init__(self, fd: int, offset: int, size: int, name: str = "region") -> None:
        self._fd = fd
        self._offset = offset
        self._size = size
        self.name = name

    @classmethod
    def whole_file(cls, fd: int, name: str = "file") -> FileRegion:
        return cls(fd, 0, os.fstat(fd).st_size, name)

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise FormatError(
                f"{self.name}: read of {length} bytes at offset {offset} "
                f"is outside its {self._size} bytes"
            )
        data = os.pread(self._fd, length, self._offset + offset)
        if len(data) != length:
            raise FormatError(f"{self.name}: file is truncated (short read at offset {offset})")
        return data
