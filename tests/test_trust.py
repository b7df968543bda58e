"""Trust decided in one place: the trust store and the one rule every command applies
(spec/format.md §12, spec/xdg-index.md §4, spec/overlay-rules.md §8, spec/run.md)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    decide,
    list_trusted,
    load_trusted,
    remove_trusted,
)

from .helpers import HELLO, appimg, assert_one_line_error


def _rewrite_signatures(image: Path, change: object) -> None:
    """Rewrite the signature partition in place after ``change(block)`` edited it."""
    with Image.open(image) as opened:
        block = opened.signature_block
        offset = opened.partition("appimg-signature").offset
    change(block)  # type: ignore[operator]
    with open(image, "r+b") as handle:
        handle.seek(offset)
        handle.write(block.encode())


def _break_signature(block: object, index: int = 0) -> None:
    """Replace a signature by a well-formed one over other bytes: well-formed, invalid."""
    other = Ed25519PrivateKey.generate()
    entry = block.signatures[index]  # type: ignore[attr-defined]
    entry["signature"] = base64.b64encode(other.sign(b"something else")).decode()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]) -> dict[str, Path]:
    """unsigned, signed (by ``keypair``), other (by a second key), invalid (a broken
    signature by ``keypair``'s key), mixed (a valid one by ``keypair`` and a broken one)."""
    base = tmp_path_factory.mktemp("trust")
    other_key = base / "other.key"
    appimg("keygen", "-o", other_key)
    out = {name: base / f"{name}.appimg" for name in ("unsigned", "signed", "other")}
    appimg("pack", HELLO, "-o", out["unsigned"])
    appimg("pack", HELLO, "-o", out["signed"], "--sign", keypair[0])
    appimg("pack", HELLO, "-o", out["other"], "--sign", other_key)
    out["invalid"] = Path(shutil.copy(out["signed"], base / "invalid.appimg"))
    _rewrite_signatures(out["invalid"], _break_signature)
    out["mixed"] = base / "mixed.appimg"
    appimg("pack", HELLO, "-o", out["mixed"], "--sign", keypair[0], "--sign", other_key)
    with Image.open(out["mixed"]) as opened:
        ids = [s["key_id"] for s in opened.signature_block.signatures]
    other_id = keys.key_id(keys.load_public(other_key))
    _rewrite_signatures(out["mixed"], lambda b: _break_signature(b, ids.index(other_id)))
    return out


@pytest.fixture()
def trusting(tmp_path: Path, keypair: tuple[Path, Path]) -> UserDirs:
    """A user whose trust store holds ``keypair``'s public key."""
    dirs = UserDirs(tmp_path / "home")
    add_trusted(dirs, keypair[1])
    return dirs


# -- the rule ---------------------------------------------------------------------------------


def test_trusted_key_gives_trusted(images: dict[str, Path], trusting: UserDirs) -> None:
    with Image.open(images["signed"]) as image:
        verdict = decide(image, trusting)
    assert verdict.state == TRUSTED and verdict.warning == ""
    assert verdict.to_json() == {"state": TRUSTED, "key_ids": verdict.key_ids}
    assert [s.trusted for s in verdict.statuses] == [True]


def test_untrusted_key_needs_consent(images: dict[str, Path], tmp_path: Path) -> None:
    nobody = UserDirs(tmp_path / "nobody")
    with Image.open(images["signed"]) as image:
        with pytest.raises(PolicyError, match=r"not a trusted key.*--trust"):
            decide(image, nobody, untrusted_flag="--trust")
        accepted = decide(image, nobody, allow_untrusted=True)
        assert accepted.state == ACCEPTED and "--allow-untrusted" in accepted.warning
        pinned = decide(image, nobody, pinned=accepted.key_ids)
        assert pinned.state == PINNED and pinned.key_ids == accepted.key_ids


def test_unsigned_needs_consent(images: dict[str, Path], tmp_path: Path) -> None:
    with Image.open(images["unsigned"]) as image:
        with pytest.raises(PolicyError, match=r"not signed.*--allow-unsigned"):
            decide(image, UserDirs(tmp_path), allow_untrusted=True)
        verdict = decide(image, UserDirs(tmp_path), allow_unsigned=True)
    assert verdict.state == UNSIGNED and verdict.key_ids == [] and "unsigned" in verdict.warning


@pytest.mark.parametrize("name", ["invalid", "mixed"])
def test_broken_signature_is_refused_whatever_is_allowed(
    images: dict[str, Path], trusting: UserDirs, keypair: tuple[Path, Path], name: str
) -> None:
    kid = keys.key_id(keys.load_public(keypair[1]))
    with Image.open(images[name]) as image:
        for allow in (False, True):
            with pytest.raises(SignatureError, match="invalid signature"):
                decide(image, trusting, allow_unsigned=allow, allow_untrusted=allow,
                       pinned=[kid])  # fmt: skip


# -- every command applies it alike -------------------------------------------------------------

#: Each command with every flag that allows more than the default.
COMMANDS = [
    ("verify",),
    ("verify", "--full"),
    ("install", "--allow-unsigned", "--trust"),
    ("run", "--allow-untrusted"),
    ("mount", "--allow-untrusted"),
    ("mount", "--allow-untrusted", "--backend", "fuse"),
]


@pytest.mark.parametrize("name", ["invalid", "mixed"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_refuses_a_broken_signature_alike(
    images: dict[str, Path], tmp_path: Path, keypair: tuple[Path, Path], name: str,
    command: tuple[str, ...],
) -> None:  # fmt: skip
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    (tmp_path / "run").mkdir(mode=0o700)
    appimg("trust", "add", keypair[1], env=env)  # a trusted signer does not rescue it
    verb, *flags = command
    result = appimg(verb, images[name], *flags, env=env, check=False)
    assert_one_line_error(result)
    assert result.returncode == SignatureError.exit_code, result.stderr
    assert "invalid signature" in result.stderr
    # Refused before anything happened: nothing installed, nothing mounted.
    assert not (tmp_path / "data" / "appimg" / "index.json").exists()
    mounts = json.loads(appimg("mounts", "--json", env=env).stdout)
    assert mounts == []


# -- the trust store ------------------------------------------------------------------------------


def test_trust_store_add_list_remove(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    dirs = UserDirs(tmp_path / "home")
    kid = keys.key_id(keys.load_public(keypair[1]))
    assert load_trusted(dirs).keys().isdisjoint({kid})
    added, path, new = add_trusted(dirs, keypair[0])  # a private key file trusts its public half
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
