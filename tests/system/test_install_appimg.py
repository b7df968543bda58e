"""appimg installed the way the README installs it for a user (issue 12): a wheel
built from the source tree, installed into a fresh virtual environment that sees
the system's site packages (python3-seccomp), works on its own: ``--version``,
``pack`` of the bundled example (bit-identical to the clone's), and the commands
that read the package data under ``appimg/data/``.

No network: the wheel is built with the backend installed here (no build
isolation) and installed without its dependencies; those are taken from this
interpreter's environment through a ``.pth`` file, as pipx would have installed them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import HELLO, ROOT, appimg


def _run(argv: list[object], env: dict[str, str] | None = None, cwd: Path | None = None,
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}): {proc.stderr}"
    return proc


def _dependency_dirs() -> list[str]:
    """The sys.path entries holding appimg's dependencies in this environment."""
    dirs = []
    for requirement in importlib.metadata.requires("appimg") or []:
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group()  # type: ignore[union-attr]
        dirs.append(str(importlib.metadata.distribution(name).locate_file("")))
    return list(dict.fromkeys(dirs))


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="the build backend (setuptools) is not installed")  # fmt: skip
def test_a_wheel_builds_installs_and_runs_on_its_own(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "appimg", source / "appimg",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", source, "-w", dist])  # fmt: skip
    (wheel,) = dist.glob("appimg-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--system-site-packages", venv])
    _run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    where_to = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = _run([venv / "bin/python", "-c", where_to]).stdout.strip()
    Path(purelib, "appimg-test-deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    # A user's environment: no clone on any path, the system's tools on PATH.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": "0",
           "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    command = venv / "bin" / "appimg"
    where = _run([venv / "bin/python", "-c", "import appimg; print(appimg.__file__)"], env,
                 cwd=tmp_path).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where
    version = importlib.metadata.version("appimg")
    assert _run([command, "--version"], env, cwd=tmp_path).stdout.strip() == f"appimg {version}"

    image = tmp_path / "Hello.appimg"
    _run([command, "pack", HELLO, "-o", image], env, cwd=tmp_path)
    assert os.access(image, os.X_OK)
    reference = tmp_path / "reference.appimg"
    appimg("pack", HELLO, "-o", reference, env={"SOURCE_DATE_EPOCH": "0"})
    assert image.read_bytes() == reference.read_bytes()
    _run([command, "verify", "--full", image], env, cwd=tmp_path)
    # The host profile and the shipped whitelist are package data (appimg/data/).
    granted = json.loads(_run([command, "permissions", image, "--json"], env).stdout)
    clone = json.loads(appimg("permissions", image, "--json", env=env).stdout)
    assert granted == clone
