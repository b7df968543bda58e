"""The app's D-Bus: the session bus through a filter, and what portals read to know
the caller (spec/run.md, "D-Bus" and "Portals").

Every app gets the caller's session bus through ``xdg-dbus-proxy``, started for
the run, with ``--filter`` and rules from the effective permissions: the app may
always own its id and the names below it and talk to the desktop portals
(``org.freedesktop.portal.*``, the document portal included), plus the granted
``talk``/``own``/``see`` names. ``system-talk`` names get the system bus through
the same process, filtered the same way; ``sockets = ["session-bus"]`` and
``["system-bus"]`` bind the real bus socket, unfiltered. As Flatpak's
``flatpak_run_add_session_dbus_args`` / ``add_system_dbus_args`` and
``flatpak_run_maybe_start_dbus_proxy`` do.

The proxy is the bus daemon's peer, so a portal asking the daemon who called
gets the proxy's pid and reads ``/proc/PID/root/.flatpak-info``: the proxy runs
in a bubblewrap mount namespace of its own (the host's top-level directories,
read-only, and the run's private directory) whose root holds the app's
``/.flatpak-info`` (:func:`flatpak_info`), which the app's sandbox shows too.
Without bubblewrap there is no such namespace: a proxy on the host would make
every portal take the app for a host program, so there is no filtered bus.

The proxy's sockets are in the run's private directory under
``$XDG_RUNTIME_DIR/appimg`` (never shown to apps) and bound, through a descriptor,
at ``/run/user/UID/bus`` and ``/run/dbus/system_bus_socket`` in the sandbox. The
proxy lives as long as the run: it exits when the read end of its ``--fd`` pipe,
which only ``appimg run`` holds, is closed (``appimg run`` ending, SIGKILL
included), and bubblewrap's ``--die-with-parent`` (``PR_SET_PDEATHSIG``) kills it
too. What cannot be granted is a note, printed once, and only if the app asked
for bus names or a bus socket: an app that asked for nothing runs without a bus
just as quietly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from appimg.format.permissions import Permissions
from appimg.host.dirs import UserDirs
from appimg.services.run.sandbox import Bind
from appimg.services.run.sockets import SocketGrants, _NoSocket

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
FLATPAK_INFO = "/.flatpak-info"
#: Which Flatpak's /.flatpak-info this one is written as (portals compare versions).
FLATPAK_VERSION = "1.14.4"
#: The desktop portals, the document portal (org.freedesktop.portal.Documents) among them.
PORTALS = "org.freedesktop.portal.*"
#: How long a proxy gets to exit once its pipe is closed before it is killed.
STOP_SECONDS = 2.0


def _keyfile_list(items: Iterable[str]) -> str:
    """A GKeyFile string list: ``a;b;``, ``;`` and ``\\`` escaped."""
    return "".join(item.replace("\\", "\\\\").replace(";", "\\;") + ";" for item in items)


def flatpak_info(app_id: str, permissions: Permissions, *, instance: str, app_path: str,
                 session_proxy: bool, system_proxy: bool) -> bytes:  # fmt: skip
    """``/.flatpak-info`` as Flatpak writes it and xdg-desktop-portal reads it.

    ``[Application] name`` is what identifies the app; ``[Context]`` is what the
    portals check (NetworkMonitor and ProxyResolver answer only with
    ``shared=network``), in Flatpak's spelling of the same vocabulary.
    """
    lines = ["[Application]", f"name={app_id}", f"runtime=runtime/appimg/{app_id}/-/-", "",
             "[Instance]", f"instance-id={instance}", f"app-path={app_path}",
             f"flatpak-version={FLATPAK_VERSION}",
             f"session-bus-proxy={'true' if session_proxy else 'false'}",
             f"system-bus-proxy={'true' if system_proxy else 'false'}", "",
             "[Context]"]  # fmt: skip
    for key, category in (("shared", "share"), ("sockets", "sockets"), ("devices", "devices")):
        if permissions.names(category):
            lines.append(f"{key}={_keyfile_list(sorted(permissions.names(category)))}")
    if permissions.filesystems:
        entries = [loc if mode == "rw" else f"{loc}:{mode}"
                   for loc, mode in sorted(permissions.filesystems.items())]  # fmt: skip
        lines.append(f"filesystems={_keyfile_list(entries)}")
    session = {app_id: "own", f"{app_id}.*": "own"}
    for policy in ("see", "talk", "own"):  # the strongest wins
        session.update(dict.fromkeys(sorted(permissions.names(policy)), policy))
    lines += ["", "[Session Bus Policy]", *(f"{n}={p}" for n, p in sorted(session.items()))]
    if permissions.system_talk:
        lines += ["", "[System Bus Policy]",
                  *(f"{n}=talk" for n in sorted(permissions.system_talk))]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def session_filter(app_id: str, permissions: Permissions) -> list[str]:
    """xdg-dbus-proxy's rules for the session bus (after its ADDRESS PATH)."""
    rules = ["--filter", f"--own={app_id}", f"--own={app_id}.*", f"--talk={PORTALS}"]
    for policy in ("see", "talk", "own"):
        rules += [f"--{policy}={name}" for name in sorted(permissions.names(policy))]
    return rules


