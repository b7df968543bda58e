"""Search providers stay off unless the user enables them (spec/xdg-index.md §3.7), as a
normal user with a fresh HOME: an app shipping a GNOME Shell search provider and a
KRunner D-Bus plugin installs with neither exported (nothing on the XDG data search path
finds them), `appimg override ID --search-provider=on` exports both at once as valid key
files, `off` withdraws them; a provider naming another app's desktop entry or a bus name
the app may not own is refused with one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..users import appimg_as
from .test_install_store import home_snapshot, load_index, make_app, pack_for, store_dir

pytestmark = pytest.mark.root

APP = "org.example.Finder"
GNOME = f"gnome-shell/search-providers/{APP}.search-provider.ini"
KRUNNER = f"krunner/dbusplugins/{APP}.desktop"
GNOME_INI = (
    "[Shell Search Provider]\nDesktopId={desktop}\nBusName={bus}\n"
    "ObjectPath=/org/example/Finder/SearchProvider\nVersion=2\n"
)
KRUNNER_DESKTOP = (
    "[Desktop Entry]\nName=Finder\nComment=Finds things\nIcon={app}\nType=Service\n"
    "X-KDE-ServiceTypes=Plasma/Runner\nX-Plasma-API=DBus\n"
    "X-KDE-PluginInfo-Name={app}\nX-KDE-PluginInfo-EnabledByDefault=true\n"
    "X-Plasma-DBusRunner-Service={bus}\nX-Plasma-DBusRunner-Path=/runner\n"
    "Exec=/bin/sh -c evil\n"
)


def app_tree(root: Path, app_id: str, *, desktop: str | None = None,
             gnome_bus: str | None = None, krunner_bus: str | None = None) -> Path:  # fmt: skip
    """make_app's app with a GNOME Shell search provider and a KRunner plugin."""
    make_app(root, app_id)
    gnome = root / "share/gnome-shell/search-providers"
    gnome.mkdir(parents=True)
    (gnome / f"{app_id}.search-provider.ini").write_text(
        GNOME_INI.format(desktop=desktop or f"{app_id}.desktop", bus=gnome_bus or app_id)
    )
    krunner = root / "share/krunner/dbusplugins"
    krunner.mkdir(parents=True)
    (krunner / f"{app_id}.desktop").write_text(
        KRUNNER_DESKTOP.format(app=app_id, bus=krunner_bus or f"{app_id}.Runner")
    )
    return root


def appimg(user: Any, env: dict[str, str], *args: object) -> subprocess.CompletedProcess:
    return appimg_as(user, env, *args)


def found_on_search_path(user: Any, env: dict[str, str], rel: str) -> list[str]:
    """Where a shell finds ``rel``: each directory of XDG_DATA_HOME and XDG_DATA_DIRS as
    `appimg xdg env` sets them up (the exports directory first), as GNOME Shell and
    KRunner look; and the sources `appimg xdg find` reports, images aside."""
    data_dirs = appimg(user, env, "xdg", "env").stdout.decode().strip()
    home = Path(env["HOME"]) / ".local/share"
    dirs = [home, *map(Path, data_dirs.split(":"))]
    found = [str(d / rel) for d in dirs if (d / rel).exists()]
    result = appimg(user, {**env, "XDG_DATA_DIRS": data_dirs}, "xdg", "find", "--all",
                    "--json", rel)  # fmt: skip
    matches = json.loads(result.stdout) if result.stdout.strip() else []
    found += [m["path"] for m in matches if m["source"] != "image"]
    return found


def glib_keyfile(path: Path, group: str) -> dict[str, str]:
    """The file as GLib reads it (GNOME Shell's remoteSearch.js, KRunner's reader alike)."""
    gi = pytest.importorskip("gi")
    gi.require_version("GLib", "2.0")
    from gi.repository import GLib

    keyfile = GLib.KeyFile()
    keyfile.load_from_file(str(path), GLib.KeyFileFlags.NONE)
    assert keyfile.get_groups()[0] == [group]
    return {key: keyfile.get_string(group, key) for key in keyfile.get_keys(group)[0]}


