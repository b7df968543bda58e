"""Ed25519 signing keys (spec/format.md §Signature partition).

A private key is a PKCS#8 PEM file (mode 0600); its public half, ``KEY.pub``, is a
SubjectPublicKeyInfo PEM file, as ``openssl pkey -pubout`` writes. A key is named
by its key id: the first 16 bytes of SHA-256 over the raw 32-byte public key, in hex.

Signature checks follow libsodium's rule (§8.3), stricter than OpenSSL's: a public
key or a signature's R that is a small-order point or a non-canonical encoding is
refused, so that a key of small order (which "signs" any message) is never valid,
and two conforming readers agree on every signature. Base64 is strict and
canonical (§8.3): standard alphabet, padding, zero unused bits.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from appimg.digests import sha256
from appimg.errors import SignatureError, UsageError
from appimg.files import read_capped

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_KEY_FILE = 16 * 1024

#: The field prime of Curve25519/Ed25519.
_P = 2**255 - 19
#: Encodings (sign bit cleared) of the points of order 1, 2, 4 and 8: libsodium's
#: ``ge25519_has_small_order`` blocklist (ed25519_ref10.c). With the sign bit ignored
#: these cover all eight small-order points; its two further entries, p and p + 1,
#: are non-canonical and refused by :func:`is_weak_point` anyway.
_SMALL_ORDER_Y = frozenset(
    {
        0,  # (±sqrt(-1), 0): order 4
        1,  # the identity: order 1
        _P - 1,  # (0, -1): order 2
        # the two y coordinates of the four points of order 8
        int.from_bytes(
            bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
            "little",
        ),
        int.from_bytes(
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
            "little",
        ),
    }
)


#: The DER of an Ed25519 SubjectPublicKeyInfo up to its 32 key bytes (RFC 8410 §4).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN, _PEM_END = b"-----BEGIN PUBLIC KEY-----", b"-----END PUBLIC KEY-----"


def _plain_spki(text: bytes) -> bytes | None:
    """The raw key of an Ed25519 public key in the one PEM form ``appimg keygen`` and
    ``openssl pkey -pubout`` write (one canonical base64 line), else None (then the PEM
    parser decides). Every launch reads the trusted keys: this spares it importing
    ``serialization`` (~15 ms)."""
    lines = text.split(b"\n")
    if len(lines) != 3 or lines[0] != _PEM_BEGIN or lines[2] != _PEM_END:
        return None
    try:
        der = b64decode_strict(lines[1], len(_SPKI_PREFIX) + 32)
    except ValueError:
        return None
    return der[len(_SPKI_PREFIX) :] if der.startswith(_SPKI_PREFIX) else None


def _ed25519() -> ModuleType:
    # The crypto library is loaded on first use: it costs a launch ~5 ms warm and ~35 ms
    # with a cold page cache, and a launch that finds its signature already checked
    # (appimg.host.trust) and reads trusted keys with load_public_raw() never needs it.
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def _serialization() -> ModuleType:
    # Imported on use: it costs ~10 ms, and checking signatures does not need it.
    from cryptography.hazmat.primitives import serialization

    return serialization


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()  # not public_bytes(): that needs `serialization`


def key_id(public: Ed25519PublicKey | bytes) -> str:
    raw = public if isinstance(public, bytes) else raw_public(public)
    return sha256(raw).hexdigest()[:32]


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
    key = _ed25519().Ed25519PrivateKey.generate()
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


def b64decode_strict(text: str | bytes, length: int | None = None) -> bytes:
    """Standard base64 with padding, in its one canonical form (§8.3); ValueError else.

    ``b64decode(validate=True)`` accepts non-zero unused bits (``AB==`` and ``AA==``
    decode alike), so the result is re-encoded and compared.
    """
    raw_text = text.encode("ascii") if isinstance(text, str) else text
    decoded = base64.b64decode(raw_text, validate=True)
    if base64.b64encode(decoded) != raw_text:
        raise ValueError("base64 is not in canonical form")
    if length is not None and len(decoded) != length:
        raise ValueError(f"expected {length} bytes, got {len(decoded)}")
    return decoded


def is_weak_point(encoded: bytes) -> bool:
    """True if a 32-byte point encoding is non-canonical (y ≥ p) or of small order.

    libsodium's ``ge25519_is_canonical`` and ``ge25519_has_small_order``; OpenSSL
    accepts such keys, with which one signature can verify for every message.
    """
    if len(encoded) != 32:
        return True
    y = int.from_bytes(encoded, "little") & ((1 << 255) - 1)
    return y >= _P or y in _SMALL_ORDER_Y


def _checked_raw(raw: bytes, where: str) -> bytes:
    if is_weak_point(raw):
        raise SignatureError(f"{where}: a weak Ed25519 public key (small order or non-canonical)")
    return raw


def _checked_public(raw: bytes, where: str) -> Ed25519PublicKey:
    return _ed25519().Ed25519PublicKey.from_public_bytes(_checked_raw(raw, where))


def load_private(path: Path) -> Ed25519PrivateKey:
    serialization = _serialization()
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SignatureError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, _ed25519().Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def parse_public(data: bytes, where: str) -> Ed25519PublicKey:
    """A public key from SPKI PEM, a private key PEM (its public half) or raw base64.

    Weak keys (small order, non-canonical: §8.3) are refused as not Ed25519 keys: no
    valid signature can be made with them, so trusting one would only be a trap.
    """
    text = data.strip()
    plain = _plain_spki(text)
    if plain is not None:
        try:
            return _checked_public(plain, where)
        except ValueError:
            raise SignatureError(f"{where}: not an Ed25519 public key (PEM or base64)") from None
    serialization = _serialization()
    try:
        if b"PRIVATE KEY" in text:
            key = serialization.load_pem_private_key(text, password=None).public_key()
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = _ed25519().Ed25519PublicKey.from_public_bytes(b64decode_strict(text, 32))
    except (ValueError, TypeError):
        raise SignatureError(f"{where}: not an Ed25519 public key (PEM or base64)") from None
    if not isinstance(key, _ed25519().Ed25519PublicKey):
        raise SignatureError(f"{where}: not an Ed25519 key")
    return _checked_public(raw_public(key), where)


def load_public(path: Path) -> Ed25519PublicKey:
    return parse_public(_read(path), str(path))


def load_public_raw(path: Path) -> bytes:
    """The raw 32 bytes of the public key in ``path``, checked as :func:`parse_public`
    checks it. The one-line PEM that keygen and ``trust add`` write is read without the
    crypto library (weak keys refused all the same); any other form goes through it."""
    data = _read(path).strip()
    plain = _plain_spki(data)
    if plain is None:
        return raw_public(parse_public(data, str(path)))
    return _checked_raw(plain, str(path))


def sign(key: Ed25519PrivateKey, message: bytes) -> dict[str, str]:
    public = key.public_key()
    return {
        "algorithm": "ed25519",
        "key_id": key_id(public),
        "public_key": base64.b64encode(raw_public(public)).decode(),
        "signature": base64.b64encode(key.sign(message)).decode(),
    }


def check(entry: dict[str, str], message: bytes) -> bool:
    """True if the signature entry is a valid Ed25519 signature of ``message`` (§8.3).

    OpenSSL checks S < L; the weak-point checks on the key and on R are libsodium's.
    """
    from cryptography.exceptions import InvalidSignature

    try:
        raw = b64decode_strict(entry["public_key"], 32)
        signature = b64decode_strict(entry["signature"], 64)
        if is_weak_point(raw) or is_weak_point(signature[:32]):
            return False
        _ed25519().Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False
    return key_id(raw) == entry.get("key_id")
