"""The launch path of ``appimg run`` (issue "Launch in under 60 ms"): what it imports,
and the mount grace period that turns a relaunch into a warm launch (spec/run.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import appimg

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)")
APP_ID = "org.example.Launch"
APP = '#!/bin/sh\nif [ "$1" = sleep ]; then echo ready; sleep "$2"; fi\n'


@pytest.fixture
def installed(tmp_path: Path, keypair: tuple[Path, Path]) -> dict[str, str]:
    """A signed trivial app installed for a user of its own; the user's environment."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    for tool in ("sh", "sleep"):
        os.symlink("busybox", tree / "bin" / tool)
    (tree / "bin" / "app").write_text(APP)
    (tree / "bin" / "app").chmod(0o755)
    (tree / "appimg.toml").write_text(
        f'id = "{APP_ID}"\nname = "Launch"\nversion = "1"\nentrypoint = "bin/app"\n'
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
    """Nor dataclasses, which brings inspect along (~5 ms), nor argparse (~2 ms: the
    shortcut parses ``run FILE|ID ARGS``), nor uuid (which imports platform: the GPT's
    GUIDs are appimg.format.guid's), nor logging: a new mount's server loads it for its
    first log line, once the mount is ready (after it left this stderr for its log)."""
    env = {**installed, "PYTHONPROFILEIMPORTTIME": "1", "APPIMG_MOUNT_GRACE": "0"}
    for attempt in ("cold", "again"):
        result = appimg("run", APP_ID, env=env)
        assert "appimg.services.mount.daemon" in _imported(result.stderr) or attempt == "again"
        modules = _imported(result.stderr)
        assert "appimg.format.image" in modules, attempt  # the report is real
        tooling = ("construct", "appimg.format.packer", "appimg.format.payload.writer",
                   "dataclasses", "argparse", "uuid", "logging")  # fmt: skip
        unwanted = {m for m in modules if m.split(".")[0] in tooling or m.startswith(tooling)}
        assert not unwanted, f"{attempt}: {sorted(unwanted)}"


def test_run_signed_by_a_trusted_key_reads_the_key_without_the_pem_parser(
    installed: dict[str, str], keypair: tuple[Path, Path]
) -> None:
    """Every launch reads the user's trusted keys: a key file as ``appimg keygen``
    writes it must not cost cryptography's ``serialization`` import (~15 ms)."""
    appimg("trust", "add", keypair[1], env=installed)
    env = {**installed, "PYTHONPROFILEIMPORTTIME": "1", "APPIMG_MOUNT_GRACE": "0"}
    first = _imported(appimg("run", APP_ID, env=env).stderr)
    assert "appimg.format.keys" in first  # the trusted key was read
    assert "cryptography.hazmat.primitives.serialization" not in first
    assert "cryptography.hazmat.primitives.asymmetric.ed25519" in first  # checked once
    # ... and remembered (spec/format.md §12.2): later launches load no crypto library
    again = _imported(appimg("run", APP_ID, env=env).stderr)
    assert "appimg.format.keys" in again
    assert not [m for m in again if m.startswith("cryptography")]
    # nor libseccomp's bindings: the compiled syscall filter was kept
    assert "seccomp" in first and "seccomp" not in again


def _mounts(env: dict[str, str]) -> list[dict]:
    return json.loads(appimg("mounts", "--json", env=env).stdout)


def _gone_within(env: dict[str, str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _mounts(env):
            return True
        time.sleep(0.1)
    return not _mounts(env)


def test_a_relaunch_within_the_grace_period_reuses_the_mount(installed: dict[str, str]) -> None:
    grace = 3.0
    env = {**installed, "APPIMG_MOUNT_GRACE": str(grace)}
    appimg("run", APP_ID, env=env)
    first_done = time.monotonic()
    (first,) = _mounts(env)  # outlives the run
    assert first["status"] == "mounted" and first["references"] == 0
    time.sleep(max(0.0, first_done + grace - 1.0 - time.monotonic()))
    appimg("run", APP_ID, env=env)  # within the first grace period
    again_done = time.monotonic()
    (again,) = _mounts(env)
    assert again["pid"] == first["pid"]  # the same server: the mount was reused
    # Past the first run's grace period, within the second's: still mounted only if
    # the second run started the grace period anew.
    time.sleep(max(0.0, first_done + grace + 0.5 - time.monotonic()))
    if time.monotonic() < again_done + grace - 1.0:  # a slow machine may have used it up
        assert _mounts(env), "the second run did not start the grace period anew"
    assert _gone_within(env, grace + 4.0)  # gone a grace period after the last run
    runtime = Path(env["XDG_RUNTIME_DIR"]) / "appimg"
    assert not [p for p in runtime.iterdir() if p.name != "mounts"], "a mount point was left"


def test_grace_zero_unmounts_with_the_run(installed: dict[str, str]) -> None:
    env = {**installed, "APPIMG_MOUNT_GRACE": "0"}
    appimg("run", APP_ID, env=env)
    assert _gone_within(env, 2.0)  # spec/run.md: released within two seconds
    bad = appimg("run", APP_ID, env={**installed, "APPIMG_MOUNT_GRACE": "soon"}, check=False)
    assert bad.returncode != 0 and "APPIMG_MOUNT_GRACE" in bad.stderr


def test_kill_9_of_everything_leaves_nothing(installed: dict[str, str]) -> None:
    env = {**os.environ, **installed, "APPIMG_MOUNT_GRACE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "appimg", "run", APP_ID, "--", "sleep", "30"],
                           stdout=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)  # fmt: skip
    assert run.stdout is not None and run.stdout.readline().strip() == "ready"
    assert len(_mounts(env)) == 1
    os.killpg(run.pid, 9)  # `appimg run`, bwrap and the app
    run.wait()
    assert _gone_within(env, 4.0)  # the server ends it after the grace period, by itself


def test_remembered_signature_checks_go_with_the_app(installed: dict[str, str]) -> None:
    """spec/format.md §12.2: records live under the image's root hash and every change
    of the store removes those of images no installed version has."""
    appimg("run", APP_ID, env={**installed, "APPIMG_MOUNT_GRACE": "0"})
    records = Path(installed["HOME"]) / ".cache/appimg/checked-signatures"
    (root,) = records.iterdir()
    assert len(root.name) == 64 and len(list(root.iterdir())) == 1
    appimg("uninstall", APP_ID, env=installed)
    assert not records.exists()
