"""The launch path of ``appimg run`` (issue "Launch in under 60 ms"): what it imports,
and the mount grace period that turns a relaunch into a warm launch (spec/run.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..helpers import appimg

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)")
APP_ID = "org.example.Launch"


@pytest.fixture
def installed(tmp_path: Path, keypair: tuple[Path, Path]) -> dict[str, str]:
    """A signed trivial app installed for a user of its own; the user's environment."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    os.symlink("busybox", tree / "bin" / "true")
    (tree / "appimg.toml").write_text(
        f'id = "{APP_ID}"\nname = "Launch"\nversion = "1"\nentrypoint = "bin/true"\n'
    )
    image = tmp_path / "launch.appimg"
    appimg("pack", tree, "-o", image, "--sign", keypair[0])
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[name] = ""
    appimg("install", "--trust", image, env=env)
    return env


def _imported(result_stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reported on stderr."""
    names = set()
    for line in result_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def test_run_of_an_installed_app_imports_neither_construct_nor_the_packer(
    installed: dict[str, str],
) -> None:
    env = {**installed, "PYTHONPROFILEIMPORTTIME": "1", "APPIMG_MOUNT_GRACE": "0"}
    for attempt in ("cold", "again"):
        result = appimg("run", APP_ID, env=env)
        modules = _imported(result.stderr)
        assert "appimg.format.image" in modules, attempt  # the report is real
        tooling = ("construct", "appimg.format.packer", "appimg.format.payload.writer")
        unwanted = {m for m in modules if m.split(".")[0] in tooling or m.startswith(tooling)}
        assert not unwanted, f"{attempt}: {sorted(unwanted)}"
