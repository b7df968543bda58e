"""Search providers on their own (spec/xdg-index.md §3.7): the GNOME Shell and KRunner
rules, discovery, and the user's stored choice (spec/permissions.md §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appimg.errors import PolicyError, UsageError
from appimg.format.manifest import _discover_exports
from appimg.host import overrides
from appimg.host.dirs import UserDirs
from appimg.host.overrides import Override
from appimg.services.exports import Refused, keyfile
from appimg.services.exports.plan import (
    Context,
    rewrite_gnome_provider,
    rewrite_krunner_plugin,
)

APP = "org.example.Finder"
MANIFEST = {
    "id": APP,
    "entrypoint": "bin/app",
    "permissions": {"own": ["org.mpris.MediaPlayer2.finder"]},
}
CTX = Context(app_id=APP, version="1.0", launcher="/usr/bin/appimg", image_path="/x.appimg")
EXPORTED = {f"applications/{APP}.desktop": b"", f"applications/{APP}.Viewer.desktop": b""}


def gnome(**keys: str) -> bytes:
    values = {"DesktopId": f"{APP}.desktop", "BusName": APP, "Version": "2",
              "ObjectPath": "/org/example/Finder/SearchProvider", **keys}  # fmt: skip
    body = "".join(f"{k}={v}\n" for k, v in values.items() if v is not None)
    return f"[Shell Search Provider]\n{body}".encode()


def krunner(**keys: str) -> bytes:
    values = {"Name": "Finder", "Type": "Service", "X-Plasma-API": "DBus",
              "X-Plasma-DBusRunner-Service": f"{APP}.Runner",
              "X-Plasma-DBusRunner-Path": "/runner", **keys}  # fmt: skip
    body = "".join(f"{k}={v}\n" for k, v in values.items() if v is not None)
    return f"[Desktop Entry]\n{body}".encode()


def read(data: bytes) -> dict[str, str]:
    return dict(keyfile.parse_keyfile(data).groups[0].entries)


def test_gnome_provider_of_the_app_is_kept_with_its_keys_only() -> None:
    notes: list[str] = []
    out = rewrite_gnome_provider(gnome(DefaultDisabled="true", AutoStart="yes"), MANIFEST,
                                 CTX, EXPORTED, "p.ini", notes)  # fmt: skip
    assert read(out) == {"DesktopId": f"{APP}.desktop", "BusName": APP,
                         "ObjectPath": "/org/example/Finder/SearchProvider", "Version": "2",
                         "DefaultDisabled": "true"}  # fmt: skip
    assert notes == ["p.ini: removed AutoStart (only DesktopId, BusName, ObjectPath, Version, "
                     "DefaultDisabled are kept)"]  # fmt: skip
    below = gnome(DesktopId=f"{APP}.Viewer.desktop", BusName=f"{APP}.Search")
    assert read(rewrite_gnome_provider(below, MANIFEST, CTX, EXPORTED, "p.ini"))["BusName"] \
        == f"{APP}.Search"  # fmt: skip


@pytest.mark.parametrize(("keys", "reason"), [
    ({"DesktopId": "org.gnome.Nautilus.desktop"}, "is not the app's own desktop entry"),
    ({"DesktopId": f"{APP}"}, "is not the app's own desktop entry"),
    ({"DesktopId": f"{APP}.Other.desktop"}, "the image exports no such desktop entry"),
    ({"DesktopId": None}, "no DesktopId key"),
    ({"BusName": "org.gnome.Nautilus"}, "may not own the bus name org.gnome.Nautilus"),
    ({"BusName": "org.freedesktop.Tracker3"}, "may not own the bus name org.freedesktop"),
    ({"BusName": f"{APP}.*"}, "must be one bus name, not a pattern"),
    ({"BusName": ":1.42"}, "is not a D-Bus name"),
    ({"BusName": None}, "no BusName key"),
    ({"ObjectPath": "org/example"}, "is not a D-Bus object path"),
    ({"ObjectPath": "/org/example/"}, "is not a D-Bus object path"),
    ({"Version": "two"}, "Version must be a number"),
])  # fmt: skip
def test_gnome_provider_for_another_app_is_refused(keys: dict[str, str], reason: str) -> None:
    with pytest.raises(Refused, match=reason.replace(".", r"\.").replace("*", r"\*")):
        rewrite_gnome_provider(gnome(**keys), MANIFEST, CTX, EXPORTED, "p.ini")


def test_gnome_provider_has_one_group() -> None:
    with pytest.raises(Refused, match=r"exactly one group, \[Shell Search Provider\]"):
        rewrite_gnome_provider(gnome() + b"[Other]\nA=b\n", MANIFEST, CTX, EXPORTED, "p.ini")


def test_krunner_plugin_keeps_its_keys_and_drops_programs() -> None:
    notes: list[str] = []
    data = krunner(**{"Exec": "/bin/sh -c evil", "X-KDE-Library": "/tmp/evil.so",
                      "X-KDE-SubstituteUID": "true", "Name[de]": "Finder",
                      "X-KDE-PluginInfo-EnabledByDefault": "true"})  # fmt: skip
    out = read(rewrite_krunner_plugin(data, MANIFEST, "k.desktop", notes))
    assert "Exec" not in out and "X-KDE-Library" not in out
    assert "X-KDE-SubstituteUID" not in out
    assert out["Name[de]"] == "Finder" and out["X-KDE-PluginInfo-EnabledByDefault"] == "true"
    assert notes and "Exec" in notes[0] and "X-KDE-Library" in notes[0]
    # A pattern within the app's own names, and a name its manifest may own.
    for bus in (f"{APP}.*", "org.mpris.MediaPlayer2.finder"):
        out = read(rewrite_krunner_plugin(krunner(**{"X-Plasma-DBusRunner-Service": bus}),
                                          MANIFEST, "k.desktop"))  # fmt: skip
        assert out["X-Plasma-DBusRunner-Service"] == bus


@pytest.mark.parametrize(("keys", "reason"), [
    ({"X-Plasma-DBusRunner-Service": "org.kde.baloorunner"}, "may not own the bus name"),
    ({"X-Plasma-DBusRunner-Service": "org.example.*"}, "may not own the bus name"),
    ({"X-Plasma-DBusRunner-Service": None}, "no X-Plasma-DBusRunner-Service key"),
    ({"X-Plasma-DBusRunner-Path": "runner"}, "is not a D-Bus object path"),
    ({"X-Plasma-API": "Python"}, "X-Plasma-API must be DBus"),
    ({"Name": None}, "no Name key"),
    ({"Icon": "/usr/share/icons/x.png"}, "must be an icon name"),
])  # fmt: skip
def test_krunner_plugin_for_another_service_is_refused(keys: dict[str, str],
                                                       reason: str) -> None:  # fmt: skip
    with pytest.raises(Refused, match=reason):
        rewrite_krunner_plugin(krunner(**keys), MANIFEST, "k.desktop")


def test_discovery_finds_both_kinds(tmp_path: Path) -> None:
    for rel in (f"share/gnome-shell/search-providers/{APP}.search-provider.ini",
                f"share/krunner/dbusplugins/{APP}.desktop",
                "share/gnome-shell/search-providers/org.other.App.ini",
                f"share/krunner/dbusplugins/{APP}.json"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert _discover_exports(tmp_path, APP) == {"search-providers": [
        f"share/gnome-shell/search-providers/{APP}.search-provider.ini",
        f"share/krunner/dbusplugins/{APP}.desktop",
    ]}  # fmt: skip


def test_the_choice_is_stored_with_the_override(tmp_path: Path) -> None:
    dirs = UserDirs(tmp_path)
    assert overrides.search_provider_on(dirs, APP) is False
    overrides.save(dirs, APP, overrides.from_flags([("nosocket", "x11")]))
    path = overrides.set_search_provider(dirs, APP, True)
    assert "search-provider = true\n" in path.read_text()
    stored = overrides.load(dirs, APP)
    assert stored.search_provider is True and stored.sockets == {"x11": False}
    assert stored.flags() == ["--nosocket=x11", "--search-provider=on"]
    assert overrides.search_provider_on(dirs, APP) is True
    overrides.set_search_provider(dirs, APP, False)
    assert overrides.load(dirs, APP).to_table() == {"sockets": ["!x11"], "search-provider": False}
    assert overrides.search_provider_on(dirs, APP) is False
    # The choice alone is an override (the file stays); it grants nothing.
    assert bool(Override(search_provider=False))
    assert Override().merged(Override(search_provider=True)).merged(Override()).search_provider


def test_a_malformed_choice_is_an_error_naming_the_file(tmp_path: Path) -> None:
    dirs = UserDirs(tmp_path)
    path = overrides.override_file(dirs, APP)
    path.parent.mkdir(parents=True)
    path.write_text('search-provider = "yes"\n')
    with pytest.raises(PolicyError, match=r"Finder\.toml: search-provider must be true or false"):
        overrides.search_provider_on(dirs, APP)
    with pytest.raises(UsageError, match="must be on or off"):
        overrides.parse_search_provider("yes")
