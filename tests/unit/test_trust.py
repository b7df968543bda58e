"""Trust decided in one place: the trust store and the one rule every command applies
(spec/format.md §12, spec/xdg-index.md §4, spec/overlay-rules.md §8, spec/run.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from appimg.errors import PolicyError, SignatureError, UsageError
from appimg.format import keys
from appimg.format.image import Image
from appimg.host.dirs import UserDirs
from appimg.host.trust import (
    ACCEPTED,
    PINNED,
    TRUSTED,
    UNSIGNED,
    add_trusted,
    checked_dir,
    decide,
    list_trusted,
    load_trusted,
    remove_trusted,
)


@pytest.fixture()
def trusting(tmp_path: Path, keypair: tuple[Path, Path]) -> UserDirs:
    """A user whose trust store holds ``keypair``'s public key."""
    dirs = UserDirs(tmp_path / "home")
    add_trusted(dirs, keypair[1])
    return dirs


# -- the rule ---------------------------------------------------------------------------------


def test_trusted_key_gives_trusted(signature_images: dict[str, Path], trusting: UserDirs) -> None:
    with Image.open(signature_images["signed"]) as image:
        verdict = decide(image, trusting)
    assert verdict.state == TRUSTED and verdict.warning == ""
    assert verdict.to_json() == {"state": TRUSTED, "key_ids": verdict.key_ids}
    assert [s.trusted for s in verdict.statuses] == [True]


def test_untrusted_key_needs_consent(signature_images: dict[str, Path], tmp_path: Path) -> None:
    nobody = UserDirs(tmp_path / "nobody")
    with Image.open(signature_images["signed"]) as image:
        with pytest.raises(PolicyError, match=r"not a trusted key.*--trust"):
            decide(image, nobody, untrusted_flag="--trust")
        accepted = decide(image, nobody, allow_untrusted=True)
        assert accepted.state == ACCEPTED and "--allow-untrusted" in accepted.warning
        pinned = decide(image, nobody, pinned=accepted.key_ids)
        assert pinned.state == PINNED and pinned.key_ids == accepted.key_ids


def test_unsigned_needs_consent(signature_images: dict[str, Path], tmp_path: Path) -> None:
    with Image.open(signature_images["unsigned"]) as image:
        with pytest.raises(PolicyError, match=r"not signed.*--allow-unsigned"):
            decide(image, UserDirs(tmp_path), allow_untrusted=True)
        verdict = decide(image, UserDirs(tmp_path), allow_unsigned=True)
    assert verdict.state == UNSIGNED and verdict.key_ids == [] and "unsigned" in verdict.warning


@pytest.mark.parametrize("name", ["invalid", "mixed"])
def test_broken_signature_is_refused_whatever_is_allowed(
    signature_images: dict[str, Path], trusting: UserDirs, keypair: tuple[Path, Path], name: str
) -> None:
    kid = keys.key_id(keys.load_public(keypair[1]))
    with Image.open(signature_images[name]) as image:
        for allow in (False, True):
            with pytest.raises(SignatureError, match="invalid signature"):
                decide(image, trusting, allow_unsigned=allow, allow_untrusted=allow,
                       pinned=[kid])  # fmt: skip


# -- signatures checked before ------------------------------------------------------------


