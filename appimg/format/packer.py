"""``appimg pack``: app directory → one image file (spec/format.md §Packing).

Order of work: compile the manifest, write the payload with squashfs-tools-ng,
hash it into the verity tree, lay out the GPT, bind everything in the statement,
sign it, and write the file under a temporary name that is renamed into place.
Every derived value (salt, GUIDs) is a hash of the inputs, so the same tree,
SOURCE_DATE_EPOCH and keys give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg.errors import FormatError, UsageError
from appimg.format import canonical, keys
from appimg.format.container import gpt
from appimg.format.container.partitions import MANIFEST, PAYLOAD, SIGNATURE, VERITY
from appimg.format.limits import MAX_MANIFEST_BYTES, SIGNATURE_PARTITION_SIZE
from appimg.format.manifest import compile_manifest
from appimg.format.payload import options as payload_options
from appimg.format.payload import writer as payload_writer
from appimg.format.statement import SignatureBlock, build_statement
from appimg.format.verity.hashtree import build_from_file


@dataclass(frozen=True)
class PackOptions:
    compressor: str = payload_options.DEFAULT_COMPRESSOR
    level: int | None = None
    block_size: int = payload_options.DEFAULT_BLOCK_SIZE
    jobs: int | None = None
    signing_keys: Sequence[Ed25519PrivateKey] = ()


@dataclass(frozen=True)
class PackResult:
    output: Path
    manifest: dict
    size: int
    payload_size: int
    root_hash: str
    key_ids: list[str]


def source_date_epoch(env: dict[str, str]) -> int:
    value = env.get("SOURCE_DATE_EPOCH", "0") or "0"
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None
    if not 0 <= epoch < 2**32:
        raise UsageError("SOURCE_DATE_EPOCH is out of range")
    return epoch


def derived_uuid(*parts: bytes) -> uuid.UUID:
    """A version-4-shaped UUID derived from ``parts``, so packing stays reproducible."""
    digest = hashlib.sha256(b"appimg-uuid\0" + b"\0".join(parts)).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def _copy_range(src_fd: int, dst_fd: int, size: int, dst_offset: int) -> None:
    copied = 0
    while copied < size:
        n = os.copy_file_range(src_fd, dst_fd, size - copied, copied, dst_offset + copied)
        if n == 0:
            raise FormatError("payload shrank while it was being copied")
        copied += n


def pack(
    app_dir: Path,
    output: Path,
    options: PackOptions,
    env: dict[str, str],
    progress: payload_writer.Progress | None = None,
    check: Callable[[Path], None] | None = None,
) -> PackResult:
    """Pack ``app_dir`` into ``output``. ``check``, if given, sees the finished image
    under its temporary name and may raise to keep it from being renamed into place."""
    if not app_dir.is_dir():
        raise UsageError(f"{app_dir}: not a directory")
    manifest = compile_manifest(app_dir)
    manifest_json = canonical.dumps(manifest)
    if len(manifest_json) > MAX_MANIFEST_BYTES:
        raise FormatError(f"manifest is {len(manifest_json)} bytes (limit {MAX_MANIFEST_BYTES})")
    output = output.absolute()
    if output.is_dir():
        raise UsageError(f"{output}: is a directory")
    if not output.parent.is_dir():  # say so before a temporary file's name shows up instead
        raise UsageError(f"{output}: no such directory: {output.parent}")
    if output.resolve().is_relative_to(app_dir.resolve()):
        raise UsageError(f"{output}: the image cannot be written inside the app directory")
    epoch = source_date_epoch(env)

    with tempfile.TemporaryDirectory(prefix=".appimg-pack-", dir=output.parent) as tmp:
        payload_path = Path(tmp, "payload.sqfs")
        payload_writer.write_payload(
            app_dir,
            payload_path,
            compressor=options.compressor,
            level=options.level,
            block_size=options.block_size,
            jobs=options.jobs,
            mtime=epoch,
            progress=progress,
        )
        payload_fd = os.open(payload_path, os.O_RDONLY)
        try:
            result = assemble(
                output, manifest, manifest_json, payload_fd, options.signing_keys, Path(tmp), check
            )
        finally:
            os.close(payload_fd)
    return result


def assemble(
    output: Path,
    manifest: dict,
    manifest_json: bytes,
    payload_fd: int,
    signing_keys: Sequence[Ed25519PrivateKey],
    tmp: Path,
    check: Callable[[Path], None] | None = None,
) -> PackResult:
    """Write the image around a finished payload: verity, GPT, statement, signatures.

    Takes the manifest bytes as given, so tests can also build hostile images with it.
    """
    payload_size = os.fstat(payload_fd).st_size
    if payload_size % gpt.ALIGNMENT or payload_size == 0:
        raise FormatError("the payload is not a non-empty multiple of 4 KiB")
    salt = hashlib.sha256(b"appimg-verity-salt\0" + manifest_json).digest()
    verity_uuid = derived_uuid(b"verity", salt)
    verity_bytes, params = build_from_file(payload_fd, 0, payload_size, salt, verity_uuid.bytes)
    seed = (manifest_json, params.root_hash)
    layout = gpt.plan(
        {
            MANIFEST: gpt.align(len(manifest_json)),
            PAYLOAD: payload_size,
            VERITY: gpt.align(len(verity_bytes)),
            SIGNATURE: SIGNATURE_PARTITION_SIZE,
        },
        {name: derived_uuid(name.encode(), *seed) for name in gpt.ORDER},
        derived_uuid(b"disk", *seed),
    )
    head, tail = gpt.head_bytes(layout), gpt.tail_bytes(layout)
    statement = build_statement(layout, head, tail, manifest_json, manifest, params)
    block = SignatureBlock(statement)
    for key in signing_keys:
        block.signatures.append(keys.sign(key, block.message))

    image_tmp = tmp / "image"
    with image_tmp.open("wb") as out:
        out.write(head)
        out.write(manifest_json.ljust(layout.by_name(MANIFEST).size, b"\0"))
        out.flush()
        _copy_range(payload_fd, out.fileno(), payload_size, layout.by_name(PAYLOAD).offset)
        out.seek(layout.by_name(VERITY).offset)
        out.write(verity_bytes.ljust(layout.by_name(VERITY).size, b"\0"))
        out.write(block.encode())
        out.write(tail)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(image_tmp, 0o755)
    if check is not None:
        check(image_tmp)
    os.replace(image_tmp, output)
    return PackResult(
        output=output,
        manifest=manifest,
        size=layout.file_size,
        payload_size=payload_size,
        root_hash=params.root_hash.hex(),
        key_ids=[sig["key_id"] for sig in block.signatures],
    )
