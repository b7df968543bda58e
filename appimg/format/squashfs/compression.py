"""Block decompressors of SquashFS 4.0 as written by squashfs-tools / squashfs-tools-ng.

Every metadata block, data block and fragment block is compressed on its own
(superblock ``compression_id``: 1 gzip, 2 lzma, 3 lzo, 4 xz, 5 lz4, 6 zstd).
Each decompressor takes the compressed bytes and the largest output the block
may legally have (8 KiB for metadata, ``block_size`` for data) and never
produces, or allocates, more than that: a hostile image must not be able to
make the reader allocate without bound or loop. Any failure is a
:class:`~appimg.errors.FormatError`.
"""

from __future__ import annotations

import lzma
import threading
import zlib
from collections.abc import Callable
from typing import Any

from appimg.errors import FormatError

Buffer = bytes | bytearray | memoryview

#: ``(data, max_output) -> bytes``; raises FormatError on corrupt data or overflow.
Decompressor = Callable[[Buffer, int], bytes]

#: Memory a single decoder may use for its window / dictionary. squashfs-tools
#: size them to the block (at most 1 MiB); a hostile stream header may claim
#: gigabytes, which must fail instead of being allocated.
DECODER_MEMORY_LIMIT = 64 << 20
ZSTD_MAX_WINDOW = 16 << 20

#: superblock ``compression_id`` -> name, as squashfs-tools spells it (``-comp``).
COMPRESSORS: dict[int, str] = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


def _gzip(data: Buffer, limit: int) -> bytes:
    # A zlib stream (RFC 1950 header + adler32), not a gzip file; the window size
    # comes from the stream header, so compressor options need not be read.
    d = zlib.decompressobj()
    try:
        # One byte of headroom: a valid block of exactly ``limit`` bytes still
        # reaches end-of-stream, an oversized one shows up as ``limit + 1``.
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise FormatError(f"corrupt gzip block: {e}") from None
    if len(out) > limit:
        raise FormatError(f"gzip block expands beyond {limit} bytes")
    if not d.eof:
        raise FormatError("gzip block is truncated")
    return out


def _lzma_with(fmt: int, name: str) -> Decompressor:
    def decompress(data: Buffer, limit: int) -> bytes:
        d = lzma.LZMADecompressor(format=fmt, memlimit=DECODER_MEMORY_LIMIT)
        try:
            out = d.decompress(data, limit + 1)
        except lzma.LZMAError as e:
            raise FormatError(f"corrupt {name} block: {e}") from None
        if len(out) > limit:
            raise FormatError(f"{name} block expands beyond {limit} bytes")
        if not d.eof:
            raise FormatError(f"{name} block is truncated")
        return out

    return decompress


def _lz4(data: Buffer, limit: int) -> bytes:
    # squashfs stores raw LZ4 *block* format (no frame, no size prefix); with
    # ``uncompressed_size`` given, python-lz4 treats it as the output bound.
    import lz4.block  # imported on first use, like zstandard: start-up pays for neither

    try:
        return lz4.block.decompress(data, uncompressed_size=limit)
    except lz4.block.LZ4BlockError as e:
        raise FormatError(f"corrupt lz4 block (or larger than {limit} bytes): {e}") from None


# ZstdDecompressor objects are not thread-safe: one per thread.
_zstd_local = threading.local()
zstandard: Any = None  # the module, imported by the first zstd block of each thread


def _zstd(data: Buffer, limit: int) -> bytes:
    global zstandard
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        import zstandard

        dctx = _zstd_local.dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    try:
        # A frame that declares its content size makes ``decompress`` allocate
        # that size whatever ``max_output_size`` says: refuse large claims first.
        declared = zstandard.frame_content_size(data)
        if declared > limit:
            raise FormatError(f"zstd block declares {declared} bytes, more than {limit}")
        return dctx.decompress(data, max_output_size=limit)
    except zstandard.ZstdError as e:
        raise FormatError(f"corrupt zstd block (or larger than {limit} bytes): {e}") from None


def _lzo_or_none() -> Decompressor | None:
    try:
        import lzo  # type: ignore[import-not-found]  # optional: python-lzo
    except ImportError:
        return None

    def decompress(data: Buffer, limit: int) -> bytes:
        try:
            out = lzo.decompress(bytes(data), False, limit)
        except lzo.error as e:
            raise FormatError(f"corrupt lzo block (or larger than {limit} bytes): {e}") from None
        if len(out) > limit:
            raise FormatError(f"lzo block expands beyond {limit} bytes")
        return out

    return decompress


def decompressor(compression_id: int) -> Decompressor:
    """Return the decompressor for a superblock ``compression_id``; FormatError if unusable."""
    name = COMPRESSORS.get(compression_id)
    if name is None:
        raise FormatError(f"unknown squashfs compressor id {compression_id}")
    if name == "gzip":
        return _gzip
    if name == "xz":
        # squashfs-tools writes a complete .xz stream per block (with BCJ filters
        # inside the stream if any were chosen).
        return _lzma_with(lzma.FORMAT_XZ, "xz")
    if name == "lzma":
        # Legacy "lzma" compressor: an LZMA-alone stream (5 property bytes and
        # the 8-byte uncompressed size, then the raw stream).
        return _lzma_with(lzma.FORMAT_ALONE, "lzma")
    if name == "lz4":
        return _lz4
    if name == "zstd":
        return _zstd
    lzo_decompress = _lzo_or_none()
    if lzo_decompress is None:
        raise FormatError("squashfs image uses lzo compression; install python-lzo to read it")
    return lzo_decompress