def _no_crypto_check(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every real signature check fail loudly; returns the calls seen."""
    calls: list[str] = []

    def refuse(entry: dict[str, str], message: bytes) -> bool:
        calls.append(entry["key_id"])
        return False

    monkeypatch.setattr(keys, "check", refuse)
    return calls


def test_a_remembered_valid_signature_is_not_checked_again(
    signature_images: dict[str, Path], trusting: UserDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Image.open(signature_images["signed"]) as image:
        first = decide(image, trusting, remember=True)
        assert first.state == TRUSTED
        assert len(list(checked_dir(trusting).iterdir())) == 1
        calls = _no_crypto_check(monkeypatch)
        again = decide(image, trusting, remember=True)
        assert again.state == TRUSTED and calls == []  # answered from the record
        # Trust is decided afresh: a key no longer trusted is no longer trusted.
        for path in load_trusted_files(trusting):
            path.unlink()
        with pytest.raises(PolicyError, match="not a trusted key"):
            decide(image, trusting, remember=True)
        # Without remember (``appimg verify``) the record is not consulted.
        with pytest.raises(SignatureError, match="invalid signature"):
            decide(image, trusting, allow_untrusted=True)
    assert calls == [first.key_ids[0]]


def load_trusted_files(dirs: UserDirs) -> list[Path]:
    return [Path(row["file"]) for row in list_trusted(dirs) if row["scope"] == "user"]


@pytest.mark.parametrize("name", ["invalid", "mixed"])
def test_a_broken_signature_is_checked_and_refused_every_time(
    signature_images: dict[str, Path], trusting: UserDirs, name: str
) -> None:
    """Only valid results are remembered; a record of the same key's valid signature
    over the same image does not vouch for a broken one."""
    with Image.open(signature_images["signed"]) as image:
        decide(image, trusting, remember=True)
    with Image.open(signature_images[name]) as image:
        for _ in range(2):
            with pytest.raises(SignatureError, match="invalid signature"):
                decide(image, trusting, allow_untrusted=True, remember=True)


def test_an_unwritable_record_directory_only_costs_the_check(
    signature_images: dict[str, Path], trusting: UserDirs
) -> None:
    checked_dir(trusting).parent.mkdir(parents=True)
    checked_dir(trusting).write_text("not a directory")
    with Image.open(signature_images["signed"]) as image:
        for _ in range(2):
            assert decide(image, trusting, remember=True).state == TRUSTED


def test_trusted_keys_are_read_without_the_crypto_library(
    trusting: UserDirs, keypair: tuple[Path, Path]
) -> None:
    (raw,) = load_trusted(trusting).values()
    assert raw == keys.raw_public(keys.load_public(keypair[1]))
    weak = trusting.config_home / "appimg" / "trusted-keys" / "weak.pub"
    spki = bytes.fromhex("302a300506032b6570032100") + bytes(32)  # y = 0: of small order
    weak.write_bytes(b"-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n"
                     % base64.b64encode(spki))  # fmt: skip
    with pytest.raises(SignatureError, match="weak"):
        keys.load_public_raw(weak)
    assert list(load_trusted(trusting).values()) == [raw]  # the weak key trusts nothing


# -- the trust store ------------------------------------------------------------------------------


def test_trust_store_add_list_remove(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    dirs = UserDirs(tmp_path / "home")
    kid = keys.key_id(keys.load_public(keypair[1]))
    assert load_trusted(dirs).keys().isdisjoint({kid})
    with pytest.raises(UsageError, match="private key"):
        add_trusted(dirs, keypair[0])  # refused: its public half is what to trust
    added, path, new = add_trusted(dirs, keypair[1])
    assert (added, new) == (kid, True)
    assert path == dirs.config_home / "appimg" / "trusted-keys" / f"{kid}.pub"
    assert add_trusted(dirs, keypair[1])[2] is False
    (path.parent / "junk.pub").write_text("not a key")
    rows = {row["file"]: row for row in list_trusted(dirs) if row["scope"] == "user"}
    assert rows[str(path)]["key_id"] == kid
    assert rows[str(path.parent / "junk.pub")]["key_id"] is None
    assert set(load_trusted(dirs)) >= {kid}  # the unreadable file trusts nothing, breaks nothing
    with pytest.raises(UsageError, match="at least 8"):
        remove_trusted(dirs, kid[:4])
    assert remove_trusted(dirs, kid[:8]) == [path]
    assert kid not in load_trusted(dirs)
    with pytest.raises(UsageError, match="no trusted key"):
        remove_trusted(dirs, kid)


def test_the_record_is_named_as_the_spec_says(
    signature_images: dict[str, Path], trusting: UserDirs
) -> None:
    """spec/format.md §12.2: ROOT/HEX, HEX the SHA-256 of the tag, each member's UTF-8
    byte length, ``:``, the value and a NUL, then the signed message."""
    import hashlib

    with Image.open(signature_images["signed"]) as image:
        decide(image, trusting, remember=True)
        root = image.verity.root_hash.hex()
        (entry,) = image.signature_block.signatures
        digest = hashlib.sha256(b"appimg valid ed25519 signature v1\0")
        for field in ("algorithm", "key_id", "public_key", "signature"):
            raw = entry[field].encode()
            digest.update(str(len(raw)).encode() + b":" + raw + b"\0")
        digest.update(image.signature_block.message)
    assert [p.name for p in (checked_dir(trusting) / root).iterdir()] == [digest.hexdigest()]
