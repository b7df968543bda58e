"""The one place a parse of on-disk bytes changes its error type (spec/format.md §Container,
§Verity partition, §Payload).

Every binary structure of an image (protective MBR, GPT header and entries, the
dm-verity superblock, the SquashFS records) is read through :func:`parse` (a
``construct`` definition) or through an unpacker from :func:`unpacker` (a
precompiled ``struct.Struct``, for the SquashFS hot paths). Whatever the parser
raises on short or malformed bytes becomes a :class:`~appimg.errors.FormatError`
naming the structure and its offset in the partition; nothing else escapes, so
callers and the CLI only ever see appimg's own error.

``construct`` is imported only by :func:`parse` and :func:`build` (and by the
modules that declare definitions): opening an image to run it uses the
``struct`` records alone and does not pay for construct's ~15 ms import.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appimg.errors import FormatError

if TYPE_CHECKING:
    import construct as cs

#: What a parse of hostile bytes with a ``struct`` record can raise: ``struct.error``,
#: decoding errors of string fields (``UnicodeDecodeError`` is a ``ValueError``), and
#: overflows of computed sizes. :func:`parse` adds construct's own errors.
PARSE_ERRORS: tuple[type[Exception], ...] = (
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
    cs = sys.modules.get("construct")  # a construct error means construct is loaded
    if cs is not None and isinstance(exc, cs.ConstructError) and path:
        # construct's message is "Error in path (parsing) -> field\n<why>".
        field = path.rsplit(" -> ", 1)[-1]
        text = f"{field}: {text.split(chr(10), 1)[-1]}"
    # Compiled parsers raise errors without a message; errors are printed as one line.
    return " ".join(text.split()) or type(exc).__name__


def malformed(what: str, offset: int, exc: BaseException) -> FormatError:
    """The FormatError for ``exc`` raised while parsing ``what`` at ``offset``."""
    # Running out of bytes is by far the commonest corruption; say so plainly.
    cs = sys.modules.get("construct")
    short = isinstance(exc, struct.error) or (cs is not None and isinstance(exc, cs.StreamError))
    kind = "truncated" if short else "malformed"
    return FormatError(f"{what} at offset {offset}: {kind} ({_detail(exc)})")


def parse(definition: cs.Construct, data: bytes, what: str, offset: int = 0) -> Any:
    """Parse ``data`` with ``definition``; any parser error becomes a FormatError.

    ``what`` names the structure (and its partition or table), ``offset`` where it
    starts in it, so the message points at the broken bytes.
    """
    import construct as cs

    try:
        return definition.parse(data)
    except (cs.ConstructError, *PARSE_ERRORS) as exc:
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


def unpack(record: struct.Struct, data: bytes, what: str, offset: int = 0) -> tuple[Any, ...]:
    """The fields of ``record`` at the start of ``data``: :func:`parse` for a precompiled
    ``struct.Struct`` (the launch path's GPT and verity superblock)."""
    try:
        return record.unpack_from(data)
    except PARSE_ERRORS as exc:
        raise malformed(what, offset, exc) from None


def pack(record: struct.Struct, what: str, *fields: Any) -> bytes:
    """Encode ``fields`` with ``record``; a value that does not fit is a FormatError."""
    try:
        return record.pack(*fields)
    except (struct.error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what}: cannot encode ({exc})") from None


def build(definition: cs.Construct, value: dict[str, Any], what: str) -> bytes:
    """Encode ``value`` with ``definition``; a value that does not fit is a FormatError."""
    import construct as cs

    try:
        return definition.build(value)
    except (cs.ConstructError, struct.error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what}: cannot encode ({_detail(exc)})") from None
