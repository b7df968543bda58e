"""Ed25519 signing keys: key files, key ids, signatures (spec/format.md §Signature partition)."""

from __future__ import annotations

import base64
import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg.errors import SignatureError, UsageError
from appimg.format import keys

MESSAGE = b'{"statement":"anything canonical"}'


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "release.key"
    keys.generate(path)
    return path


def one_line(exc: pytest.ExceptionInfo[Exception], path: Path | str) -> str:
    """The error is a single line that names the file."""
    text = str(exc.value)
    assert "\n" not in text and str(path) in text, text
    return text


def test_generate_load_sign_check_round_trip(key_path: Path) -> None:
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private = keys.load_private(key_path)
    public = keys.load_public(key_path.with_name("release.key.pub"))
    assert keys.raw_public(public) == keys.raw_public(private.public_key())
    entry = keys.sign(private, MESSAGE)
    assert set(entry) == {"algorithm", "key_id", "public_key", "signature"}
    assert entry["algorithm"] == "ed25519"
    assert base64.b64decode(entry["public_key"]) == keys.raw_public(public)
    assert keys.check(entry, MESSAGE)


def test_public_file_is_spki_pem(key_path: Path) -> None:
    pem = key_path.with_name("release.key.pub").read_bytes()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert pem == keys.public_pem(keys.load_private(key_path).public_key())


def test_key_id_is_truncated_sha256_of_raw_public_key(key_path: Path) -> None:
    public = keys.load_private(key_path).public_key()
    raw = keys.raw_public(public)
    assert len(raw) == 32
    assert keys.key_id(public) == keys.key_id(raw) == hashlib.sha256(raw).hexdigest()[:32]
    assert keys.sign(keys.load_private(key_path), MESSAGE)["key_id"] == keys.key_id(raw)
    assert keys.key_id(Ed25519PrivateKey.generate().public_key()) != keys.key_id(raw)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.update(signature=base64.b64encode(bytes(64)).decode()),
        lambda e: e.update(key_id="0" * 32),
        lambda e: e.update(public_key=base64.b64encode(bytes(32)).decode()),
        lambda e: e.update(public_key="not base64!"),
        lambda e: e.update(signature=e["signature"][:-4]),
        lambda e: e.pop("public_key"),
        lambda e: e.update(public_key=None),
    ],
)
def test_check_refuses_altered_entries(key_path: Path, change) -> None:
    entry = keys.sign(keys.load_private(key_path), MESSAGE)
    change(entry)
    assert keys.check(entry, MESSAGE) is False


def test_check_refuses_another_message(key_path: Path) -> None:
    entry = keys.sign(keys.load_private(key_path), MESSAGE)
    assert not keys.check(entry, MESSAGE + b" ")


def test_generate_does_not_overwrite_without_force(key_path: Path) -> None:
    before = key_path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        keys.generate(key_path)
    assert key_path.read_bytes() == before
    keys.generate(key_path, force=True)
    assert key_path.read_bytes() != before
    pub = keys.load_public(key_path.with_name("release.key.pub"))
    assert keys.raw_public(pub) == keys.raw_public(keys.load_private(key_path).public_key())


def test_generate_into_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "key"
    with pytest.raises(UsageError) as exc:
        keys.generate(target)
    one_line(exc, target)


