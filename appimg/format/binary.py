"""The one place a parse of on-disk bytes changes its error type (spec/format.md §Container,
§Verity partition, §Payload).

Every binary structure of an image (protective MBR, GPT header and entries, the
dm-verity superblock, the SquashFS records) is read through :func:`parse` (a
``construct`` definition) or through an unpacker from :func:`unpacker` (a
precompiled ``struct.Struct``, for the SquashFS hot paths). Whatever the parser
raises on short or malformed bytes becomes a :class:`~appimg.errors.FormatError`
naming the structure and its offset in the partition; nothing else escapes, so
callers and the CLI only ever see appimg's own error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import construct as cs

from appimg.errors import FormatError

#: What a parse of hostile bytes can raise: construct's own errors, ``struct.error``
#: from fixed-size fields and precompiled records, decoding errors of string fields
#: (``UnicodeDecodeError`` is a ``ValueError``), and overflows of computed sizes.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    cs.ConstructError,
    struct.error,
    UnicodeDecodeError,
    ValueError,
    OverflowError,
)

#: An unpacker from :func:`unpacker`: ``(buf, pos, part, offset)`` -> the record's fields,
#: ``part`` and ``offset`` naming where the record is for the error message.
Unpack = Callable[[bytes | bytearray | memoryview, int, str, int], tuple[Any, ...]]


def _detail(exc: BaseException) -> str:
    """One line saying what went wrong: the field (if construct knows it) and why."""
    text = str(exc)
    path = getattr(exc, "path", None)
    if isinstance(exc, cs.ConstructError) and path:
        # construct's message is "Error in path (parsing) -> field\n<why>".
        field = path.rsplit(" -> ", 1)[-1]
        text = f"{field}: {text.split(chr(10), 1)[-1]}"
    # Compiled parsers raise errors without a message; errors are printed as one line.
    return " ".join(text.split()) or type(exc).__name__


def malformed(what: str, offset: int, exc: BaseException) -> FormatError:
    """The FormatError for ``exc`` raised while parsing ``what`` at ``offset``."""
    # Running out of bytes is by far the commonest corruption; say so plainly.
    kind = "truncated" if isinstance(exc, struct.error | cs.StreamError) else "malformed"
    return FormatError(f"{what} at offset {offset}: {kind} ({_detail(exc)})")


def parse(definition: cs.Construct, data: bytes, what: str, offset: int = 0) -> Any:
    """Parse ``data`` with ``definition``; any parser error becomes a FormatError.

    ``what`` names the structure (and its partition or table), ``offset`` where it
    starts in it, so the message points at the broken bytes.
    """
    try:
        return definition.parse(data)
    except PARSE_ERRORS as exc:
        raise malformed(what, offset, exc) from None


def unpacker(record: struct.Struct, name: str, prefix: str = "") -> Unpack:
    """A fast ``unpack(buf, pos, part, offset)`` for ``record``, named ``name`` in errors.

    The fast-path counterpart of :func:`parse`: a closure around ``unpack_from`` costs
    no more than calling it through a method, and a short buffer still becomes a
    FormatError naming ``{prefix}{part} {name}`` and ``offset``.
    """
    unpack_from = record.unpack_from

    def unpack(buf: bytes | bytearray | memoryview, pos: int, part: str, offset: int) -> tuple:
        try:
            return unpack_from(buf, pos)
        except PARSE_ERRORS as exc:
            what = name if part == name else f"{part} {name}"
            raise malformed(prefix + what, offset, exc) from None

    return unpack


def build(definition: cs.Construct, value: dict[str, Any], what: str) -> bytes:
    """Encode ``value`` with ``definition``; a value that does not fit is a FormatError."""
    try:
        return definition.build(value)
    except (cs.ConstructError, struct.error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what}: cannot encode ({_detail(exc)})") from None
