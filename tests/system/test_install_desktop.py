"""What a desktop user gets, proven as a normal user with a fresh HOME (spec/xdg-index.md):
GLib lists the installed apps with their names, icons and commands, every exported file
passes desktop-file-validate, launching an entry goes through `appimg run`, update and
rollback switch versions, and uninstall leaves no trace."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..helpers import FIXTURES
from ..users import appimg_as, ensure_user, run_as, user_env, user_tmpdir
from .test_install_store import home_snapshot, make_app, pack, store_dir

pytestmark = pytest.mark.root

GLIB_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi
GLIB_LIST = """
import json, sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio
apps = []
for info in Gio.AppInfo.get_all():
    icon = info.get_icon()
    apps.append({"id": info.get_id(), "name": info.get_name(),
                 "commandline": info.get_commandline(), "executable": info.get_executable(),
                 "icon": icon.to_string() if icon else None})
types = {t: sorted(a.get_id() for a in Gio.AppInfo.get_all_for_type(t)) for t in sys.argv[1:]}
multi = Gio.DesktopAppInfo.new("org.example.Multi.desktop")
print(json.dumps({"apps": apps, "types": types, "actions": multi.list_actions(),
                  "x_appimg_id": multi.get_string("X-Appimg-Id")}))
"""
GLIB_LAUNCH = """
import os, sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib
info = Gio.DesktopAppInfo.new(sys.argv[1])
pids = []
info.launch_uris_as_manager(sys.argv[2:], None, GLib.SpawnFlags.DO_NOT_REAP_CHILD,
                            None, None, lambda _info, pid, *_: pids.append(pid), None)
