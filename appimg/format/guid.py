"""GUIDs as the format stores and spells them, without the :mod:`uuid` module.

``uuid`` imports ``platform`` (and loads libuuid) at import: ~1.5 ms of every
launch, for values the format only reads, compares and prints. Writers that
make new GUIDs (the packer) still use ``uuid``; :class:`Guid` takes any object
with a ``bytes_le`` (``uuid.UUID`` included) where a GUID is written.
"""

from __future__ import annotations

import re

#: The one spelling the format accepts: lowercase 8-4-4-4-12 hex (spec/format.md §8.2).
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Guid:
    """A 128-bit GUID; ``bytes`` in RFC 4122 (big-endian) order, like ``uuid.UUID``."""

    __slots__ = ("bytes",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 16:
            raise ValueError("a GUID is 16 bytes")
        self.bytes = bytes(raw)

    @classmethod
    def from_bytes_le(cls, raw: bytes) -> Guid:
        """From the mixed-endian order GPT stores (the first three fields little-endian)."""
        return cls(raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:])

    @classmethod
    def parse(cls, text: object) -> Guid | None:
        """The GUID spelled ``text`` in the canonical form, else None."""
        if not isinstance(text, str) or not _CANONICAL.fullmatch(text):
            return None
        return cls(bytes.fromhex(text.replace("-", "")))

    @property
    def bytes_le(self) -> bytes:
        raw = self.bytes
        return raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:]

    def __str__(self) -> str:
        h = self.bytes.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def __repr__(self) -> str:
        return f"Guid('{self}')"

    def __eq__(self, other: object) -> bool:
        # Also equal to a uuid.UUID of the same value (tests and writers use those).
        raw = getattr(other, "bytes", None)
        return isinstance(raw, bytes) and raw == self.bytes

    def __hash__(self) -> int:
        return hash(self.bytes)
