"""Build hostile images: valid integrity data around whatever bytes a test chooses.

A forged image passes every hash check, so what it exercises is the parser that
comes after them (manifest, squashfs), the way a malicious but signed image would.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg.format import canonical, keys, packer
from appimg.format.image import Image
from appimg.format.statement import decode, sha256


def forge(
    output: Path,
    *,
    payload: bytes,
    manifest: dict[str, Any] | None = None,
    manifest_json: bytes | None = None,
) -> Path:
    manifest = manifest or {
        "format_version": 1, "id": "org.example.Forged", "name": "Forged", "version": "1",
        "arch": "x86_64", "entrypoint": "bin/app", "profile": "none", "exports": {},
    }  # fmt: skip
    if manifest_json is None:
        manifest_json = canonical.dumps(manifest)
    payload = payload + bytes(-len(payload) % 4096)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        path = Path(tmp, "payload")
        path.write_bytes(payload)
        fd = os.open(path, os.O_RDONLY)
        try:
            stmt_manifest = manifest if isinstance(manifest, dict) else {"id": "", "version": ""}
            packer.assemble(output, stmt_manifest, manifest_json, fd, (), Path(tmp))
        finally:
            os.close(fd)
    return output


def payload_of(image: Path) -> bytes:
    from appimg.format.image import Image

    with Image.open(image) as img:
        part = img.partition("appimg-payload")
    with image.open("rb") as f:
        f.seek(part.offset)
        return f.read(part.size)


def loose_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def rewrite_signatures(image: Path, change: object) -> None:
    """Rewrite the signature partition in place after ``change(block)`` edited it."""
    with Image.open(image) as opened:
        block = opened.signature_block
        offset = opened.partition("appimg-signature").offset
    change(block)  # type: ignore[operator]
    with open(image, "r+b") as handle:
        handle.seek(offset)
        handle.write(block.encode())


def break_signature(block: object, index: int = 0) -> None:
    """Replace a signature by a well-formed one over other bytes: well-formed, invalid."""
    other = Ed25519PrivateKey.generate()
    entry = block.signatures[index]  # type: ignore[attr-defined]
    entry["signature"] = base64.b64encode(other.sign(b"something else")).decode()


def fix_gpt_crcs(data: bytearray) -> None:
    """Recompute both GPT headers' array and header CRC-32s after an edit."""
    last = len(data) // 512 - 1
    for header_lba, array_lba in ((1, 2), (last, last - 32)):
        header = header_lba * 512
        array = bytes(data[array_lba * 512 : (array_lba + 32) * 512])
        struct.pack_into("<I", data, header + 88, zlib.crc32(array))
        struct.pack_into("<I", data, header + 16, 0)
        struct.pack_into("<I", data, header + 16, zlib.crc32(bytes(data[header : header + 92])))


def reseal(
    image: Path,
    edit: Callable[[bytearray], None] = lambda data: None,
    statement: Callable[[dict[str, Any]], None] = lambda s: None,
    signing_keys: Sequence[Ed25519PrivateKey] = (),
) -> None:
    """Edit an image's bytes, then make CRCs, digests and signatures consistent again.

    ``edit`` changes the file's bytes (the GPT CRCs are recomputed after it);
    ``statement`` then changes the statement, whose head and tail digests were
    already refreshed. The image is re-signed by ``signing_keys`` (unsigned if none),
    so only the rule a test breaks on purpose can fail.
    """
    with Image.open(image) as opened:
        head_size = opened.layout.head_size
        tail_offset = opened.layout.tail_offset
        sig = opened.partition("appimg-signature")
    data = bytearray(image.read_bytes())
    edit(data)
    fix_gpt_crcs(data)
    block = decode(bytes(data[sig.offset : sig.end]))
    block.statement["disk"]["head_sha256"] = sha256(bytes(data[:head_size]))
    block.statement["disk"]["tail_sha256"] = sha256(bytes(data[tail_offset:]))
    statement(block.statement)
    block.signatures = [keys.sign(key, block.message) for key in signing_keys]
    data[sig.offset : sig.end] = block.encode()
    image.write_bytes(bytes(data))


def grow_partition(image: Path, name: str, extra: int = 4096) -> None:
    """Make partition ``name`` ``extra`` zero bytes longer, the rest re-laid and re-sealed.

    The result is what a writer that pads a partition beyond the v1 size would make:
    consistent GPT, digests and statement (unsigned), so only the size rule can fail.
    """
    from appimg.format.container import gpt
    from appimg.format.statement import SignatureBlock, build_statement

    with Image.open(image) as opened:
        layout = opened.layout
        manifest_json, manifest, verity = opened.manifest_json, opened.manifest, opened.verity
    data = image.read_bytes()
    sizes = {p.name: p.size + (extra if p.name == name else 0) for p in layout.partitions}
    new = gpt.plan(sizes, {p.name: p.uuid for p in layout.partitions}, layout.disk_guid)
    head, tail = gpt.head_bytes(new), gpt.tail_bytes(new)
    statement = build_statement(new, head, tail, manifest_json, manifest, verity)
    body = [data[p.offset : p.end].ljust(sizes[p.name], b"\0") for p in layout.partitions[:-1]]
    image.write_bytes(b"".join([head, *body, SignatureBlock(statement).encode(), tail]))
