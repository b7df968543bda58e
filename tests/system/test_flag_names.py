"""One idea, one flag spelling in every command (issue 12): the commands that judge
signatures (spec/format.md §12.1) all take ``--allow-untrusted`` and ``--allow-unsigned``;
``--trust``, install's and update's earlier spelling, stays accepted but hidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appimg.errors import PolicyError, UsageError

from ..helpers import appimg, assert_one_line_error

#: The commands that judge an image's signatures, and what they take to allow more.
JUDGING = ("install", "update", "run", "mount")
SIGNATURE_FLAGS = ("--allow-untrusted", "--allow-unsigned")


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run")}  # fmt: skip


@pytest.mark.parametrize("command", JUDGING)
def test_every_command_that_judges_signatures_spells_its_flags_alike(command: str) -> None:
    shown = appimg(command, "--help").stdout
    for flag in SIGNATURE_FLAGS:
        assert flag in shown
    assert "--trust" not in shown  # the old spelling is accepted, not advertised


@pytest.mark.parametrize("flag", ["--allow-untrusted", "--trust"])
def test_install_and_update_take_both_spellings(
    tmp_path: Path, hello_image: Path, flag: str
) -> None:
    env = _env(tmp_path)
    refused = appimg("install", hello_image, env=env, check=False)
    assert_one_line_error(refused)
    assert refused.returncode == PolicyError.exit_code
    assert "--allow-untrusted" in refused.stderr  # the message names the current spelling
    accepted = json.loads(appimg("install", hello_image, flag, "--json", env=env).stdout)
    assert accepted["signature"]["state"] == "accepted"
    # update parses it too: the image is refused as the installed one, not the flag.
    again = appimg("update", hello_image, flag, env=env, check=False)
    assert again.returncode == UsageError.exit_code, again.stderr
    assert "already installed" in again.stderr
