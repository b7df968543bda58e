"""Opening an image: the O(1) checks and the verified payload (spec/format.md §Verification).

:meth:`Image.open` (§11.1) reads only the head (MBR, primary GPT), the tail (backup
GPT), the signature and manifest partitions and the verity superblock, and checks
that the statement binds them all; it reads no payload byte, so it does not check
that the payload is SquashFS. The verity tree is checked by :meth:`check_tree`
(§11.2: reads the tree, never the payload); :meth:`check_payload` (§11.3) checks
every payload block and then the SquashFS superblock and padding; every payload byte
read through :attr:`Image.payload` is checked against the tree on the way (§11.4).
"""

from __future__ import annotations

import os
import stat
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from appimg.errors import FormatError, IntegrityError, UsageError
from appimg.format import canonical
from appimg.format import manifest as manifest_mod
from appimg.format.container import gpt
from appimg.format.container.gpt import DiskLayout
from appimg.format.container.partitions import MANIFEST, PAYLOAD, SIGNATURE, VERITY, Partition
from appimg.format.limits import MAX_MANIFEST_BYTES, SIGNATURE_PARTITION_SIZE
from appimg.format.source import FileRegion
from appimg.format.statement import (
    SignatureBlock,
    check_disk,
    check_manifest_info,
    check_partitions,
    decode,
    sha256,
)
from appimg.format.verity.hashtree import (
    VerifiedSource,
    VerityParams,
    check_data,
    check_superblock,
    check_tree,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from appimg.format.squashfs import SquashfsReader


# A NamedTuple, not a frozen dataclass: defined at import on the launch path, it
# costs ~70 us instead of ~500 us.
class SignatureStatus(NamedTuple):
    key_id: str
    valid: bool
    trusted: bool

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "valid": self.valid, "trusted": self.trusted}


