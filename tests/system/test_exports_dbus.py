"""Exports that cannot hijack the session (spec/xdg-index.md §3.3, §3.6), as a normal user
with a fresh HOME: an app id over a host bus name is refused whole; a MIME package that
re-types the host's files and a claim to be the web browser are not exported; an app's
own D-Bus service is exported, and a real session dbus-daemon, finding it on the XDG data
search path, activates it through `appimg run` into the app's sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ..users import appimg_as, run_as, user_tmpdir
from .test_install_desktop import needs
from .test_install_store import home_snapshot, make_app, pack_for, store_dir

pytestmark = pytest.mark.root

MIME_HEAD = '<?xml version="1.0"?>\n<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">\n'


def app_tree(root: Path, app_id: str, *, service: str | None = None,
             mime: str | None = None, mime_types: str | None = None) -> Path:  # fmt: skip
    """make_app's app, its entry point writing what it was started with into its HOME
    (the data directory, only there inside the sandbox), plus a service file or a MIME
    package as given."""
    make_app(root, app_id)
    (root / "bin" / "app").write_text(
        # Exits 3: without a bus in its sandbox it cannot take its name, and a non-zero
        # status ends the bus's wait at once (0 would make it wait for the name).
        '#!/bin/sh\nprintf "%s\\n" "$APPIMG_ID" "$HOME" "$*" > "$HOME/started"\nexit 3\n'
    )
    if service is not None:
        # The app must run in its sandbox: it brings its shell (a static busybox).
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.skip("needs busybox-static (tools/setup)")
        shutil.copy2(busybox, root / "bin" / "busybox")
        os.symlink("busybox", root / "bin" / "sh")
        (root / "share/dbus-1/services").mkdir(parents=True)
        (root / f"share/dbus-1/services/{app_id}.service").write_text(service)
    if mime is not None:
        (root / "share/mime/packages").mkdir(parents=True)
        (root / f"share/mime/packages/{app_id}.xml").write_text(MIME_HEAD + mime + "</mime-info>\n")
    if mime_types is not None:
        desktop = root / f"share/applications/{app_id}.desktop"
        desktop.write_text(desktop.read_text() + f"MimeType={mime_types}\n")
    return root


def install(
    user: Any, env: dict[str, str], image: Path, *extra: str
) -> subprocess.CompletedProcess:
    return appimg_as(user, env, "install", "--allow-unsigned", *extra, image)


def test_an_app_id_over_a_host_bus_name_is_refused_whole(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path
) -> None:
    user, home, env = user_home
    # A service the host provides through an XDG data directory of its own.
    host_share = user_tmpdir(user, "appimg-host-share-")
    (host_share / "dbus-1/services").mkdir(parents=True)
    (host_share / "dbus-1/services/com.example.Host.Daemon.service").write_text(
        "[D-BUS Service]\nName=com.example.Host.Daemon\nExec=/usr/bin/true\n"
    )
    env = {**env, "XDG_DATA_DIRS": f"{host_share}:/usr/local/share:/usr/share"}
    cases = {
        "org.freedesktop.Notifications": "org.freedesktop",
        "com.example.Host": "com.example.Host.Daemon",  # a prefix of the host's name
        "com.example.Host.Daemon.Plugin": "com.example.Host.Daemon",  # below it
    }
    before = home_snapshot(home)
    for app_id, clash in cases.items():
        image = pack_for(user, app_tree(tmp_path / app_id, app_id))
        result = install(user, env, image)
        err = result.stderr.decode()
        assert result.returncode == 6, err
        assert len(err.strip().splitlines()) == 1, err
        assert f"the app id collides with the host's D-Bus name {clash}" in err, err
        assert home_snapshot(home) == before  # nothing changed
    assert not store_dir(home).exists()


def test_hijacking_mime_packages_and_default_claims_are_not_exported(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path
) -> None:
    user, home, env = user_home
    exports = store_dir(home) / "exports" / "share"
    hijacks = {
        "org.example.Plain": (
            '<mime-type type="text/plain"><glob pattern="*.org-example-plain"/></mime-type>\n',
            "defines text/plain, which is not the app's own type",
        ),
        "org.example.Pdf": (
            '<mime-type type="application/x-org.example.pdf"><glob pattern="*.pdf"/></mime-type>\n',
            "glob '*.pdf' is the host's application/pdf",
        ),
        "org.example.Wide": (
            '<mime-type type="application/x-org.example.wide"><glob pattern="*"/></mime-type>\n',
            "glob '*' is too wide",
        ),
        "org.example.Magic": (
            '<mime-type type="application/x-org.example.magic"><magic priority="90">'
            '<match type="string" offset="0" value="%PDF-"/></magic></mime-type>\n',
            "<magic> priority 90 exceeds 50",
        ),
    }
    for app_id, (package, reason) in hijacks.items():
        image = pack_for(user, app_tree(tmp_path / app_id, app_id, mime=package))
        before = home_snapshot(home)
        strict = install(user, env, image, "--strict")
        assert strict.returncode == 6, strict.stderr.decode()
        assert len(strict.stderr.decode().strip().splitlines()) == 1
        assert reason in strict.stderr.decode()
        assert home_snapshot(home) == before  # nothing installed
        result = install(user, env, image)
        err = result.stderr.decode()
        assert result.returncode == 0, err
        refusals = [line for line in err.splitlines() if "refused" in line]
        assert len(refusals) == 1, err
        assert refusals[0].startswith(
            f"appimg install: refused share/mime/packages/{app_id}.xml: {reason}"
        ), err
        assert not (exports / f"mime/packages/{app_id}.xml").exists()
    # The host's text/plain and application/pdf are what they were.
    globs = (exports / "mime/globs2").read_text() if (exports / "mime/globs2").exists() else ""
    assert "*.pdf" not in globs and "text/plain" not in globs

    # A browser claim: the entry is exported, without the claim, said in one line.
    app_id = "org.example.Browser"
    image = pack_for(user, app_tree(tmp_path / app_id, app_id, mime_types=(
        "x-scheme-handler/http;x-scheme-handler/https;inode/directory;text/html;")))  # fmt: skip
    result = install(user, env, image)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    notes = [line for line in err.splitlines() if "MimeType" in line]
    assert len(notes) == 1 and "x-scheme-handler/http " in notes[0], err
    entry = (exports / f"applications/{app_id}.desktop").read_text()
    assert "MimeType=text/html;\n" in entry, entry
    assert "  mime types: opens text/html\n" in out, out
    for path in (home / ".config/mimeapps.list", home / ".local/share/applications/mimeapps.list"):
        assert not path.exists()  # nobody was made a default


def test_own_mime_types_are_registered_and_reported(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path
) -> None:
    user, home, env = user_home
    app_id = "org.example.Notes"
    package = ('<mime-type type="application/x-org.example.notes+xml">'
               '<sub-class-of type="application/xml"/><glob pattern="*.orgexamplenotes"/>'
               "</mime-type>\n")  # fmt: skip
    image = pack_for(user, app_tree(tmp_path / app_id, app_id, mime=package,
                                 mime_types="application/x-org.example.notes+xml;"))  # fmt: skip
    result = install(user, env, image)
    assert result.returncode == 0, result.stderr.decode()
    assert "refused" not in result.stderr.decode()
    out = result.stdout.decode()
    line = "  mime types: opens application/x-org.example.notes+xml; defines " \
        "application/x-org.example.notes+xml\n"  # fmt: skip
    assert line in out, out
    exports = store_dir(home) / "exports" / "share"
    assert (exports / f"mime/packages/{app_id}.xml").is_file()


SESSION_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <standard_session_servicedirs/>
  <limit name="service_start_timeout">20000</limit>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def test_an_apps_own_service_is_activated_by_a_real_bus_through_appimg_run(
    user_home: tuple[Any, Path, dict[str, str]], tmp_path: Path
) -> None:
    """The bus finds the exported service on the XDG data search path (as after `appimg xdg
    setup`) and runs its rewritten Exec: `appimg run ID -- --service`. The app has no bus
    in its sandbox yet (the filtered bus is another change), so it cannot take its name;
    what shows that activation started it in its sandbox is the file it writes into its
    HOME, which inside the sandbox is its data directory ~/.var/appimg/ID."""
    needs("dbus-daemon", "dbus-send")
    user, home, env = user_home
    app_id = "org.example.Service"
    service = (f"[D-BUS Service]\nName={app_id}\nExec=/bin/app --service\n"
               "SystemdService=evil.service\nAssumedAppArmorLabel=unconfined\n")  # fmt: skip
    image = pack_for(user, app_tree(tmp_path / app_id, app_id, service=service))
    result = install(user, env, image)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "removed SystemdService, AssumedAppArmorLabel" in err, err
    exports = store_dir(home) / "exports" / "share"
    exported = (exports / f"dbus-1/services/{app_id}.service").read_text()
    assert "SystemdService" not in exported and "AppArmor" not in exported
    exec_line = next(v for k, _, v in (line.partition("=") for line in exported.splitlines())
                     if k == "Exec")  # fmt: skip
    assert exec_line.endswith(f" run {app_id} -- --service"), exported

    data_dirs = appimg_as(user, env, "xdg", "env").stdout.decode().strip()
    socket = home / "bus"
    conf = home / "session.conf"
    conf.write_text(SESSION_CONF.format(socket=socket))
    bus_env = {**env, "XDG_DATA_DIRS": data_dirs}
    daemon = subprocess.Popen(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--",
         "dbus-daemon", "--nofork", "--nopidfile", f"--config-file={conf}"],
        env=bus_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        assert socket.exists(), daemon.stderr.read().decode() if daemon.poll() is not None else ""
        client_env = {**bus_env, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={socket}"}
        names = run_as(user, ["dbus-send", "--session", "--print-reply",
                              "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus.ListActivatableNames"], client_env)  # fmt: skip
        assert f'"{app_id}"' in names.stdout.decode(), names.stderr.decode()
        ping = run_as(user, ["dbus-send", "--session", "--print-reply", f"--dest={app_id}",
                             "/", "org.freedesktop.DBus.Peer.Ping"], client_env)  # fmt: skip
        started = home / ".var/appimg" / app_id / "started"
        if not started.is_file():
            daemon.terminate()
            pytest.fail(f"{ping.stderr.decode()}\n{daemon.communicate(timeout=10)[1].decode()}")
        app_seen_id, app_home, argv = started.read_text().splitlines()
        assert app_seen_id == app_id
        assert argv == "--service"
        # Inside the sandbox HOME is the data directory, not the user's home.
        assert app_home != str(home)
        # The app exits without taking its name: the bus says the activated process ended.
        assert ping.returncode != 0
        assert "Spawn.ChildExited" in ping.stderr.decode(), ping.stderr.decode()
        assert "exited with status 3" in ping.stderr.decode()
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
