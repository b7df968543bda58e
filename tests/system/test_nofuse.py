"""``appimg run`` where FUSE is not usable, and ``--no-fuse``: the verified extraction
cache (spec/run.md, "Without FUSE").

The tests run the CLI as a normal user in a mount namespace of its own where
``/dev/fuse`` is covered by a root-only file: the user cannot open it, as on a
host without FUSE, while other programs on the machine keep theirs.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appimg.format.container.partitions import PAYLOAD
from appimg.format.image import Image

from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    user_env,
    user_python,
    user_tmpdir,
)
from .test_install_store import pack
from .test_run import BUSYBOX, make_busybox_app

pytestmark = [
    pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.root,
]
APP_ID = "org.example.Box"
NOTICE = "FUSE is not available here"


class Setup:
    def __init__(self, user: pwd.struct_passwd, env: dict[str, str], blocker: Path) -> None:
        self.user, self.env, self.blocker = user, env, blocker

    @property
    def cache(self) -> Path:
        return Path(self.env["HOME"]) / ".cache" / "appimg" / "extracted"

    def argv(self, *args: object) -> list[str]:
        """``appimg ARGS`` as the user, with /dev/fuse out of its reach."""
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /dev/fuse && exec "$@"', str(self.blocker),
            "setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
            "--init-groups", "--", *user_python(self.user), "-m", "appimg", *map(str, args),
        ]  # fmt: skip

    def run(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    def install(self, image: Path) -> None:
        result = appimg_as(self.user, self.env, "install", "--allow-unsigned", image, text=True)
        assert result.returncode == 0, result.stderr


def root_hash(image: Path) -> str:
    with Image.open(image) as opened:
        return opened.verity.root_hash.hex()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    user = ensure_user()
    allow_fuse_for_users()
    env = user_env(user, user_tmpdir(user, "appimg-home-"))
    blocker = tmp_path / "no-fuse"
    blocker.write_bytes(b"")
    blocker.chmod(0o600)  # root's: the user cannot open what covers /dev/fuse
    return Setup(user, env, blocker)


def box_image(tmp_path: Path, setup: Setup, profile: str = "none", big: int = 0) -> Path:
    tree = make_busybox_app(tmp_path / "tree", profile=profile)
    if big:
        (tree / "data").write_bytes(os.urandom(big))  # incompressible: a long extraction
    image = pack(tree, user_tmpdir(setup.user) / "box.appimg")
    image.chmod(0o644)
    return image


def test_run_without_fuse_uses_a_verified_copy_and_says_so_once(
    tmp_path: Path, setup: Setup
) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    root = root_hash(image)
    first = setup.run("run", APP_ID)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "hello from the sandbox\n"
    assert first.stderr.count(NOTICE) == 1, first.stderr
    assert f"running from a verified copy in {setup.cache / root / 'tree'}" in first.stderr
    marker = json.loads((setup.cache / root / "complete").read_text())
    assert marker["root_hash"] == root
    tree_ino = (setup.cache / root / "tree").stat().st_ino
    again = setup.run("run", APP_ID, "args", "a b")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "[a b]\n"
    assert again.stderr.count(NOTICE) == 1
    assert (setup.cache / root / "tree").stat().st_ino == tree_ino  # reused, not redone
    assert sorted(os.listdir(setup.cache)) == sorted([root, f".{root}.use", f".{root}.fill"])


def test_no_fuse_forces_the_copy_where_fuse_works(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    result = appimg_as(setup.user, setup.env, "run", "--no-fuse", APP_ID, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert result.stderr.count("FUSE is not used (--no-fuse)") == 1, result.stderr
    assert (setup.cache / root_hash(image) / "complete").is_file()
    plain = appimg_as(setup.user, setup.env, "run", APP_ID, text=True)
    assert plain.returncode == 0 and "verified copy" not in plain.stderr  # FUSE, as before


def test_a_changed_copy_is_extracted_again(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    assert setup.run("run", APP_ID).returncode == 0
    app = setup.cache / root_hash(image) / "tree" / "bin" / "app"
    original = app.read_bytes()
    app.chmod(0o755 | 0o200)
    app.write_text('#!/bin/sh\necho "changed"\n')  # same user, same size does not matter
    result = setup.run("run", APP_ID)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert app.read_bytes() == original


def test_a_tampered_image_is_refused_and_leaves_no_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    store = Path(setup.env["HOME"]) / ".local" / "share" / "appimg"
    installed = next(store.glob("images/**/*.appimg"))
    with Image.open(installed) as opened:
        offset = opened.partition(PAYLOAD).offset + 64 * 1024  # inside busybox's data
    with open(installed, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = setup.run("run", APP_ID)
    assert result.returncode == 4, result.stderr  # IntegrityError
    assert "hello" not in result.stdout
    root = root_hash(image)
    assert not (setup.cache / root).exists()
    assert not (setup.cache / f".{root}.tmp").exists()


def test_uninstall_removes_the_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    assert setup.run("run", APP_ID).returncode == 0
    assert (setup.cache / root_hash(image)).is_dir()
    result = appimg_as(setup.user, setup.env, "uninstall", APP_ID, text=True)
    assert result.returncode == 0, result.stderr
    assert not setup.cache.exists()


def test_host_rules_that_need_the_view_are_refused_with_a_way_out(
    tmp_path: Path, setup: Setup
) -> None:
    image = box_image(tmp_path, setup, profile="host")
    setup.install(image)
    refused = setup.run("run", APP_ID)
    assert refused.returncode == 6, refused.stderr
    assert "need the merged view" in refused.stderr and "--no-host" in refused.stderr
    alone = setup.run("run", "--no-host", APP_ID)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == "hello from the sandbox\n"


def test_kill_9_mid_extraction_leaves_no_usable_half_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup, big=48 << 20)
    setup.install(image)
    root = root_hash(image)
    staging = setup.cache / f".{root}.tmp"
    proc = subprocess.Popen(setup.argv("run", APP_ID), env=setup.env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (staging / "tree" / "data").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (staging / "tree" / "data").exists(), "the extraction never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (setup.cache / root).exists()  # the half copy is not where a run looks
    result = setup.run("run", APP_ID)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert not staging.exists()
    assert (setup.cache / root / "tree" / "data").stat().st_size == 48 << 20