def _pem_private(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


WRONG_PRIVATE = {
    "garbage": (b"not a key at all\n", "not an unencrypted PEM private key"),
    "empty": (b"", "not an unencrypted PEM private key"),
    "binary": (bytes(range(256)), "not an unencrypted PEM private key"),
    "ec key": (_pem_private(ec.generate_private_key(ec.SECP256R1())), "not an Ed25519 key"),
    "encrypted": (
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "not an unencrypted PEM private key",
    ),
    "oversized": (b"-----BEGIN PRIVATE KEY-----\n" + b"A" * keys.MAX_KEY_FILE, "too large"),
}


@pytest.mark.parametrize("name", WRONG_PRIVATE)
def test_wrong_private_key_files_give_one_clear_error(tmp_path: Path, name: str) -> None:
    data, message = WRONG_PRIVATE[name]
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    with pytest.raises(SignatureError, match=message) as exc:
        keys.load_private(path)
    one_line(exc, path)


def test_public_key_file_is_not_a_private_key(key_path: Path) -> None:
    pub = key_path.with_name("release.key.pub")
    with pytest.raises(SignatureError, match="not an unencrypted PEM private key") as exc:
        keys.load_private(pub)
    one_line(exc, pub)


@pytest.mark.parametrize("loader", [keys.load_private, keys.load_public])
def test_missing_key_file_is_a_usage_error(tmp_path: Path, loader) -> None:
    with pytest.raises(UsageError) as exc:
        loader(tmp_path / "missing.key")
    one_line(exc, tmp_path / "missing.key")


def test_public_key_from_any_of_its_spellings(key_path: Path) -> None:
    private = keys.load_private(key_path)
    raw = keys.raw_public(private.public_key())
    spellings = {
        "private key file": key_path.read_bytes(),
        "public key file": key_path.with_name("release.key.pub").read_bytes(),
        "base64": base64.b64encode(raw) + b"\n",
    }
    for where, data in spellings.items():
        assert keys.raw_public(keys.parse_public(data, where)) == raw, where
    assert keys.raw_public(keys.load_public(key_path)) == raw  # its public half


def test_public_pem_read_without_the_pem_parser_is_the_same_key(key_path: Path) -> None:
    """The one-line PEM form is read by hand (launch time); other layouts of the same
    SubjectPublicKeyInfo go to the PEM parser, and all give the same key."""
    pem = key_path.with_name("release.key.pub").read_bytes()
    raw = keys.raw_public(keys.load_private(key_path).public_key())
    body = pem.split(b"\n")[1]
    layouts = {
        "as written": pem,
        "CRLF": pem.replace(b"\n", b"\r\n"),
        "wrapped": b"\n".join([pem.split(b"\n")[0], body[:40], body[40:], pem.split(b"\n")[2]]),
    }
    for where, data in layouts.items():
        assert keys.raw_public(keys.parse_public(data, where)) == raw, where
    assert keys._plain_spki(pem.strip()) == raw
    assert keys._plain_spki(layouts["wrapped"].strip()) is None


def test_reading_a_public_key_file_needs_no_pem_parser(key_path: Path) -> None:
    """A launch reads every trusted key: that must not import cryptography's
    ``serialization`` (~15 ms)."""
    code = (
        "import sys; from pathlib import Path; from appimg.format import keys\n"
        f"print(keys.key_id(keys.load_public(Path({str(key_path)!r} + '.pub'))))\n"
        "assert 'cryptography.hazmat.primitives.serialization' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == keys.key_id(keys.load_private(key_path).public_key())


WRONG_PUBLIC = {
    "garbage": (b"not a key", "not an Ed25519 public key"),
    "short base64": (base64.b64encode(bytes(31)), "not an Ed25519 public key"),
    "long base64": (base64.b64encode(bytes(33)), "not an Ed25519 public key"),
    "bad PEM": (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "not an Ed25519 public key"),
    "ec public key": (
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "not an Ed25519 key",
    ),
    "ec private key": (_pem_private(ec.generate_private_key(ec.SECP256R1())),
                       "not an Ed25519 key"),
}  # fmt: skip


@pytest.mark.parametrize("name", WRONG_PUBLIC)
def test_wrong_public_keys_give_one_clear_error(tmp_path: Path, name: str) -> None:
    data, message = WRONG_PUBLIC[name]
    with pytest.raises(SignatureError, match=message) as exc:
        keys.parse_public(data, "--key")
    one_line(exc, "--key")
    path = tmp_path / "bad.pub"
    path.write_bytes(data)
    with pytest.raises(SignatureError, match=message) as exc:
        keys.load_public(path)
    one_line(exc, path)


def test_oversized_public_key_file(tmp_path: Path) -> None:
    path = tmp_path / "big.pub"
    path.write_bytes(b"A" * (keys.MAX_KEY_FILE + 1))
    with pytest.raises(SignatureError, match="too large") as exc:
        keys.load_public(path)
    one_line(exc, path)


# -- weak points and canonical base64 (§8.3) --------------------------------------------------

_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P


def _decode_point(encoded: bytes) -> tuple[int, int] | None:
    """RFC 8032 §5.1.3 point decoding, for checking the blocklist independently."""
    y = int.from_bytes(encoded, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return None
    return (_P - x if x & 1 != sign else x), y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P,
    )


def _times8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _add(point, point)
    return point


def test_every_small_order_point_is_weak_and_the_blocklist_holds_nothing_else() -> None:
    small = set()
    for y in keys._SMALL_ORDER_Y:
        for sign in (0, 1):
            encoded = (y | sign << 255).to_bytes(32, "little")
            point = _decode_point(encoded)
            if point is not None:
                assert _times8(point) == (0, 1), encoded.hex()
                small.add(point)
            assert keys.is_weak_point(encoded)
    assert len(small) == 8  # the whole 8-torsion subgroup


def test_non_canonical_points_are_weak_and_real_keys_are_not() -> None:
    for y in (_P, _P + 1, 2**255 - 1):
        assert keys.is_weak_point(y.to_bytes(32, "little"))
    for _ in range(20):
        raw = keys.raw_public(Ed25519PrivateKey.generate().public_key())
        assert not keys.is_weak_point(raw)


def test_key_files_refuse_a_small_order_key(tmp_path: Path) -> None:
    for y in keys._SMALL_ORDER_Y:
        text = base64.b64encode(y.to_bytes(32, "little"))
        with pytest.raises(SignatureError):
            keys.parse_public(text, "key.pub")
    pem = tmp_path / "identity.pub"
    spki = bytes.fromhex("302a300506032b6570032100") + bytes([1]) + bytes(31)
    pem.write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki) + b"\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(SignatureError):
        keys.load_public(pem)


def test_check_refuses_the_identity_forgery_that_openssl_accepts() -> None:
    identity = bytes([1]) + bytes(31)
    entry = {
        "algorithm": "ed25519",
        "key_id": keys.key_id(identity),
        "public_key": base64.b64encode(identity).decode(),
        "signature": base64.b64encode(identity + bytes(32)).decode(),
    }
    assert not keys.check(entry, MESSAGE)


def test_check_refuses_a_small_order_r_under_a_real_key() -> None:
    private = Ed25519PrivateKey.generate()
    entry = keys.sign(private, MESSAGE)
    signature = base64.b64decode(entry["signature"])
    entry["signature"] = base64.b64encode(bytes([1]) + bytes(31) + signature[32:]).decode()
    assert not keys.check(entry, MESSAGE)


def test_base64_must_be_canonical() -> None:
    assert keys.b64decode_strict("AA==") == b"\0"
    for text in ("AB==", "AAB=", "AA", "AA=", " AA==", "AA==\n", "A-==", "AAA_"):
        with pytest.raises(ValueError):
            keys.b64decode_strict(text)
    with pytest.raises(ValueError):
        keys.b64decode_strict("AA==", 2)
    private = Ed25519PrivateKey.generate()
    entry = keys.sign(private, MESSAGE)
    key_text = entry["public_key"]  # 32 bytes: one "=" of padding, 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    entry["public_key"] = key_text[:-2] + alphabet[alphabet.index(key_text[-2]) | 1] + "="
    assert base64.b64decode(entry["public_key"]) == base64.b64decode(key_text)
    assert not keys.check(entry, MESSAGE)
    with pytest.raises(SignatureError):
        keys.parse_public(entry["public_key"].encode(), "key.pub")
