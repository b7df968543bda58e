"""The ``sockets`` permission, as a normal user, with real servers (spec/run.md, "Sockets").

Each server (Xvfb with cookie authentication, weston's headless backend, a
fake PulseAudio/PipeWire listener) is started and stopped by its fixture. The
apps use the ``host`` profile, so the host's ``xdpyinfo``, ``wayland-info`` and
``python3`` run inside the sandbox.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import threading
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
    wait_for,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("Xvfb", "xauth", "xdpyinfo", "weston", "wayland-info")),
        reason="needs xvfb, xauth, x11-utils, weston, wayland-utils (tools/setup)",
    ),
]
BACKENDS = ("bwrap", "direct")
APP = '#!/bin/sh\nexec "$@"\n'


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    allow_fuse_for_users()
    return ensure_user()


@pytest.fixture(scope="module")
def images(user: pwd.struct_passwd, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """``images(*sockets)``: a host-profile image asking for those sockets, readable by ``user``."""
    made: dict[tuple[str, ...], Path] = {}
    where = user_tmpdir(user)

    def image(*sockets: str) -> Path:
        if sockets not in made:
            tree = tmp_path_factory.mktemp("tree")
            (tree / "libexec").mkdir()
            (tree / "libexec" / "app").write_text(APP)
            (tree / "libexec" / "app").chmod(0o755)
            listed = ", ".join(f'"{s}"' for s in sockets)
            (tree / "appimg.toml").write_text(
                f'id = "org.example.Sockets{len(made)}"\nname = "S"\nversion = "1"\n'
                f'entrypoint = "libexec/app"\nprofile = "host"\n'
                f"[permissions]\nsockets = [{listed}]\n"
            )
            path = where / f"s{len(made)}.appimg"
            appimg("pack", tree, "-o", path)
            path.chmod(0o644)
            made[sockets] = path
        return made[sockets]

    yield image


@pytest.fixture
def home(user: pwd.struct_passwd) -> Path:
    return user_tmpdir(user, "appimg-home-")


def run(user: pwd.struct_passwd, env: dict[str, str], image: Path, *argv: str,
        backend: str = "bwrap") -> subprocess.CompletedProcess:  # fmt: skip
    env = {**env, "APPIMG_NO_BWRAP": "1" if backend == "direct" else ""}
    return appimg_as(user, env, "run", "--allow-unsigned", image, "--", *argv, timeout=60)


def socket_warnings(out: subprocess.CompletedProcess) -> list[str]:
    err = out.stderr.decode()
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "warning: socket" in line]


@pytest.fixture
def xvfb(user: pwd.struct_passwd, home: Path) -> Iterator[tuple[int, str]]:
    """Xvfb on a free display, with the cookie in the user's ~/.Xauthority (and two
    cookies that must not reach the sandbox: another display's, a TCP one)."""
    x11 = Path("/tmp/.X11-unix")
    x11.mkdir(exist_ok=True)
    x11.chmod(0o1777)
    number = next(n for n in range(140, 400) if not (x11 / f"X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())  # fmt: skip
    cookie = secrets.token_hex(16)
    env = user_env(user, home)
    auth = home / ".Xauthority"
    for display, value in ((f":{number}", cookie), (f":{number + 1}", "ab" * 16),
                           (f"198.51.100.7:{number}", "cd" * 16)):  # fmt: skip
        run_as(user, ["xauth", "-f", str(auth), "add", display, ".", value], env, check=True)
    server = spawn_as(user, ["Xvfb", f":{number}", "-auth", str(auth), "-nolisten", "tcp"], env)
    try:
        wait_for(x11 / f"X{number}", server)
        yield number, cookie
    finally:
        stop(server)


@pytest.fixture
def weston(user: pwd.struct_passwd, home: Path) -> Iterator[str]:
    env = user_env(user, home)
    name = f"wayland-appimg-{secrets.token_hex(4)}"
    server = spawn_as(user, ["weston", "--backend=headless-backend.so", f"--socket={name}",
                             "--idle-time=0"], env)  # fmt: skip
    try:
        wait_for(Path(env["XDG_RUNTIME_DIR"]) / name, server)
        yield name
    finally:
        stop(server)
        with contextlib.suppress(FileNotFoundError):
            (Path(env["XDG_RUNTIME_DIR"]) / name).unlink()


@pytest.mark.parametrize("backend", BACKENDS)
def test_x11_with_its_cookie_only(user, images, home, xvfb, backend: str) -> None:
    number, cookie = xvfb
    env = user_env(user, home, DISPLAY=f":{number}")
    private = Path(env["XDG_RUNTIME_DIR"]) / "appimg"
    # The user's runtime directory may be shared with other test sessions: only
    # what these runs made counts.
    before = set(private.glob(".run-*"))
    out = run(user, env, images("x11"), "xdpyinfo", backend=backend)
    assert out.returncode == 0, out.stderr
    assert f"name of display:    :{number}" in out.stdout.decode()
    out = run(user, env, images("x11"), "sh", "-c",
              'echo "$XAUTHORITY"; xauth -f "$XAUTHORITY" list; ls -l "$XAUTHORITY"',
              backend=backend)  # fmt: skip
    lines = out.stdout.decode().splitlines()
    runtime = f"/run/user/{user.pw_uid}"
    assert lines[0] == f"{runtime}/Xauthority"
    assert len(lines) == 3 and lines[1].split()[1:] == ["MIT-MAGIC-COOKIE-1", cookie], lines
    # The caller's own file is not in the sandbox, and the run's copy is gone afterwards.
    look = run(user, env, images("x11"), "sh", "-c", f"test -e {home}/.Xauthority || echo hidden")
    assert look.stdout.decode().strip() == "hidden"
    assert set(private.glob(".run-*")) <= before


def test_without_x11_no_display(user, images, home, xvfb) -> None:
    number, _ = xvfb
    env = user_env(user, home, DISPLAY=f":{number}")
    out = run(user, env, images(), "sh", "-c", 'echo "D=$DISPLAY"; xdpyinfo')
    assert out.returncode != 0
    assert out.stdout.decode().startswith("D=\n")
    # Naming the display itself: the socket is not there, and no cookie is.
    out = run(user, env, images(), "xdpyinfo", "-display", f":{number}")
    assert out.returncode != 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_wayland(user, images, home, weston, backend: str) -> None:
    env = user_env(user, home, WAYLAND_DISPLAY=weston)
    out = run(user, env, images("wayland"), "wayland-info", backend=backend)
    assert out.returncode == 0, out.stderr
    assert "wl_compositor" in out.stdout.decode()
    out = run(user, env, images(), "wayland-info", backend=backend)
    assert out.returncode != 0


def test_fallback_x11_only_without_wayland(user, images, home, xvfb, weston) -> None:
    number, _ = xvfb
    image = images("wayland", "fallback-x11")
    show = ("sh", "-c", 'echo "D=$DISPLAY W=$WAYLAND_DISPLAY"')
    env = user_env(user, home, DISPLAY=f":{number}", WAYLAND_DISPLAY=weston)
    assert run(user, env, image, *show).stdout.decode().strip() == f"D= W={weston}"
    env["WAYLAND_DISPLAY"] = "wayland-nothing-here"
    out = run(user, env, image, *show)
    assert out.stdout.decode().strip() == f"D=:{number} W="
    assert socket_warnings(out) == []  # X11 stands in: no warning about Wayland
    assert run(user, env, image, "xdpyinfo").returncode == 0


class Listener:
    """A unix socket server that answers every connection with ``hello``."""

    def __init__(self, path: Path, user: pwd.struct_passwd) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chown(path, user.pw_uid, user.pw_gid)
        self.sock.listen()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    conn.sendall(b"hello")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


CONNECT = (
    "import os, socket\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.connect(os.environ['WHERE'])\n"
    "print(s.recv(5).decode())\n"
)


@pytest.mark.parametrize(
    ("permission", "name", "variable", "where"),
    [("pulseaudio", "pulse/native", "PULSE_SERVER", "unix:{rt}/pulse/native"),
     ("pipewire", "pipewire-0", "", "{rt}/pipewire-0")],
)  # fmt: skip
def test_sound_sockets(user, images, home, permission, name, variable, where) -> None:
    env = user_env(user, home)
    runtime = Path(env["XDG_RUNTIME_DIR"])
    path = runtime / name
    path.parent.mkdir(exist_ok=True)
    os.chown(path.parent, user.pw_uid, user.pw_gid)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = Listener(path, user)
    try:
        expected = where.format(rt=f"/run/user/{user.pw_uid}")
        target = expected.removeprefix("unix:")
        script = ("sh", "-c", f'echo "V=${variable or "XDG_RUNTIME_DIR"}"; '
                  f"WHERE={target} exec python3 -c \"$1\"", "sh", CONNECT)  # fmt: skip
        out = run(user, env, images(permission), *script)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert lines == [f"V={expected if variable else f'/run/user/{user.pw_uid}'}", "hello"]
        out = run(user, env, images(), *script)
        assert out.returncode != 0
        assert "hello" not in out.stdout.decode()
    finally:
        listener.close()
        path.unlink()


def test_hostile_inputs_grant_nothing_with_one_warning_each(user, images, home, xvfb) -> None:
    number, _ = xvfb
    show = ("sh", "-c", 'echo "D=$DISPLAY A=$XAUTHORITY W=$WAYLAND_DISPLAY P=$PIPEWIRE_REMOTE"; '
            'ls -A "$XDG_RUNTIME_DIR" /tmp/.X11-unix 2>&1 | tr "\\n" " "')  # fmt: skip
    bad = home / "bad-xauthority"
    for blob in (b"\x01\x00\xff\xff garbage", b"\0" * (1 << 20)):
        bad.write_bytes(blob)
        bad.chmod(0o644)
        env = user_env(user, home, DISPLAY=f":{number}", XAUTHORITY=str(bad))
        out = run(user, env, images("x11"), *show)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().startswith(f"D=:{number} A= "), out.stdout
        assert len(socket_warnings(out)) == 1, out.stderr
    for env_extra, permission in (({"DISPLAY": ":../../x"}, "x11"),
                                  ({"WAYLAND_DISPLAY": "../../../etc"}, "wayland")):  # fmt: skip
        env = user_env(user, home, **env_extra)
        out = run(user, env, images(permission), *show)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().startswith("D= A= W= P="), out.stdout
        assert len(socket_warnings(out)) == 1, out.stderr
    # A symlink where the socket is expected (to a real socket): not followed.
    env = user_env(user, home)
    runtime = Path(env["XDG_RUNTIME_DIR"])
    link = runtime / "pipewire-0"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(f"/tmp/.X11-unix/X{number}")
    try:
        out = run(user, env, images("pipewire"), *show)
        assert out.returncode == 0, out.stderr
        assert "pipewire-0" not in out.stdout.decode()
        warnings = socket_warnings(out)
        assert len(warnings) == 1 and "symlink" in warnings[0], out.stderr
    finally:
        link.unlink()


def test_the_runtime_dir_is_private_and_keeps_the_views_run(user, images, home) -> None:
    env = user_env(user, home)
    out = run(user, env, images(), "sh", "-c",
              'stat -c "%a %U" "$XDG_RUNTIME_DIR"; ls /run/host; touch /run/x 2>/dev/null '
              '|| echo ro; touch "$XDG_RUNTIME_DIR/x" && echo rw')  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == f"700 {user.pw_name}"
    assert "fonts" in lines[1:-2] and lines[-2:] == ["ro", "rw"]