_, status = os.waitpid(pids[0], 0)
sys.stdout.flush()
print("EXIT", os.waitstatus_to_exitcode(status))
"""


def needs(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t) and not Path(t).exists()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")


@pytest.fixture(scope="module")
def user_images(
    tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path], hello_image: Path
) -> dict[str, Path]:
    """The fixture apps, packed and copied where the test user can read them."""
    user = ensure_user()
    shared = user_tmpdir(user, "appimg-images-")
    trees = tmp_path_factory.mktemp("desktop-trees")
    images = {
        "multi": pack(FIXTURES / "multi", shared / "Multi.appimg", keypair[0]),
        "icons": pack(FIXTURES / "icons", shared / "Icons.appimg", keypair[0]),
        "other": pack(
            make_app(trees / "other", "org.example.Other"), shared / "Other.appimg", keypair[0]
        ),
        "other2": pack(
            make_app(trees / "other2", "org.example.Other", "2.0"),
            shared / "Other-2.appimg",
            keypair[0],
        ),
        "hello": Path(shutil.copy(hello_image, shared / "Hello.appimg")),
        "key.pub": Path(shutil.copy(keypair[1], shared / "release.key.pub")),
    }
    for path in [shared, *shared.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return images


def as_user(env: dict[str, str], *args: object, ok: bool = True) -> subprocess.CompletedProcess:
    result = appimg_as(ensure_user(), env, *args)
    if ok:
        assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.fixture(scope="module")
def desktop(user_images: dict[str, Path]) -> dict[str, Any]:
    """A fresh HOME with `xdg setup` done and the multi, icons and hello apps installed."""
    user = ensure_user()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home)
    as_user(env, "trust", "add", user_images["key.pub"])
    as_user(env, "xdg", "setup")
    for name in ("multi", "icons", "hello"):
        as_user(env, "install", user_images[name])
    data_dirs = as_user(env, "xdg", "env").stdout.decode().strip()
    return {"home": home, "env": {**env, "XDG_DATA_DIRS": data_dirs}, "user": user}


def test_setup_put_the_exports_on_the_session_search_path(desktop: dict[str, Any]) -> None:
    home = desktop["home"]
    exports = store_dir(home) / "exports" / "share"
    assert desktop["env"]["XDG_DATA_DIRS"].split(":")[0] == str(exports)
    conf = (home / ".config/environment.d/60-appimg.conf").read_text()
    assert f"XDG_DATA_DIRS={exports}:" in conf
    login = run_as(
        desktop["user"],
        ["sh", "-c", '. "$HOME/.profile"; echo "$XDG_DATA_DIRS"'],
        {k: v for k, v in desktop["env"].items() if k != "XDG_DATA_DIRS"},
    )
    assert login.stdout.decode().strip() == f"{exports}:/usr/local/share:/usr/share"


def test_glib_lists_the_apps(desktop: dict[str, Any]) -> None:
    needs(GLIB_PYTHON)
    result = run_as(
        desktop["user"],
        [GLIB_PYTHON, "-c", GLIB_LIST, "text/x-org.example.multi", "image/png"],
        desktop["env"],
    )
    assert result.returncode == 0, result.stderr.decode()
    glib = json.loads(result.stdout)
    apps = {a["id"]: a for a in glib["apps"]}
    launcher = str(Path(apps["org.example.Multi.desktop"]["executable"]))
    assert Path(launcher).is_absolute() and Path(launcher).name == "appimg"
    expected = {
        "org.example.Multi.desktop": (
            "Multi",
            "org.example.Multi",
            f"{launcher} run org.example.Multi -- --new %F",
        ),
        "org.example.Multi.Viewer.desktop": (
            "Multi Viewer",
            "org.example.Multi",
            f"{launcher} run org.example.Multi --command viewer -- %f",
        ),
        "org.example.Icons.desktop": (
            "Icons",
            "org.example.Icons",
            f"{launcher} run org.example.Icons -- %u",
        ),
        "org.example.Hello.desktop": (
            "Hello",
            "org.example.Hello",
            f"{launcher} run org.example.Hello -- %U",
        ),
    }
    for desktop_id, (name, icon, commandline) in expected.items():
        app = apps[desktop_id]
        assert (app["name"], app["icon"], app["commandline"]) == (name, icon, commandline)
    assert glib["actions"] == ["new-window", "private"]
    assert glib["x_appimg_id"] == "org.example.Multi"
    multi_ids = {"org.example.Multi.desktop", "org.example.Multi.Viewer.desktop"}
    assert multi_ids <= set(glib["types"]["text/x-org.example.multi"])
    assert "org.example.Multi.Viewer.desktop" in glib["types"]["image/png"]

    # `appimg apps` is the same enumeration, with the icons resolved to files.
    ours = json.loads(as_user(desktop["env"], "apps", "--all", "--json").stdout)
    assert {a["id"] for a in ours} == set(apps)
    by_id = {a["id"]: a for a in ours}
    exports = store_dir(desktop["home"]) / "exports" / "share"
    for desktop_id, (name, icon, commandline) in expected.items():
        app = by_id[desktop_id]
        assert (app["name"], app["icon"], app["exec"], app["source"]) == (
            name,
            icon,
            commandline,
            "appimg",
        )
        assert Path(app["icon_path"]).is_relative_to(exports)
    assert by_id["org.example.Icons.desktop"]["icon_path"] == str(
        exports / "icons/hicolor/scalable/apps/org.example.Icons.svg"
    )
    assert by_id["org.example.Multi.desktop"]["icon_path"] == str(
        exports / "icons/hicolor/48x48/apps/org.example.Multi.png"
    )
    host = [a for a in ours if a["source"] == "host"]
    assert all(a["app_id"] is None for a in host)


def test_every_exported_file_validates(desktop: dict[str, Any]) -> None:
    needs("desktop-file-validate")
    exports = store_dir(desktop["home"]) / "exports" / "share"
    entries = sorted((exports / "applications").glob("*.desktop"))
    assert len(entries) == 4
    for entry in entries:
        result = subprocess.run(["desktop-file-validate", entry], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stdout.strip(), (entry, result.stdout)
    owner = desktop["user"].pw_uid
    for path in exports.rglob("*"):
        assert path.stat().st_uid == owner and not path.is_symlink()
    icons = sorted(
        p.relative_to(exports).as_posix()
        for p in (exports / "icons").rglob("*.*")
        if p.name != "icon-theme.cache"
    )
    assert icons == sorted(
        [
            "icons/hicolor/16x16/apps/org.example.Icons.png",
            "icons/hicolor/32x32/apps/org.example.Icons.png",
            "icons/hicolor/48x48/apps/org.example.Icons.png",
            "icons/hicolor/48x48/apps/org.example.Multi.png",
            "icons/hicolor/48x48/apps/org.example.Hello.png",
            "icons/hicolor/64x64@2/apps/org.example.Icons.png",
            "icons/hicolor/256x256/apps/org.example.Icons.png",
            "icons/hicolor/scalable/apps/org.example.Icons.svg",
            "icons/hicolor/scalable/apps/org.example.Hello.svg",
            "icons/hicolor/symbolic/apps/org.example.Icons-symbolic.svg",
        ]
    )


def test_launching_an_entry_goes_through_appimg_run(desktop: dict[str, Any]) -> None:
    """GLib launches the exported entry. If `appimg run` works (another issue), the app's
    own output must appear; until then the entry must run exactly `appimg run ID ...`, which
    is shown by GLib's command line and by the launch failing exactly as that command does."""
    needs(GLIB_PYTHON)
    user, env = desktop["user"], desktop["env"]
    target = "file:///tmp/notes.appimg-multi"
    launched = run_as(
        user, [GLIB_PYTHON, "-c", GLIB_LAUNCH, "org.example.Multi.desktop", target], env
    )
    out, err = launched.stdout.decode(), launched.stderr.decode()
    assert launched.returncode == 0, err
    exit_line = out.strip().splitlines()[-1]
    probe = as_user(env, "run", "org.example.Multi", "--", "probe", ok=False)
    if probe.returncode == 0 and b"multi: probe" in probe.stdout:
        assert "multi: --new /tmp/notes.appimg-multi" in out, (out, err)
        assert exit_line == "EXIT 0"
        return
    direct = as_user(
        env, "run", "org.example.Multi", "--", "--new", "/tmp/notes.appimg-multi", ok=False
    )
    assert exit_line == f"EXIT {direct.returncode}"
    direct_err = direct.stderr.decode().strip().splitlines()
    assert direct_err and direct_err[-1] in err, (err, direct_err)


def test_update_rollback_and_uninstall_leave_no_trace(user_images: dict[str, Path]) -> None:
    user = ensure_user()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home)
    as_user(env, "trust", "add", user_images["key.pub"])
    configured = home_snapshot(home)
    as_user(env, "install", user_images["hello"])
    before = home_snapshot(home)

    as_user(env, "install", user_images["other"])
    as_user(env, "update", user_images["other2"])
    desktop_file = store_dir(home) / "exports/share/applications/org.example.Other.desktop"
    assert "X-Appimg-Version=2.0" in desktop_file.read_text()
    as_user(env, "rollback", "org.example.Other")
    assert "X-Appimg-Version=1.0" in desktop_file.read_text()
    listed = json.loads(as_user(env, "list", "--json").stdout)
    other = next(r for r in listed if r["id"] == "org.example.Other")
    assert (other["version"], other["previous"]) == ("1.0", "2.0")
    as_user(env, "uninstall", "org.example.Other")
    assert home_snapshot(home) == before  # every exported file and index entry gone, nothing else

    as_user(env, "uninstall", "org.example.Hello")
    assert home_snapshot(home) == configured  # the last app takes the store with it
    assert not store_dir(home).exists()
