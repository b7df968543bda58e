"""Weak Ed25519 keys and non-canonical base64 through the CLI (spec/format.md §8.3, §9.2).

OpenSSL accepts a signature by the identity point (R = identity, S = 0) for every
message; appimg follows libsodium and calls it invalid, in ``verify``, ``inspect``
and ``install`` alike, and refuses such a key in a key file and in ``trust add``.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appimg.format import keys

from ..forge import rewrite_signatures
from ..helpers import appimg, assert_one_line_error
from .test_install_store import home_env, store_dir

IDENTITY = bytes([1]) + bytes(31)
#: R = the identity point, S = 0: OpenSSL verifies it under the identity key for any message.
IDENTITY_SIGNATURE = IDENTITY + bytes(32)


def forged_entry() -> dict[str, str]:
    return {
        "algorithm": "ed25519",
        "key_id": keys.key_id(IDENTITY),
        "public_key": base64.b64encode(IDENTITY).decode(),
        "signature": base64.b64encode(IDENTITY_SIGNATURE).decode(),
    }


def test_openssl_alone_accepts_the_forged_signature() -> None:
    # The premise: without appimg's own check the forgery would pass.
    Ed25519PublicKey.from_public_bytes(IDENTITY).verify(IDENTITY_SIGNATURE, b"any statement")


def test_small_order_signature_is_invalid_in_verify_inspect_and_install(
    tmp_path: Path, hello_image: Path
) -> None:
    image = Path(shutil.copy(hello_image, tmp_path / "forged.appimg"))
    rewrite_signatures(image, lambda block: block.signatures.__setitem__(0, forged_entry()))

    result = appimg("verify", image, check=False)
    assert_one_line_error(result)
    assert result.returncode == 5

    info = json.loads(appimg("inspect", image, "--json").stdout)
    assert [s["valid"] for s in info["signatures"]] == [False]

    env = home_env(tmp_path / "home")
    result = appimg("install", image, "--trust", "--allow-unsigned", env=env, check=False)
    assert_one_line_error(result)
    assert result.returncode == 5 and "invalid signature" in result.stderr
    assert not store_dir(tmp_path / "home").exists()


def test_trust_add_refuses_a_small_order_key(tmp_path: Path) -> None:
    key_file = tmp_path / "identity.pub"
    key_file.write_text(base64.b64encode(IDENTITY).decode() + "\n")
    env = home_env(tmp_path / "home")
    result = appimg("trust", "add", key_file, env=env, check=False)
    assert_one_line_error(result)
    assert result.returncode == 5
    assert not (tmp_path / "home" / ".config" / "appimg" / "trusted-keys").exists() or not any(
        (tmp_path / "home" / ".config" / "appimg" / "trusted-keys").iterdir()
    )


def test_non_canonical_base64_signature_is_invalid(tmp_path: Path, hello_image: Path) -> None:
    image = Path(shutil.copy(hello_image, tmp_path / "bits.appimg"))

    def set_unused_bits(block: object) -> None:
        entry = block.signatures[0]  # type: ignore[attr-defined]
        text = entry["signature"]  # 64 bytes: ends in "==", the last digit has 4 unused bits
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        last = alphabet.index(text[-3])
        entry["signature"] = text[:-3] + alphabet[last | 1] + "=="
        assert base64.b64decode(entry["signature"]) == base64.b64decode(text)

    rewrite_signatures(image, set_unused_bits)
    result = appimg("verify", image, check=False)
    assert_one_line_error(result)
    assert result.returncode == 5
