"""Build hostile images: valid integrity data around whatever bytes a test chooses.

A forged image passes every hash check, so what it exercises is the parser that
comes after them (manifest, squashfs), the way a malicious but signed image would.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg.format import canonical, packer
from appimg.format.image import Image


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
