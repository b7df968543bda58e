"""The rules that keep exports from taking over the session (spec/xdg-index.md §3.3, §3.6):
bus names, host bus name collisions, MIME packages and MimeType claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from appimg.host.bus_names import conflict, host_bus_names
from appimg.host.dirs import UserDirs
from appimg.services.exports import Refused
from appimg.services.exports.mime import check_package, filter_mime_types, in_namespace
from appimg.services.exports.plan import Context, may_own, rewrite_dbus

MANIFEST = {"id": "org.example.App", "entrypoint": "bin/app"}
CTX = Context(app_id="org.example.App", version="1", launcher="/usr/bin/appimg",
              image_path="/i.appimg")  # fmt: skip
HEAD = b'<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">'
HOST = {"host_types": {"text/plain": "/usr/share/mime"}, "host_globs": {"*.pdf": "application/pdf"},
        "host_xml_roots": {"http://www.w3.org/2000/svg svg": "image/svg+xml"}}  # fmt: skip


def package(body: str) -> bytes:
    return HEAD + body.encode() + b"</mime-info>"


def check(body: str, **extra: object) -> list[str]:
    args = {**HOST, "others": {}, "other_globs": {}, "other_ids": (), **extra}
    return check_package(package(body), "org.example.App", **args)  # type: ignore[arg-type]


def test_bus_names_the_app_may_own() -> None:
    assert may_own(MANIFEST, "org.example.App") and may_own(MANIFEST, "org.example.App.Helper")
    assert not may_own(MANIFEST, "org.example.AppX") and not may_own(MANIFEST, "org.other")
    manifest = {**MANIFEST, "permissions": {"own": ["org.mpris.MediaPlayer2.App", "com.x.*"]}}
    assert may_own(manifest, "org.mpris.MediaPlayer2.App")
    # An image cannot grant itself another's name: only the user can (override --own-name).
    assert not may_own(manifest, "com.x.Y")


def test_service_files_name_only_the_app() -> None:
    def service(name: str, extra: str = "") -> bytes:
        return f"[D-BUS Service]\nName={name}\nExec=/bin/app\n{extra}".encode()

    with pytest.raises(Refused, match=r"the app id org\.example\.App or below it"):
        rewrite_dbus(service("org.example.App-Other"), MANIFEST, CTX, "org.example.App-Other")
    notes: list[str] = []
    out = rewrite_dbus(service("org.example.App.Sub", "SystemdService=x.service\nX-Y=1\n"),
                       MANIFEST, CTX, "org.example.App.Sub", notes).decode()  # fmt: skip
    assert "SystemdService" not in out and "X-Y" not in out
    assert notes == ["org.example.App.Sub.service: removed SystemdService, X-Y (only Name and "
                     "Exec are kept: the service starts through appimg run)"]  # fmt: skip


def test_host_bus_names_and_collisions(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "dbus-1/services").mkdir(parents=True)
    (share / "dbus-1/services/x.service").write_text(
        "[D-BUS Service]\nName=com.example.Host.Daemon\nExec=/bin/true\n"
    )
    dirs = UserDirs.from_env({"HOME": str(tmp_path), "XDG_DATA_DIRS": str(share)})
    names = host_bus_names(dirs)
    assert names["com.example.Host.Daemon"].endswith("x.service")
    for app_id in ("com.example.Host", "com.example.Host.Daemon", "com.example.Host.Daemon.A",
                   "org.freedesktop.Foo", "ca.desrt.dconf.Editor"):  # fmt: skip
        assert conflict(app_id, names), app_id
    for app_id in ("com.example.HostX", "com.example.Other", "org.example.App"):
        assert conflict(app_id, names) is None, app_id
    assert "com.example.Host.Daemon" not in host_bus_names(dirs, exclude=share)


def test_own_types() -> None:
    assert in_namespace("text/x-org.example.app", "org.example.App")
    assert in_namespace("application/vnd.org.example.app.doc+xml", "org.example.App")
    assert not in_namespace("text/x-org.example.apps", "org.example.App")
    assert not in_namespace("x-scheme-handler/org.example.app", "org.example.App")
    assert check('<mime-type type="application/x-org.example.app"><glob pattern="*.oea"/>'
                 '<sub-class-of type="text/plain"/></mime-type>') == [
        "application/x-org.example.app"]  # fmt: skip


@pytest.mark.parametrize(("body", "reason"), [
    ('<mime-type type="text/plain"/>', "not the app's own type"),
    ('<mime-type type="text/x-org.example.app"><alias type="text/plain"/></mime-type>',
     "defines text/plain"),
    ('<mime-type type="text/x-org.example.app"><glob pattern="*.PDF"/></mime-type>',
     "the host's application/pdf"),
    ('<mime-type type="text/x-org.example.app"><glob pattern="*.*"/></mime-type>', "too wide"),
    ('<mime-type type="text/x-org.example.app"><glob pattern="a*b"/></mime-type>', "too wide"),
    ('<mime-type type="text/x-org.example.app"><glob pattern="*.oea" weight="90"/>'
     "</mime-type>", "weight 90 exceeds 50"),
    ('<mime-type type="text/x-org.example.app"><magic priority="80"/></mime-type>',
     "priority 80 exceeds 50"),
    ('<mime-type type="text/x-org.example.app"><root-XML namespaceURI='
     '"http://www.w3.org/2000/svg" localName="svg"/></mime-type>', "root-XML"),
])  # fmt: skip
def test_mime_hijacks_are_refused(body: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check(body)


def test_other_apps_types_and_globs() -> None:
    body = '<mime-type type="text/x-org.example.app.sub"><glob pattern="*.oea"/></mime-type>'
    with pytest.raises(Refused, match=r"installed app org\.example\.App\.Sub"):
        check(body, other_ids=("org.example.App.Sub",))
    with pytest.raises(Refused, match=r"installed app org\.example\.B's"):
        check('<mime-type type="text/x-org.example.app"><glob pattern="*.oea"/></mime-type>',
              other_globs={"*.oea": "org.example.B"})  # fmt: skip


def test_mime_type_claims() -> None:
    value, removed = filter_mime_types(
        "text/html;x-scheme-handler/http;inode/directory;text/x-org.b;x-scheme-handler/https",
        {"text/x-org.b": "org.b.App"},
    )
    assert value == "text/html;"
    names = ["x-scheme-handler/http", "inode/directory", "text/x-org.b", "x-scheme-handler/https"]
    assert [r.split(" ", 1)[0] for r in removed] == names
