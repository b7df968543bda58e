"""The app's D-Bus, as a normal user, with real daemons (spec/run.md, "D-Bus", "Portals").

A real ``dbus-daemon --session`` on a socket of the test's, two services owning
``org.example.ServiceA`` and ``...B`` (GLib answers ``org.freedesktop.DBus.Peer.Ping``
for them), and a real ``xdg-desktop-portal`` on that bus, all started and stopped
by fixtures. The apps use the ``host`` profile and probe the bus with the host's
python3 and GLib (:data:`PROBE`).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import appimg
from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    run_as,
    spawn_as,
    stop,
    user_env,
    user_tmpdir,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("dbus-daemon", "xdg-dbus-proxy", "bwrap"))
        or not Path("/usr/bin/python3").exists(),
        reason="needs dbus-daemon, xdg-dbus-proxy, bubblewrap, python3-gi (tools/setup)",
    ),
]
PORTAL = "/usr/libexec/xdg-desktop-portal"
A, B = "org.example.ServiceA", "org.example.ServiceB"
APP_ID = "org.example.BusApp"
ENTRY = '#!/bin/sh\nexec "$@"\n'
#: Run in the sandbox: each argument a probe, one JSON result per line.
PROBE = r"""#!/usr/bin/python3
import json, os, sys
from gi.repository import Gio, GLib

def call(bus, dest, path, iface, method, args=None, reply=None):
    return bus.call_sync(dest, path, iface, method, args, reply, 0, 5000, None)

out = {}
try:
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
except GLib.Error as exc:
    bus = None
    out["connect"] = exc.message
for probe in sys.argv[1:]:
    what, _, arg = probe.partition("=")
    try:
        if what == "exists":
            out[probe] = os.path.exists(arg)
            continue
        if what == "env":
            out[probe] = os.environ.get(arg)
            continue
        if bus is None:
            out[probe] = "no bus"
        elif what == "ping":
            call(bus, arg, "/", "org.freedesktop.DBus.Peer", "Ping")
            out[probe] = "ok"
        elif what == "list":
            names = call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                         "org.freedesktop.DBus", "ListNames").unpack()[0]
            out[probe] = sorted(n for n in names if not n.startswith(":"))
        elif what == "own":
            out[probe] = call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "RequestName",
                              GLib.Variant("(su)", (arg, 4))).unpack()[0]
        elif what == "gamemode":
            out[probe] = call(bus, "org.freedesktop.portal.Desktop",
                              "/org/freedesktop/portal/desktop",
                              "org.freedesktop.portal.GameMode", "QueryStatus",
                              GLib.Variant("(i)", (os.getpid(),))).unpack()[0]
        elif what == "network":
            out[probe] = call(bus, "org.freedesktop.portal.Desktop",
                              "/org/freedesktop/portal/desktop",
                              "org.freedesktop.portal.NetworkMonitor", "GetAvailable").unpack()[0]
    except GLib.Error as exc:
        out[probe] = "error: " + exc.message
print(json.dumps(out))
"""
#: A service owning the name argv[1] until killed (GLib answers Peer.Ping by itself).
SERVICE = r"""
import sys
from gi.repository import Gio, GLib
Gio.bus_own_name(Gio.BusType.SESSION, sys.argv[1], Gio.BusNameOwnerFlags.NONE,
                 None, None, lambda *a: sys.exit(3))
GLib.MainLoop().run()
"""


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    allow_fuse_for_users()
    return ensure_user()


def host_call(env: dict[str, str], user: pwd.struct_passwd, *args: str) -> str:
    out = run_as(user, ["dbus-send", "--session", "--print-reply", *args], env, timeout=20)
    return out.stdout.decode() + out.stderr.decode()


def wait_name(env: dict[str, str], user: pwd.struct_passwd, name: str) -> None:
    for _ in range(200):
        reply = host_call(env, user, "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus.NameHasOwner", f"string:{name}")  # fmt: skip
        if "boolean true" in reply:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not appear on the bus")


@pytest.fixture(scope="module")
def bus(user: pwd.struct_passwd) -> Iterator[tuple[dict[str, str], Path]]:
    """A session bus with the services A and B: (the user's env with its address, its socket)."""
    where = user_tmpdir(user, "appimg-dbus-")
    socket = where / "bus"
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home)
    daemon = spawn_as(user, ["dbus-daemon", "--config-file=/usr/share/dbus-1/session.conf",
                             f"--address=unix:path={socket}", "--nofork", "--print-address"],
                      env, stdout=subprocess.PIPE)  # fmt: skip
    assert daemon.stdout is not None
    address = daemon.stdout.readline().decode().strip()
    assert address.startswith("unix:path=")
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    services = [spawn_as(user, ["/usr/bin/python3", "-c", SERVICE, name], env) for name in (A, B)]
    try:
        for name in (A, B):
            wait_name(env, user, name)
        yield env, socket
    finally:
        for proc in (*services, daemon):
            stop(proc)


