"""appimg: a single-file, signed, verifiable app image format and its tools."""

__version__ = "0.1.0"

#: The on-disk format version this code writes and the newest it reads (spec/format.md).
FORMAT_VERSION = 1