def system_filter(permissions: Permissions) -> list[str]:
    return ["--filter", *(f"--talk={name}" for name in sorted(permissions.system_talk))]


def socket_path(address: str) -> str | None:
    """The socket of a ``unix:path=...`` bus address (its first, ``;``-separated)."""
    first = address.split(";", 1)[0]
    if not first.startswith("unix:"):
        return None
    for part in first[len("unix:") :].split(","):
        key, _, value = part.partition("=")
        if key == "path" and value.startswith("/"):
            return value
    return None


#: A bus to proxy: (what, host address, socket name in the private dir, rules,
#: where in the sandbox, the variable naming it, its value).
_Proxied = tuple[str, str, str, list[str], str, str, str]


class _Proxy:
    """A running xdg-dbus-proxy; :meth:`stop` ends it (closing its pipe, then waiting)."""

    def __init__(self, argv: list[str], write_fd: int, read_fd: int) -> None:
        self.read_fd = read_fd
        try:
            # A process group of its own: the terminal's ^C is the app's to get.
            self.proc = subprocess.Popen(argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                         process_group=0)  # fmt: skip
        finally:
            os.close(write_fd)

    def wait_ready(self) -> bool:
        """Block until the proxy listens (it writes one byte) or fails (EOF)."""
        try:
            return os.read(self.read_fd, 1) == b"x"
        except OSError:
            return False

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read_fd)  # the proxy exits when it sees its pipe closed
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _wrapper(bwrap: str, private: Path, info: Path) -> list[str]:
    """bubblewrap around the proxy: the host's top-level entries read-only (the proxy
    needs its libraries and the real bus socket), the private directory writable
    (its listening sockets) and /.flatpak-info. A mount namespace of its own, so
    that /proc/PID/root/.flatpak-info is the app's for a portal asking about it."""
    args = [bwrap, "--unshare-user-try", "--die-with-parent", "--tmpfs", "/"]
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name == FLATPAK_INFO[1:]:
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), f"/{entry.name}"]
            elif entry.is_dir(follow_symlinks=False):
                args += ["--ro-bind", entry.path, entry.path]
    args += ["--bind", str(private), str(private), "--ro-bind", str(info), FLATPAK_INFO]
    return [*args, "--remount-ro", "/", "--"]


