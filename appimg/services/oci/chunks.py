"""Content-defined chunks of an image file and the chunk index (spec/distribution.md §7).

A delta update reuses the parts of the installed image that the new one also has.
The image is cut into chunks at places its *content* decides, so that a change in
the middle of the payload (a file changed, added or grown, which shifts every byte
after it in the SquashFS) moves the cut points with the bytes instead of changing
every fixed-size block after it, as casync and zsync do.

The cut rule (``anchor-run-v1``) is chosen so that the scan runs at C speed in
CPython: each byte is classed in or out of a fixed set of 128 byte values
(:data:`CLASS_TABLE`, one ``bytes.translate``), and a chunk ends right after the
first run of :data:`RUN` in-set bytes that ends at least :data:`MIN_SIZE` bytes into
it (one ``bytes.find``), or at :data:`MAX_SIZE`. On high-entropy bytes (a compressed
payload, a hash tree) a run of 15 starts at a given byte with probability 2^-15, so
chunks average about 16 + 64 KiB. The decision looks at the last 15 bytes only, like
a rolling hash over a 15-byte window.

The index lists every chunk (offset, length, SHA-256) of one image; it is published
beside the image as a referring artifact (:mod:`.publish`) and read back by
:mod:`.delta`. It is a hint: whatever it says, the assembled file is checked
against the manifest's layer digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from appimg.errors import FormatError

ALGORITHM = "anchor-run-v1"
MIN_SIZE = 16 << 10
MAX_SIZE = 256 << 10
RUN = 15
#: Byte value b is "in the set" iff (157·b + 17) mod 256 ≥ 128: a bijection, so exactly
#: half the values; 0x00 and 0xff are out, so zero or 0xff padding never cuts.
CLASS_TABLE = bytes(1 if (157 * b + 17) % 256 >= 128 else 0 for b in range(256))
_ANCHOR = b"\x01" * RUN

INDEX_TYPE = "application/vnd.appimg.chunks.v1+json"
#: A larger index is refused before parsing (a 1 TiB image averages 13M chunks; the
#: index of anything realistic is far below this).
MAX_INDEX = 64 << 20
_HEX = re.compile(r"[0-9a-f]{64}\Z")
READ = 8 << 20


@dataclass(frozen=True)
class Chunk:
    offset: int
    length: int
    sha256: str  # hex


def cuts(data: bytes, marks: bytes, start: int, final: bool) -> Iterator[int]:
    """End offsets of the chunks of ``data[start:]`` (``marks`` is ``data`` translated by
    :data:`CLASS_TABLE`); without ``final``, stops before a chunk that could still
    grow with more data."""
    end = len(data)
    while start < end:
        if not final and end - start < MAX_SIZE:
            return
        limit = min(start + MAX_SIZE, end)
        found = marks.find(_ANCHOR, start + MIN_SIZE - RUN, limit)
        cut = found + RUN if found >= 0 else limit
        yield cut
        start = cut


def chunk_file(handle: IO[bytes], size: int | None = None) -> list[Chunk]:
    """The chunks of a whole file, read in pieces (memory: a few MiB)."""
    out: list[Chunk] = []
    data = b""
    marks = b""
    base = 0  # file offset of data[0]
    eof = False
    while not eof:
        piece = handle.read(READ)
        eof = not piece
        data += piece
        marks += piece.translate(CLASS_TABLE)
        start = 0
        for cut in cuts(data, marks, 0, eof):
            out.append(Chunk(base + start, cut - start,
                             hashlib.sha256(data[start:cut]).hexdigest()))  # fmt: skip
            start = cut
        data, marks, base = data[start:], marks[start:], base + start
    if size is not None and base != size:
        raise FormatError(f"the file changed size while it was read ({base} != {size})")
    return out


def chunk_bytes(data: bytes) -> list[Chunk]:
    marks = data.translate(CLASS_TABLE)
    out, start = [], 0
    for cut in cuts(data, marks, 0, True):
        out.append(Chunk(start, cut - start, hashlib.sha256(data[start:cut]).hexdigest()))
        start = cut
    return out


def index_json(digest: str, size: int, chunks: list[Chunk]) -> bytes:
    """The chunk index blob of the image ``digest`` (its bytes are what is digested)."""
    body = {
        "schemaVersion": 1,
        "mediaType": INDEX_TYPE,
        "algorithm": {"name": ALGORITHM, "min": MIN_SIZE, "max": MAX_SIZE, "run": RUN},
        "image": {"digest": digest, "size": size},
        "chunks": [[c.offset, c.length, c.sha256] for c in chunks],
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def parse_index(data: bytes, digest: str, size: int, where: str) -> list[Chunk]:
    """The chunks of the image ``digest`` of ``size`` bytes, from an index blob; a
    FormatError unless they cover the file exactly, in order."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{where}: the chunk index is not JSON") from None
    if not isinstance(body, dict) or body.get("schemaVersion") != 1:
        raise FormatError(f"{where}: not an appimg chunk index")
    image: Any = body.get("image")
    if not isinstance(image, dict) or image.get("digest") != digest or image.get("size") != size:
        raise FormatError(f"{where}: the chunk index is of another image")
    raw = body.get("chunks")
    if not isinstance(raw, list):
        raise FormatError(f"{where}: the chunk index lists no chunks")
    out: list[Chunk] = []
    offset = 0
    for item in raw:
        ok = isinstance(item, list) and len(item) == 3 and item[0] == offset \
            and isinstance(item[1], int) and not isinstance(item[1], bool) \
            and item[1] > 0 and isinstance(item[2], str) and _HEX.match(item[2])  # fmt: skip
        if not ok:
            raise FormatError(f"{where}: chunk {len(out)} of the index is not "
                              "[offset, length, sha256] following the one before")  # fmt: skip
        out.append(Chunk(offset, item[1], item[2]))
        offset += item[1]
    if offset != size:
        raise FormatError(f"{where}: the chunks cover {offset} bytes, not {size}")
    return out
