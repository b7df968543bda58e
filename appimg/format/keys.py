"""Ed25519 signing keys (spec/format.md §Signature partition).

A private key is a PKCS#8 PEM file (mode 0600); its public half, ``KEY.pub``, is a
SubjectPublicKeyInfo PEM file, as ``openssl pkey -pubout`` writes. A key is named
by its key id: the first 16 bytes of SHA-256 over the raw 32-byte public key, in hex.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from types import ModuleType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appimg.errors import SignatureError, UsageError
from appimg.files import read_capped

MAX_KEY_FILE = 16 * 1024


def _serialization() -> ModuleType:
    # Imported on use: it costs ~10 ms, and checking signatures does not need it.
    from cryptography.hazmat.primitives import serialization

    return serialization


def raw_public(key: Ed25519PublicKey) -> bytes:
    serialization = _serialization()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey | bytes) -> str:
    raw = public if isinstance(public, bytes) else raw_public(public)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_pem(key: Ed25519PublicKey) -> bytes:
    serialization = _serialization()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Write a new key to ``path`` (0600) and its public half to ``path.pub``."""
    serialization = _serialization()
    pub_path = path.with_name(path.name + ".pub")
    for target in (path, pub_path):
        if target.exists() and not force:
            raise UsageError(f"{target}: already exists (use --force to overwrite)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        pub_path.write_bytes(public_pem(key.public_key()))
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    return key


def _read(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_KEY_FILE, SignatureError, "too large to be a key")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def load_private(path: Path) -> Ed25519PrivateKey:
    serialization = _serialization()
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SignatureError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def parse_public(data: bytes, where: str) -> Ed25519PublicKey:
    """A public key from SPKI PEM, a private key PEM (its public half) or raw base64."""
    serialization = _serialization()
    text = data.strip()
    try:
        if b"PRIVATE KEY" in text:
            key = serialization.load_pem_private_key(text, password=None).public_key()
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise SignatureError(f"{where}: not an Ed25519 public key (PEM or base64)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{where}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    return parse_public(_read(path), str(path))


def sign(key: Ed25519PrivateKey, message: bytes) -> dict[str, str]:
    public = key.public_key()
    return {
        "algorithm": "ed25519",
        "key_id": key_id(public),
        "public_key": base64.b64encode(raw_public(public)).decode(),
        "signature": base64.b64encode(key.sign(message)).decode(),
    }


def check(entry: dict[str, str], message: bytes) -> bool:
    """True if the signature entry is a valid Ed25519 signature of ``message``."""
    try:
        raw = base64.b64decode(entry["public_key"], validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
        public.verify(base64.b64decode(entry["signature"], validate=True), message)
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False
    return key_id(raw) == entry.get("key_id")
