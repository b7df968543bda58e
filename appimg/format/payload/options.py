"""Payload compression choices (spec/format.md §Payload); kept apart so the CLI loads fast."""

COMPRESSORS = ("zstd", "xz", "lz4", "gzip")
DEFAULT_COMPRESSOR = "zstd"
DEFAULT_BLOCK_SIZE = 128 * 1024
#: Compressor -> (lowest, highest, default) level; lz4 has only fast (1) and high (> 1).
LEVELS = {"zstd": (1, 22, 15), "xz": (0, 9, 6), "gzip": (1, 9, 9), "lz4": (1, 12, 1)}
