"""UserDirs.from_env: the XDG Base Directory Specification 0.8 rules, from a plain mapping.

A variable that is unset, empty or not an absolute path is ignored and its default
used; relative entries of the list variables are dropped; without a usable
$XDG_RUNTIME_DIR the runtime directory is a private one under /tmp.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from appimg.errors import UsageError
from appimg.host.dirs import UserDirs

SINGLE = {
    "XDG_CONFIG_HOME": ("config_home", ".config"),
    "XDG_DATA_HOME": ("data_home", ".local/share"),
    "XDG_CACHE_HOME": ("cache_home", ".cache"),
    "XDG_STATE_HOME": ("state_home", ".local/state"),
}


def test_defaults_when_unset() -> None:
    dirs = UserDirs.from_env({"HOME": "/home/u"})
    assert dirs.home == Path("/home/u")
    for attr, default in SINGLE.values():
        assert getattr(dirs, attr) == Path("/home/u") / default
    assert dirs.data_dirs == (Path("/usr/local/share"), Path("/usr/share"))
    assert dirs.config_dirs == (Path("/etc/xdg"),)


def test_absolute_values_are_taken() -> None:
    env = {"HOME": "/home/u", **{name: f"/x/{name}" for name in SINGLE}}
    env.update(XDG_DATA_DIRS="/opt/share:/usr/share", XDG_CONFIG_DIRS="/opt/etc")
    dirs = UserDirs.from_env(env)
    for name, (attr, _) in SINGLE.items():
        assert getattr(dirs, attr) == Path(f"/x/{name}")
    assert dirs.data_dirs == (Path("/opt/share"), Path("/usr/share"))
    assert dirs.config_dirs == (Path("/opt/etc"),)


@pytest.mark.parametrize("value", ["", "relative/dir", "./x", "~/x"])
def test_empty_or_relative_values_fall_back(value: str) -> None:
    env = {"HOME": "/home/u", **dict.fromkeys(SINGLE, value)}
    dirs = UserDirs.from_env(env)
    for attr, default in SINGLE.values():
        assert getattr(dirs, attr) == Path("/home/u") / default


def test_list_variables() -> None:
    empty = UserDirs.from_env({"HOME": "/h", "XDG_DATA_DIRS": "", "XDG_CONFIG_DIRS": ""})
    assert empty.data_dirs == (Path("/usr/local/share"), Path("/usr/share"))
    assert empty.config_dirs == (Path("/etc/xdg"),)
    # Empty and relative entries are invalid and ignored; the order of the rest is kept.
    mixed = UserDirs.from_env({"HOME": "/h", "XDG_DATA_DIRS": "share::/b/:/a:rel/x"})
    assert mixed.data_dirs == (Path("/b"), Path("/a"))


@pytest.mark.parametrize("value", [None, "", "relative"])
def test_home_falls_back_to_the_password_database(value: str | None) -> None:
    env = {} if value is None else {"HOME": value}
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    dirs = UserDirs.from_env(env)
    assert dirs.home == home and dirs.data_home == home / ".local/share"


def test_reads_only_the_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/from/os/environ")
    monkeypatch.setenv("XDG_DATA_HOME", "/from/os/environ/data")
    dirs = UserDirs.from_env({"HOME": "/h"})
    assert dirs.home == Path("/h") and dirs.data_home == Path("/h/.local/share")
    assert dirs == UserDirs.from_env({"HOME": "/h"})
    assert dirs != UserDirs.from_env({"HOME": "/h", "XDG_DATA_HOME": "/d"})


def test_runtime_from_the_environment(tmp_path: Path) -> None:
    assert UserDirs.from_env({"HOME": "/h", "XDG_RUNTIME_DIR": str(tmp_path)}).runtime == tmp_path


@pytest.mark.parametrize("value", [None, "", "run/user", "/nonexistent/run"])
def test_runtime_fallback(value: str | None) -> None:
    env = {"HOME": "/h"} if value is None else {"HOME": "/h", "XDG_RUNTIME_DIR": value}
    runtime = UserDirs.from_env(env).runtime
    assert runtime == Path(f"/tmp/appimg-runtime-{os.getuid()}")
    st = runtime.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def test_runtime_fallback_must_be_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fallback directory someone else owns (made in advance in the shared /tmp) is refused."""
    other_uid = 3_000_000 + os.getpid() % 1_000_000  # no such user; the directory is ours
    place = Path(f"/tmp/appimg-runtime-{other_uid}")
    place.mkdir(mode=0o700)
    try:
        monkeypatch.setattr(os, "getuid", lambda: other_uid)
        with pytest.raises(UsageError, match="not a private directory"):
            _ = UserDirs.from_env({"HOME": "/h"}).runtime
    finally:
        monkeypatch.undo()
        shutil.rmtree(place)