class Image:
    """An open, structurally verified image. Use as a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        size = os.lseek(fd, 0, os.SEEK_END)  # also right for block devices, unlike st_size
        head = self._pread(0, min(size, gpt.FIRST_PARTITION_OFFSET))
        tail = self._pread(max(0, size - gpt.TAIL_SIZE), min(size, gpt.TAIL_SIZE))
        self.layout: DiskLayout = gpt.read_layout(head, tail, size)
        tail = self._pread(self.layout.tail_offset, size - self.layout.tail_offset)
        if any(tail[: -gpt.TAIL_SIZE]):  # §3.3 step 12: the gap before the backup GPT
            raise FormatError("the gap before the backup GPT is not zero")
        self.signature_block = self._read_signature_block()
        self._check_binding(head, tail)
        self.manifest_json, self.manifest = self._read_manifest()
        self.verity = VerityParams.from_json(self.signature_block.statement.get("verity"))
        if self.verity.data_blocks * self.verity.data_block_size != self.partition(PAYLOAD).size:
            raise IntegrityError(
                "payload partition size does not match the signed verity data size"
            )
        # Held to the same rule as the manifest partition: exactly what a v1 writer makes,
        # so no unverified bytes trail the tree (§7.3, §11.1 check 20).
        if self.partition(VERITY).size != gpt.align(self.verity.tree_size):
            raise FormatError(
                f"verity partition: {self.partition(VERITY).size} bytes, but the tree "
                f"needs align({self.verity.tree_size}) = {gpt.align(self.verity.tree_size)}"
            )
        check_superblock(self.region(VERITY), self.verity)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Image:
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise UsageError(f"{path}: is a directory, not an image file")
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise UsageError(f"{path}: not a regular file")
            return cls(path, fd)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw access -----------------------------------------------------------------------

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise FormatError(f"{self.path}: truncated")
        return data

    def partition(self, name: str) -> Partition:
        return self.layout.by_name(name)

    def region(self, name: str) -> FileRegion:
        part = self.partition(name)
        return FileRegion(self._fd, part.offset, part.size, name)

    # -- the O(1) checks ------------------------------------------------------------------

    def _read_signature_block(self) -> SignatureBlock:
        part = self.partition(SIGNATURE)
        if part.size != SIGNATURE_PARTITION_SIZE:
            raise FormatError(
                f"signature partition is {part.size} bytes, not {SIGNATURE_PARTITION_SIZE}"
            )
        return decode(self._pread(part.offset, part.size))

    def _check_binding(self, head: bytes, tail: bytes) -> None:
        """§11.1 checks 9-13: the statement describes exactly this file's GPT and partitions."""
        statement = self.signature_block.statement
        disk = check_disk(statement["disk"])
        if disk["size"] != self.layout.file_size:
            raise IntegrityError(
                "file size differs from the signed statement (truncated or extended)"
            )
        if disk["head_sha256"] != sha256(head[: self.layout.head_size]):
            raise IntegrityError(
                "the protective MBR or primary GPT does not match the signed statement"
            )
        if disk["tail_sha256"] != sha256(tail):
            raise IntegrityError("the backup GPT does not match the signed statement")
        partitions = check_partitions(statement["partitions"])
        if partitions != [p.to_json() for p in self.layout.partitions]:
            raise IntegrityError("the partition table does not match the signed statement")
        if disk["guid"] != str(self.layout.disk_guid):
            raise IntegrityError("the disk GUID does not match the signed statement")

    def _read_manifest(self) -> tuple[bytes, dict[str, Any]]:
        part = self.partition(MANIFEST)
        info = check_manifest_info(self.signature_block.statement["manifest"])
        size = info["size"]
        if not 0 < size <= MAX_MANIFEST_BYTES:
            raise FormatError(
                f"manifest: size {size!r} exceeds the {MAX_MANIFEST_BYTES} byte limit"
            )
        if part.size != gpt.align(size):
            raise FormatError("manifest partition: its size does not match the manifest")
        raw = self._pread(part.offset, part.size)
        body = raw[:size]
        if sha256(body) != info["sha256"] or any(raw[size:]):
            raise IntegrityError("manifest partition does not match the signed digest")
        manifest = manifest_mod.validate(canonical.loads(body, "manifest"))
        statement = self.signature_block.statement
        if statement["app_id"] != manifest["id"] or statement["app_version"] != manifest["version"]:
            raise IntegrityError("statement: app id or version differs from the manifest")
        return body, manifest

    # -- further checks -------------------------------------------------------------------

    def check_tree(self) -> None:
        """Verify the whole hash tree up to the signed root hash (reads no payload)."""
        check_tree(self.region(VERITY), self.verity)

    def check_payload(self, progress: Any = None) -> None:
        """``verify --full`` (§11.3): every payload block against the tree, then the
        payload's SquashFS superblock and zero padding (a FormatError if not SquashFS)."""
        check_data(self.region(PAYLOAD), self.region(VERITY), self.verity, progress)
        from appimg.format.squashfs import read_superblock

        source = VerifiedSource(self.region(PAYLOAD), self.region(VERITY), self.verity)
        used = read_superblock(source).bytes_used
        size = self.partition(PAYLOAD).size
        if size != gpt.align(used, max(gpt.ALIGNMENT, self.verity.data_block_size)):
            raise FormatError(
                f"payload partition: {size} bytes for a {used}-byte filesystem "
                "(padding is not to the next 4 KiB or data block boundary)"
            )
        if any(source.read(used, size - used)):
            raise FormatError("payload partition: bytes after the filesystem are not zero")

    def signatures(
        self,
        trusted: Collection[str] = (),
        check: Callable[[dict[str, str], bytes], bool] | None = None,
    ) -> list[SignatureStatus]:
        """Each signature's validity; ``trusted``: the key ids of trusted keys.
        ``check``: what checks one signature entry (default :func:`keys.check`)."""
        if not self.signature_block.signatures:
            return []  # unsigned: no need to load the crypto library
        if check is None:
            from appimg.format.keys import check

        message = self.signature_block.message
        result = []
        for entry in self.signature_block.signatures:
            valid = check(entry, message)
            kid = entry.get("key_id", "?")
            result.append(SignatureStatus(kid, valid, valid and kid in trusted))
        return result

    # -- the payload ----------------------------------------------------------------------

    @cached_property
    def payload(self) -> SquashfsReader:
        """The payload filesystem; every block it reads is checked against the verity tree."""
        from appimg.format.squashfs import (
            SquashfsReader,  # imported here: inspect/verify never need it
        )

        source = VerifiedSource(self.region(PAYLOAD), self.region(VERITY), self.verity)
        return SquashfsReader(source)

    def info(self) -> dict[str, Any]:
        """What ``inspect --json`` prints."""
        v = self.verity
        return {
            "path": str(self.path),
            "format_version": self.signature_block.statement["format_version"],
            "size": self.layout.file_size,
            "disk_guid": str(self.layout.disk_guid),
            "partitions": [p.to_json() for p in self.layout.partitions],
            "manifest": self.manifest,
            "verity": {
                "root_hash": v.root_hash.hex(),
                "salt": v.salt.hex(),
                "hash_algorithm": v.hash_algorithm,
                "data_block_size": v.data_block_size,
                "hash_block_size": v.hash_block_size,
                "data_blocks": v.data_blocks,
            },
        }