@pytest.fixture(scope="module")
def images(user: pwd.struct_passwd, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """``images(**permissions)``: a host-profile image of APP_ID with the probe."""
    made: dict[str, Path] = {}
    where = user_tmpdir(user)

    def image(app_id: str = APP_ID, **permissions: list[str]) -> Path:
        key = json.dumps([app_id, permissions], sort_keys=True)
        if key not in made:
            tree = tmp_path_factory.mktemp("tree")
            (tree / "libexec").mkdir()
            for name, text in (("app", ENTRY), ("probe", PROBE)):
                (tree / "libexec" / name).write_text(text)
                (tree / "libexec" / name).chmod(0o755)
            table = "".join(f"{k.replace('_', '-')} = {json.dumps(v)}\n"
                            for k, v in permissions.items())  # fmt: skip
            (tree / "appimg.toml").write_text(
                f'id = "{app_id}"\nname = "Bus"\nversion = "1"\nentrypoint = "libexec/app"\n'
                f'profile = "host"\n[permissions]\n{table}'
            )
            path = where / f"bus{len(made)}.appimg"
            appimg("pack", tree, "-o", path)
            path.chmod(0o644)
            made[key] = path
        return made[key]

    yield image


def probe(user: pwd.struct_passwd, env: dict[str, str], image: Path, *probes: str,
          flags: tuple[str, ...] = ()) -> tuple[dict, str]:  # fmt: skip
    out = appimg_as(user, env, "run", "--allow-unsigned", *flags, image, "--",
                    "/libexec/probe", *probes, timeout=60)  # fmt: skip
    err = out.stderr.decode()
    assert out.returncode == 0 and "Traceback" not in err, err
    # Every image here is unsigned: only the other warnings are the run's.
    err = "".join(line for line in err.splitlines(keepends=True) if "unsigned image" not in line)
    return json.loads(out.stdout.decode().splitlines()[-1]), err


def proxies_of(socket: Path) -> list[int]:
    """Pids of the xdg-dbus-proxy processes serving the test's bus."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = f"unix:path={socket}".encode()  # and maybe ",guid=..."
        if argv[0].endswith(b"xdg-dbus-proxy") and any(a.startswith(wanted) for a in argv):
            found.append(int(entry))
    return found


def test_talk_reaches_the_granted_name_only(user, bus, images) -> None:
    env, socket = bus
    result, err = probe(user, env, images(talk=[A]), f"ping={A}", f"ping={B}", "list")
    assert result[f"ping={A}"] == "ok"
    assert result[f"ping={B}"].startswith("error")
    assert A in result["list"] and B not in result["list"]
    assert "warning" not in err
    assert proxies_of(socket) == []  # gone with the run


def test_no_talk_reaches_neither(user, bus, images) -> None:
    env, _ = bus
    result, _ = probe(user, env, images(), f"ping={A}", f"ping={B}", "list")
    assert result[f"ping={A}"].startswith("error") and result[f"ping={B}"].startswith("error")
    assert A not in result["list"] and B not in result["list"]
    # One run's flag opens a name; the user's override would the same way.
    result, _ = probe(user, env, images(), f"ping={B}", flags=(f"--talk-name={B}",))
    assert result[f"ping={B}"] == "ok"


def test_owning_its_id_but_no_other_name(user, bus, images) -> None:
    env, _ = bus
    result, _ = probe(user, env, images(), f"own={APP_ID}", f"own={APP_ID}.Helper",
                      "own=org.example.Other", f"own={A}")  # fmt: skip
    assert result[f"own={APP_ID}"] == 1 and result[f"own={APP_ID}.Helper"] == 1  # primary owner
    assert str(result["own=org.example.Other"]).startswith("error")
    assert str(result[f"own={A}"]).startswith("error")


def test_the_real_bus_and_the_proxy_socket_are_invisible(user, bus, images) -> None:
    env, socket = bus
    runtime = env["XDG_RUNTIME_DIR"]
    result, _ = probe(user, env, images(talk=[A]), f"exists={socket}", f"exists={runtime}/appimg",
                      "env=DBUS_SESSION_BUS_ADDRESS", f"ping={A}")  # fmt: skip
    assert result[f"exists={socket}"] is False
    assert result[f"exists={runtime}/appimg"] is False
    assert result["env=DBUS_SESSION_BUS_ADDRESS"] == f"unix:path=/run/user/{user.pw_uid}/bus"
    assert result[f"ping={A}"] == "ok"
    # The run's private directory went with it (the runtime directory is shared by
    # every test as this user: only a directory this run made counts).
    before = set(Path(runtime, "appimg").glob(".run-*"))
    probe(user, env, images(talk=[A]), f"ping={A}")
    assert set(Path(runtime, "appimg").glob(".run-*")) <= before


def test_session_bus_socket_is_unfiltered_and_flagged(user, bus, images) -> None:
    env, _ = bus
    image = images(sockets=["session-bus"])
    result, _ = probe(user, env, image, f"ping={B}")
    assert result[f"ping={B}"] == "ok"
    shown = appimg_as(user, env, "permissions", image, timeout=60)
    assert "socket=session-bus: dangerous: the whole bus, unfiltered" in shown.stdout.decode()


def test_no_session_bus_warns_only_when_names_were_asked(user, bus, images) -> None:
    env, _ = bus
    env = {k: v for k, v in env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    result, err = probe(user, env, images(), "env=DBUS_SESSION_BUS_ADDRESS")
    assert result["env=DBUS_SESSION_BUS_ADDRESS"] is None and "warning" not in err
    _, err = probe(user, env, images(talk=[A]), "env=DBUS_SESSION_BUS_ADDRESS")
    assert err.count("warning") == 1 and "DBUS_SESSION_BUS_ADDRESS is not set" in err


def test_flatpak_info_is_read_only_and_names_the_app(user, bus, images) -> None:
    env, _ = bus
    script = "cat /.flatpak-info; echo x >> /.flatpak-info && echo WROTE"
    out = appimg_as(user, env, "run", "--allow-unsigned", images(talk=[A]), "--", "/bin/sh", "-c",
                    script, timeout=60)  # fmt: skip
    text = out.stdout.decode()
    assert f"[Application]\nname={APP_ID}\n" in text and "instance-id=" in text
    assert f"{A}=talk" in text and f"{APP_ID}=own" in text
    assert "WROTE" not in text


def test_proxy_goes_with_a_killed_run(user, bus, images) -> None:
    env, socket = bus
    from ..users import user_python

    proc = spawn_as(user, [*user_python(user), "-m", "appimg", "run", "--allow-unsigned",
                           str(images(talk=[A])), "--", "/bin/sleep", "60"], env,
                    stderr=subprocess.PIPE)  # fmt: skip
    try:
        for _ in range(200):
            if proxies_of(socket):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            raise AssertionError(f"no proxy started: {proc.communicate()[1]!r}")
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for _ in range(100):
            if not proxies_of(socket):
                break
            time.sleep(0.05)
        assert proxies_of(socket) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(not os.path.exists(PORTAL), reason="needs xdg-desktop-portal")
def test_the_portal_answers_and_knows_the_app(user, bus, images, tmp_path: Path) -> None:
    env, _ = bus
    log = tmp_path / "portal.log"
    log.touch()
    os.chmod(tmp_path, 0o755)
    os.chown(log, user.pw_uid, user.pw_gid)
    with log.open("wb") as handle:
        debug = {**env, "G_MESSAGES_DEBUG": "all"}
        portal = spawn_as(user, [PORTAL, "--verbose", "--replace"], debug, stdout=handle,
                          stderr=handle)  # fmt: skip
    try:
        wait_name(env, user, "org.freedesktop.portal.Desktop")
        # The portal reads the caller's /.flatpak-info (through the proxy's /proc/PID/root):
        # NetworkMonitor answers an app that shares the network, and refuses one that does not.
        shared, _ = probe(user, env, images(share=["network"]), "network")
        alone, _ = probe(user, env, images(), "network")
        # And it knows which app calls: the user refuses GameMode to APP_ID in the
        # permission store; the portal refuses APP_ID by name, not another app.
        store = ["--dest=org.freedesktop.impl.portal.PermissionStore",
                 "/org/freedesktop/impl/portal/PermissionStore",
                 "org.freedesktop.impl.portal.PermissionStore.SetPermission",
                 "string:gamemode", "boolean:true", "string:gamemode", f"string:{APP_ID}",
                 "array:string:no"]  # fmt: skip
        assert "Error" not in host_call(env, user, *store)
        refused, _ = probe(user, env, images(), "gamemode")
        other, _ = probe(user, env, images(app_id="org.example.OtherApp"), "gamemode")
    finally:
        stop(portal)
    assert shared["network"] in (True, False), shared
    assert "not available inside the sandbox" in alone["network"], alone
    assert refused["gamemode"].endswith(f"GameMode is not allowed for {APP_ID}"), refused
    assert "not allowed" not in str(other["gamemode"]), other
    # Its debug output names the other app as the caller too.
    assert "No gamemode permissions stored for org.example.OtherApp" in log.read_text()
