"""The host sockets an app's ``sockets`` permission opens (spec/run.md, "Sockets").

:func:`socket_grants` turns the granted socket names (``x11``, ``wayland``,
``fallback-x11``, ``pulseaudio``, ``pipewire``, ``ssh-auth``, ``pcsc``,
``cups``) and the caller's environment into binds and environment variables
for the sandbox, in the sandbox's own runtime directory (``/run/user/UID``, a
private tmpfs) except X11's socket, which clients look for in
``/tmp/.X11-unix``. As in Flatpak's ``flatpak_run_add_*_args``.

Each socket is opened on the host with ``O_PATH | O_NOFOLLOW`` and must be a
socket; the sandbox binds that descriptor (bubblewrap's ``--bind-fd``, the
direct backend's ``/proc/self/fd/N``), so a symlink or a file swapped in is
never followed. The variables the caller sets (``$DISPLAY``,
``$WAYLAND_DISPLAY``, ``$PULSE_SERVER``, ...) may point anywhere the caller
likes, but a name relative to the runtime directory must be one plain name.
What cannot be granted is a note (printed once as a warning), never an error:
the app runs without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from appimg.errors import FormatError
from appimg.format.permissions import Permissions
from appimg.host.dirs import UserDirs
from appimg.services.run import xauth
from appimg.services.run.sandbox import Bind
from appimg.values import Fields

X11_DIR = "/tmp/.X11-unix"
#: ``:N``, ``:N.S`` or ``unix:N[.S]``: a local display; ``host:N`` (TCP) is not bound.
_DISPLAY = re.compile(r"(?:unix)?:(\d{1,5})(?:\.(\d{1,5}))?\Z")
#: A socket's name inside a runtime directory: one path component.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\Z")
DEFAULT_WAYLAND = "wayland-0"
DEFAULT_PIPEWIRE = "pipewire-0"
DEFAULT_PCSC = "/run/pcscd/pcscd.comm"
DEFAULT_CUPS = "/run/cups/cups.sock"


def sandbox_runtime_dir(uid: int) -> str:
    """The sandbox's ``XDG_RUNTIME_DIR``: ``/run/user/UID``, a private tmpfs (0700)."""
    return f"/run/user/{uid}"


class _NoSocket(Exception):
    """Why a socket is not granted (the text of a note)."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


class SocketGrants(Fields):
    """What the granted sockets add to a sandbox; :meth:`close` after the run.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    __slots__ = ("binds", "env", "notes", "fds", "private", "closers", "_lock")  # noqa: RUF023 (repr order)
    _FIELDS = __slots__

    def __init__(self) -> None:
        self.binds: list[Bind] = []
        self.env: dict[str, str] = {}
        self.notes: list[str] = []
        #: O_PATH descriptors of the bound sockets, open until the sandbox is built.
        self.fds: list[int] = []
        #: The run's private directory (the Xauthority file, /.flatpak-info, the D-Bus
        #: proxy's sockets), removed by :meth:`close`.
        self.private: Path | None = None
        #: What else ends with the run (the D-Bus proxy), called by :meth:`close` first.
        self.closers: list[Callable[[], None]] = []
        self._lock = -1

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def open_socket(self, path: str) -> int:
        """An O_PATH descriptor of the socket at ``path``; its last component is not
        followed. :class:`_NoSocket` says why not."""
        if not path.startswith("/"):
            raise _NoSocket(f"{_shown(path)} is not an absolute path")
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise _NoSocket(f"no socket at {_shown(path)} ({exc.strerror})") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISSOCK(mode):
            os.close(fd)
            what = "a symlink" if stat.S_ISLNK(mode) else "not a socket"
            raise _NoSocket(f"{_shown(path)} is {what}")
        self.fds.append(fd)
        return fd

    def bind_socket(self, what: str, path: str, dest: str) -> bool:
        """Bind the socket at host ``path`` at ``dest``; a note if it cannot be."""
        try:
            fd = self.open_socket(path)
        except _NoSocket as exc:
            self.note(f"socket {what}: {exc}: not granted")
            return False
        self.binds.append(Bind(path, dest, writable=True, fd=fd, is_dir=False))
        return True

    def private_dir(self, dirs: UserDirs) -> Path:
        """A directory of this run's own under ``$XDG_RUNTIME_DIR/appimg`` (0700)."""
        if self.private is None:
            parent = dirs.runtime / "appimg"
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _sweep(parent)
            # A dot name: never an app id, so never one of the default mount points there.
            while self.private is None:
                path = parent / f".run-{os.urandom(6).hex()}"
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)
                    self.private = path
            # Locked while the run lasts: a run killed by SIGKILL leaves it unlocked.
            self._lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self.private

    def close(self) -> None:
        while self.closers:
            self.closers.pop()()
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None
            os.close(self._lock)

    def __enter__(self) -> SocketGrants:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A private directory younger than this is never swept (its run may not have locked it yet).
