"""Running commands as an unprivileged user, for the tests that prove the no-root path.

The suite runs as root in CI; these helpers create a normal user once and run
commands as that user with setpriv (a real uid/gid change, a fresh
environment with its own HOME), the way a desktop user would run appimg.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER = "appimgtest"


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """Create the test user (with a home directory) if it does not exist yet."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", name],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(name)


def allow_fuse_for_users() -> None:
    """Like a desktop distro's udev rule: /dev/fuse usable by everyone (0666)."""
    if os.path.exists("/dev/fuse"):
        os.chmod("/dev/fuse", 0o666)


#: Directories user_tmpdir made; conftest removes them when the session ends.
CREATED_DIRS: list[Path] = []


def user_tmpdir(user: pwd.struct_passwd, prefix: str = "appimg-user-") -> Path:
    """A fresh directory owned by ``user`` (outside root's private pytest tmp dirs),
    removed at the end of the test session."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    CREATED_DIRS.append(path)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o755)
    return path


def remove_created_dirs() -> None:
    while CREATED_DIRS:
        shutil.rmtree(CREATED_DIRS.pop(), ignore_errors=True)


def user_env(user: pwd.struct_passwd, home: Path | None = None, **extra: str) -> dict[str, str]:
    """A clean login-like environment for ``user``; HOME may point at a fresh directory."""
    home = home or Path(user.pw_dir)
    env = {
        "HOME": str(home),
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "APPIMG_MOUNT_GRACE": "0",  # mounts go with the run, as the tests check
    }
    # This test session's own: another session's sockets, mounts and run directories
    # (a second checkout's suite running beside it) must not be in the way.
    runtime = Path(f"/tmp/appimg-test-runtime-{user.pw_uid}-{os.getpid()}")
    if not runtime.is_dir():
        runtime.mkdir(mode=0o700)
        os.chown(runtime, user.pw_uid, user.pw_gid)
        CREATED_DIRS.append(runtime)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.update(extra)
    return env


def run_as(
    user: pwd.struct_passwd,
    argv: list[str],
    env: dict[str, str],
    *,
    timeout: float = 120,
    check: bool = False,
    **kwargs: object,
) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user`` (real and effective ids, supplementary groups reset)."""
    command = [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
        "--", *argv,
    ]  # fmt: skip
    return subprocess.run(
        command, env=env, timeout=timeout, check=check, capture_output=True, **kwargs
    )  # type: ignore[call-overload]


def appimg_as(user: pwd.struct_passwd, env: dict[str, str], *args: object, **kwargs: object):
    """The real CLI as ``user``: ``python -m appimg ARGS``."""
    return run_as(user, [*user_python(user), "-m", "appimg", *map(str, args)], env, **kwargs)


@functools.cache
def user_python(user: pwd.struct_passwd) -> list[str]:
    """A command prefix that runs Python with appimg importable as ``user``.

    The suite's interpreter is used directly when the user can reach it and the
    project; otherwise (a checkout under a private home) the package and its
    dependencies are copied once to a world-readable place.
    """
    probe = run_as(user, [sys.executable, "-c", "import appimg, construct"], {"PATH": "/usr/bin"})
    if probe.returncode == 0:
        return [sys.executable]
    import construct

    import appimg

    target = Path("/tmp/appimg-test-pythonpath")
    if not target.exists():
        staging = Path(tempfile.mkdtemp(dir="/tmp"))
        site = Path(construct.__file__).resolve().parents[1]
        shutil.copytree(site, staging / "site", symlinks=True)
        shutil.copytree(Path(appimg.__file__).parent, staging / "src" / "appimg")
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        staging.rename(target)
    return ["/usr/bin/env", f"PYTHONPATH={target}/src:{target}/site", "/usr/bin/python3"]


def spawn_as(user: pwd.struct_passwd, argv: list[str], env: dict[str, str],
             **kwargs: object) -> subprocess.Popen:  # fmt: skip
    """Start a daemon as ``user`` (output discarded unless asked for); :func:`stop` it."""
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
               "--", *argv]  # fmt: skip
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(command, env=env, **kwargs)  # type: ignore[call-overload]


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 10.0) -> None:
    """Wait until a daemon made ``path`` (its socket); fail if it exits first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"{proc.args} exited early"
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a daemon started by :func:`spawn_as`, killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