def test_search_providers_are_off_until_enabled(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path
) -> None:
    user, home, env = user_home
    exports = store_dir(home) / "exports" / "share"
    image = pack_for(user, app_tree(tmp_path / APP, APP))
    result = appimg(user, env, "install", "--allow-unsigned", image)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "refused" not in err, err
    lines = [line for line in out.splitlines() if "search provider" in line]
    assert lines == [
        "  search provider: off, not exported (it would see every query typed; "
        f"enable with appimg override {APP} --search-provider=on)"
    ], out
    # Installed, checked, but not exported: nothing a shell reads holds them.
    assert (exports / f"applications/{APP}.desktop").is_file()
    assert not (exports / "gnome-shell").exists() and not (exports / "krunner").exists()
    exported = load_index(home)["apps"][APP]["exported"]
    assert not [rel for rel in exported if rel.startswith(("gnome-shell/", "krunner/"))]
    assert found_on_search_path(user, env, GNOME) == []
    assert found_on_search_path(user, env, KRUNNER) == []
    shown = appimg(user, env, "permissions", APP)
    assert (f"search provider: off (enable with appimg override {APP} --search-provider=on)\n"
            in shown.stdout.decode()), shown.stdout.decode()  # fmt: skip

    # On: both exported at once, valid key files naming only the app's own things.
    result = appimg(user, env, "override", APP, "--search-provider=on")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"  exported {GNOME}\n" in out and f"  exported {KRUNNER}\n" in out, out
    assert "  --search-provider=on\n" in out, out
    gnome = glib_keyfile(exports / GNOME, "Shell Search Provider")
    assert gnome == {"DesktopId": f"{APP}.desktop", "BusName": APP, "Version": "2",
                     "ObjectPath": "/org/example/Finder/SearchProvider"}  # fmt: skip
    krunner = glib_keyfile(exports / KRUNNER, "Desktop Entry")
    assert krunner["X-Plasma-DBusRunner-Service"] == f"{APP}.Runner"
    assert krunner["X-Plasma-DBusRunner-Path"] == "/runner"
    assert "Exec" not in krunner  # nothing a host program could run
    for rel in (GNOME, KRUNNER):
        assert (exports / rel).stat().st_mode & 0o777 == 0o644
        assert found_on_search_path(user, env, rel)[0] == str(exports / rel)
    assert set(load_index(home)["apps"][APP]["exported"]) >= {GNOME, KRUNNER}
    shown = appimg(user, env, "permissions", APP, "--json")
    assert json.loads(shown.stdout)["search_provider"] == "on"
    stored = (home / f".config/appimg/overrides/{APP}.toml").read_text()
    assert "search-provider = true\n" in stored, stored

    # An update keeps the user's choice.
    (tmp_path / "v2").mkdir()
    tree = app_tree(tmp_path / "v2" / APP, APP)
    (tree / "appimg.toml").write_text((tree / "appimg.toml").read_text().replace("1.0", "2.0"))
    result = appimg(user, env, "update", "--allow-unsigned", pack_for(user, tree))
    assert result.returncode == 0, result.stderr.decode()
    assert "  search provider: on (enabled by your override)\n" in result.stdout.decode()
    assert (exports / GNOME).is_file() and (exports / KRUNNER).is_file()

    # Off: withdrawn at once, nothing left behind.
    result = appimg(user, env, "override", APP, "--search-provider=off")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"  removed {GNOME}\n" in out and f"  removed {KRUNNER}\n" in out, out
    assert not (exports / "gnome-shell").exists() and not (exports / "krunner").exists()
    assert found_on_search_path(user, env, GNOME) == []
    assert found_on_search_path(user, env, KRUNNER) == []
    assert (exports / f"applications/{APP}.desktop").is_file()  # the rest stays

    # On again, then --reset (the default: off) withdraws them as well.
    assert appimg(user, env, "override", APP, "--search-provider=on").returncode == 0
    assert (exports / GNOME).is_file()
    result = appimg(user, env, "override", APP, "--reset")
    assert result.returncode == 0, result.stderr.decode()
    assert not (exports / "gnome-shell").exists() and not (exports / "krunner").exists()
    assert appimg(user, env, "override", APP, "--search-provider=maybe").returncode == 2


@pytest.mark.parametrize(
    ("app_id", "tree", "path", "reason"),
    [
        ("org.example.Thief", {"desktop": "org.gnome.Nautilus.desktop"},
         "share/gnome-shell/search-providers/org.example.Thief.search-provider.ini",
         "DesktopId 'org.gnome.Nautilus.desktop' is not the app's own desktop entry"),
        ("org.example.Squatter", {"gnome_bus": "org.gnome.Nautilus"},
         "share/gnome-shell/search-providers/org.example.Squatter.search-provider.ini",
         "BusName: the app may not own the bus name org.gnome.Nautilus"),
        ("org.example.Runner", {"krunner_bus": "org.kde.baloorunner"},
         "share/krunner/dbusplugins/org.example.Runner.desktop",
         "X-Plasma-DBusRunner-Service: the app may not own the bus name org.kde.baloorunner"),
    ],
)  # fmt: skip
def test_a_provider_for_another_app_is_refused(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path, app_id: str,
    tree: dict[str, str], path: str, reason: str,
) -> None:  # fmt: skip
    user, home, env = user_home
    image = pack_for(user, app_tree(tmp_path / app_id, app_id, **tree))
    before = home_snapshot(home)
    strict = appimg(user, env, "install", "--allow-unsigned", "--strict", image)
    err = strict.stderr.decode()
    assert strict.returncode == 6, err
    assert len(err.strip().splitlines()) == 1 and reason in err, err
    assert home_snapshot(home) == before  # nothing installed
    result = appimg(user, env, "install", "--allow-unsigned", image)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    refusals = [line for line in err.splitlines() if "refused" in line]
    assert len(refusals) == 1, err
    assert refusals[0].startswith(f"appimg install: refused {path}: {reason}"), err
    # Enabling search providers exports only the one that passed the rules.
    result = appimg(user, env, "override", app_id, "--search-provider=on")
    assert result.returncode == 0, result.stderr.decode()
    exports = store_dir(home) / "exports" / "share"
    assert not (exports / path.removeprefix("share/")).exists()
    exported = [line for line in result.stdout.decode().splitlines() if "exported" in line]
    assert len(exported) == 1, result.stdout.decode()
