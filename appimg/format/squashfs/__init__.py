"""SquashFS 4.0 (as written by squashfs-tools / squashfs-tools-ng): a lazy, random-access,
thread-safe reader over an :class:`appimg.format.source.ByteSource`.

:mod:`.structs` declares the on-disk format, :mod:`.compression` the block
codecs, :mod:`.reader` the reader itself.
"""

from appimg.format.squashfs.compression import COMPRESSORS
from appimg.format.squashfs.reader import Inode, SquashfsReader, read_superblock

__all__ = ["COMPRESSORS", "Inode", "SquashfsReader", "read_superblock"]
