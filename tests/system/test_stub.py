"""The image's sh stub (spec/format.md §2.1) as a user meets it: ``./App.appimg`` finds
appimg where the README installs it for the user (``~/.local/bin``, pipx's and
``pip install --user``'s place) even when a desktop's PATH lacks that directory,
and with no appimg anywhere says how to install it and exits 127."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest

from ..helpers import HELLO, appimg
from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    run_as,
    user_env,
    user_python,
    user_tmpdir,
)

#: A PATH with the system's tools and no appimg (the suite's venv is not on it).
SYSTEM_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"


@pytest.mark.root
def test_the_stub_finds_appimg_in_local_bin_or_says_how_to_install_it(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home, PATH=SYSTEM_PATH)
    assert shutil.which("appimg", path=SYSTEM_PATH) is None, "appimg is installed system-wide"
    # A signed image whose key the user trusts: the stub passes no flags to appimg run.
    image = user_tmpdir(user) / "Hello.appimg"
    appimg("pack", HELLO, "-o", image, "--sign", keypair[0])
    os.chown(image, user.pw_uid, user.pw_gid)
    public = image.parent / "release.key.pub"
    shutil.copyfile(keypair[1], public)
    public.chmod(0o644)
    assert appimg_as(user, env, "trust", "add", public).returncode == 0

    # Where `pipx install` puts it: ~/.local/bin/appimg, not on this PATH.
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    launcher = local_bin / "appimg"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.join(user_python(user))} -m appimg "$@"\n')
    launcher.chmod(0o755)
    for path in (home / ".local", local_bin, launcher):
        os.chown(path, user.pw_uid, user.pw_gid)
    ran = run_as(user, [str(image), "a b", "c"], env, cwd=image.parent)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.decode().strip() == "Hello from demo appimg! args: a b c"

    # No appimg anywhere: one line that names the way to install it, status 127.
    launcher.unlink()
    bare = run_as(user, [str(image)], env, cwd=image.parent)
    assert bare.returncode == 127
    message = bare.stderr.decode()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{image}: appimg is not on PATH or in ~/.local/bin")
    assert "pipx install" in message and "README" in message
    assert "pip install appimg" not in message  # no such package to install
