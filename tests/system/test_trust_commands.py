"""Every command refuses a broken signature alike (spec/format.md §12.1): verify,
install, run and mount, with every flag that allows more, give the same exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appimg.errors import SignatureError

from ..helpers import appimg, assert_one_line_error

#: Each command with every flag that allows more than the default.
COMMANDS = [
    ("verify",),
    ("verify", "--full"),
    ("install", "--allow-unsigned", "--allow-untrusted"),
    ("run", "--allow-untrusted", "--allow-unsigned"),
    ("mount", "--allow-untrusted", "--allow-unsigned"),
    ("mount", "--allow-untrusted", "--allow-unsigned", "--backend", "fuse"),
]


@pytest.mark.parametrize("name", ["invalid", "mixed"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_refuses_a_broken_signature_alike(
    signature_images: dict[str, Path], tmp_path: Path, keypair: tuple[Path, Path], name: str,
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
    result = appimg(verb, signature_images[name], *flags, env=env, check=False)
    assert_one_line_error(result)
    assert result.returncode == SignatureError.exit_code, result.stderr
    assert "invalid signature" in result.stderr
    # Refused before anything happened: nothing installed, nothing mounted.
    assert not (tmp_path / "data" / "appimg" / "index.json").exists()
    mounts = json.loads(appimg("mounts", "--json", env=env).stdout)
    assert mounts == []