def bus_grants(grants: SocketGrants, permissions: Permissions, app_id: str, dirs: UserDirs,
               caller_env: Mapping[str, str], runtime: str, *, app_path: str,
               bwrap: str | None) -> None:  # fmt: skip
    """Add the buses, /.flatpak-info and the document portal's folder to ``grants``
    (binds, environment, notes; the proxy is stopped by ``grants.close()``)."""
    asked_session = bool(permissions.talk or permissions.own or permissions.see)
    session_address = caller_env.get("DBUS_SESSION_BUS_ADDRESS", "")
    system_address = caller_env.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEM_BUS_SOCKET}"
    proxied: list[_Proxied] = []

    if "session-bus" in permissions.sockets:
        _bind_bus(grants, "session-bus", session_address, f"{runtime}/bus",
                  "DBUS_SESSION_BUS_ADDRESS")  # fmt: skip
    elif session_address:
        proxied.append(("session bus", session_address, "bus",
                        session_filter(app_id, permissions), f"{runtime}/bus",
                        "DBUS_SESSION_BUS_ADDRESS", f"unix:path={runtime}/bus"))  # fmt: skip
    elif asked_session:
        grants.note("session bus: DBUS_SESSION_BUS_ADDRESS is not set: no bus for the app")
    if "system-bus" in permissions.sockets:
        _bind_bus(grants, "system-bus", system_address, SYSTEM_BUS_SOCKET,
                  "DBUS_SYSTEM_BUS_ADDRESS")  # fmt: skip
    elif permissions.system_talk:
        proxied.append(("system bus", system_address, "system-bus", system_filter(permissions),
                        SYSTEM_BUS_SOCKET, "DBUS_SYSTEM_BUS_ADDRESS",
                        f"unix:path={SYSTEM_BUS_SOCKET}"))  # fmt: skip

    private = grants.private_dir(dirs)
    info = private / "flatpak-info"
    instance = str(int.from_bytes(os.urandom(4), "big"))
    data = flatpak_info(app_id, permissions, instance=instance, app_path=app_path,
                        session_proxy=any(p[2] == "bus" for p in proxied),
                        system_proxy=any(p[2] == "system-bus" for p in proxied))  # fmt: skip
    fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    info_fd = os.open(info, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    grants.fds.append(info_fd)
    grants.binds.append(Bind(str(info), FLATPAK_INFO, fd=info_fd, is_dir=False))
    _document_portal(grants, app_id, dirs, runtime)
    if proxied:
        _start_proxy(grants, proxied, private, info, bwrap, asked_session)


def _bind_bus(grants: SocketGrants, what: str, address: str, dest: str, variable: str) -> None:
    """The real bus socket, unfiltered (never an abstract one: not a path to bind)."""
    path = socket_path(address)
    if path is None:
        why = "is not set" if not address else "is not a unix:path= address"
        grants.note(f"socket {what}: {variable} {why}: not granted")
        return
    if grants.bind_socket(what, path, dest):
        grants.env[variable] = f"unix:path={dest}"


def _start_proxy(grants: SocketGrants, proxied: list[_Proxied], private: Path, info: Path,
                 bwrap: str | None, asked: bool) -> None:  # fmt: skip
    proxy = shutil.which("xdg-dbus-proxy")
    usable = []
    for item in proxied:
        what, address = item[0], item[1]
        # An address is the proxy's argument: one that reads as an option is not one.
        path = socket_path(address)
        if not address[:1].isalpha() or ":" not in address:
            reason = "is not a D-Bus address"
        elif path is not None and not _is_socket(path):
            reason = "names no socket"
        else:
            usable.append(item)
            continue
        if what == "system bus" or asked:
            grants.note(f"{what}: the address {address[:80]!r} {reason}: no bus for the app")
    if not usable:
        return
    missing = "xdg-dbus-proxy is not installed" if proxy is None else None
    if bwrap is None:
        missing = "running the filtering proxy needs bubblewrap"
    if missing:
        if asked or any(item[0] == "system bus" for item in usable):
            grants.note(f"D-Bus: {missing}: no bus for the app")
        return
    assert proxy is not None
    read_fd, write_fd = os.pipe()
    argv = [*_wrapper(bwrap, private, info), proxy, f"--fd={write_fd}"]
    for _, address, name, rules, *_ in usable:
        argv += [address, str(private / name), *rules]
    running = _Proxy(argv, write_fd, read_fd)
    grants.closers.append(running.stop)
    if not running.wait_ready():
        if asked or any(item[0] == "system bus" for item in usable):
            grants.note("D-Bus: the filtering proxy did not start: no bus for the app")
        return
    for what, _, name, _, dest, variable, value in usable:
        try:
            fd = grants.open_socket(str(private / name))
        except _NoSocket as exc:
            grants.note(f"{what}: {exc}: no bus for the app")
            continue
        grants.binds.append(Bind(str(private / name), dest, writable=True, fd=fd, is_dir=False))
        grants.env[variable] = value


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _document_portal(grants: SocketGrants, app_id: str, dirs: UserDirs, runtime: str) -> None:
    """The document portal's files for this app (``doc/by-app/ID``) at ``doc`` in the
    sandbox's runtime directory, where the portal's paths say they are."""
    from appimg.services.run.grants import open_nofollow

    source = f"{dirs.runtime}/doc/by-app/{app_id}"
    try:
        fd = open_nofollow(source)
    except OSError:
        return  # no document portal running (or not for this user): nothing to show
    grants.fds.append(fd)
    grants.binds.append(Bind(source, f"{runtime}/doc", writable=True, fd=fd, is_dir=True))