SWEEP_AGE = 10.0


def _sweep(parent: Path) -> None:
    """Remove the private directories of runs that were killed (their lock is free)."""
    import time

    with os.scandir(parent) as entries:
        names = [e.name for e in entries if e.name.startswith(".run-")]
    stale = []
    for name in names:
        try:
            fd = os.open(parent / name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                         | os.O_CLOEXEC)  # fmt: skip
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_ctime >= SWEEP_AGE:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale.append(name)
        except OSError:
            pass  # a live run holds it
        finally:
            os.close(fd)
    for name in stale:
        shutil.rmtree(parent / name, ignore_errors=True)


def _caller_runtime(caller_env: Mapping[str, str]) -> str | None:
    value = caller_env.get("XDG_RUNTIME_DIR", "")
    if not value.startswith("/"):
        return None
    return value.rstrip("/") or "/"


def _in_runtime(name: str, host_runtime: str | None, variable: str) -> str:
    """The host path of ``name`` (``$VARIABLE``) in the caller's runtime directory."""
    if name.startswith("/"):
        return name
    if not _NAME.match(name):
        raise _NoSocket(f"{variable}={_shown(name)} is not a plain socket name")
    if host_runtime is None:
        raise _NoSocket("XDG_RUNTIME_DIR is not set")
    return f"{host_runtime}/{name}"


def _x11(grants: SocketGrants, dirs: UserDirs, caller_env: Mapping[str, str], runtime: str) -> None:
    display = caller_env.get("DISPLAY", "")
    if not display:
        grants.note("socket x11: DISPLAY is not set: not granted")
        return
    match = _DISPLAY.match(display)
    if not match:
        grants.note(f"socket x11: DISPLAY={_shown(display)} is not a local display (:N): "
                    "not granted")  # fmt: skip
        return
    number = str(int(match[1]))
    if not grants.bind_socket("x11", f"{X11_DIR}/X{number}", f"{X11_DIR}/X{number}"):
        return
    grants.env["DISPLAY"] = f":{number}" + (f".{int(match[2])}" if match[2] else "")
    source = caller_env.get("XAUTHORITY") or str(dirs.home / ".Xauthority")
    try:
        cookies = xauth.for_display(xauth.parse(xauth.read_file(source)), number,
                                    os.uname().nodename)  # fmt: skip
    except FileNotFoundError:
        return  # a server without authentication needs none
    except (OSError, FormatError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        grants.note(f"socket x11: no cookie passed from {_shown(source)}: {reason}")
        return
    if not cookies:
        return
    written = grants.private_dir(dirs) / "Xauthority"
    xauth.write_private(str(written), cookies)
    grants.binds.append(Bind(str(written), f"{runtime}/Xauthority", is_dir=False))
    grants.env["XAUTHORITY"] = f"{runtime}/Xauthority"


def _wayland(grants: SocketGrants, caller_env: Mapping[str, str], runtime: str,
             *, bind: bool) -> bool:  # fmt: skip
    """Whether the caller has a Wayland socket; bind it when ``bind``."""
    name = caller_env.get("WAYLAND_DISPLAY") or DEFAULT_WAYLAND
    try:
        path = _in_runtime(name, _caller_runtime(caller_env), "WAYLAND_DISPLAY")
        if not bind:
            os.close(grants.fds.pop(grants.fds.index(grants.open_socket(path))))
            return True
    except _NoSocket as exc:
        if bind:
            grants.note(f"socket wayland: {exc}: not granted")
        return False
    dest = DEFAULT_WAYLAND if name.startswith("/") else name
    if grants.bind_socket("wayland", path, f"{runtime}/{dest}"):
        grants.env["WAYLAND_DISPLAY"] = dest
        return True
    return False


def _named(grants: SocketGrants, what: str, caller_env: Mapping[str, str],
           runtime: str) -> None:  # fmt: skip
    """pulseaudio, pipewire, ssh-auth, pcsc, cups: one socket and one variable each."""
    host_runtime = _caller_runtime(caller_env)
    try:
        if what == "pulseaudio":
            server = caller_env.get("PULSE_SERVER", "")
            if server.startswith("unix:"):
                path = server[len("unix:") :]
            else:
                path = _in_runtime("pulse", host_runtime, "XDG_RUNTIME_DIR") + "/native"
            dest, variable, value = "pulse/native", "PULSE_SERVER", f"unix:{runtime}/pulse/native"
        elif what == "pipewire":
            name = caller_env.get("PIPEWIRE_REMOTE") or DEFAULT_PIPEWIRE
            path = _in_runtime(name, host_runtime, "PIPEWIRE_REMOTE")
            dest = DEFAULT_PIPEWIRE if name.startswith("/") else name
            variable, value = "PIPEWIRE_REMOTE", dest
        elif what == "ssh-auth":
            path = caller_env.get("SSH_AUTH_SOCK", "")
            if not path:
                raise _NoSocket("SSH_AUTH_SOCK is not set")
            dest, variable = "ssh-auth", "SSH_AUTH_SOCK"
            value = f"{runtime}/{dest}"
        elif what == "pcsc":
            path = caller_env.get("PCSCLITE_CSOCK_NAME") or DEFAULT_PCSC
            dest, variable = "pcscd.comm", "PCSCLITE_CSOCK_NAME"
            value = f"{runtime}/{dest}"
        else:  # cups
            server = caller_env.get("CUPS_SERVER", "")
            path = server if server.startswith("/") else DEFAULT_CUPS
            dest, variable = "cups.sock", "CUPS_SERVER"
            value = f"{runtime}/{dest}"
    except _NoSocket as exc:
        grants.note(f"socket {what}: {exc}: not granted")
        return
    if grants.bind_socket(what, path, f"{runtime}/{dest}"):
        grants.env[variable] = value


def socket_grants(permissions: Permissions, dirs: UserDirs, caller_env: Mapping[str, str],
                  runtime: str) -> SocketGrants:  # fmt: skip
    """The binds, variables and notes of ``permissions.sockets`` for one run.

    ``runtime`` is the sandbox's runtime directory (:func:`sandbox_runtime_dir`);
    ``caller_env`` the caller's environment, where the sockets are found. The
    result holds descriptors and maybe a file: :meth:`SocketGrants.close` it.
    """
    grants = SocketGrants()
    wanted = permissions.sockets
    try:
        has_wayland = False
        if "wayland" in wanted:
            has_wayland = _wayland(grants, caller_env, runtime, bind=True)
        elif "fallback-x11" in wanted:
            has_wayland = _wayland(grants, caller_env, runtime, bind=False)
        if "x11" in wanted or ("fallback-x11" in wanted and not has_wayland):
            _x11(grants, dirs, caller_env, runtime)
            if "fallback-x11" in wanted and "DISPLAY" in grants.env:
                # X11 stands in for the missing Wayland: nothing to warn about.
                grants.notes = [n for n in grants.notes if not n.startswith("socket wayland:")]
        for what in ("pulseaudio", "pipewire", "ssh-auth", "pcsc", "cups"):
            if what in wanted:
                _named(grants, what, caller_env, runtime)
    except BaseException:
        grants.close()
        raise
    return grants
