"""The mount's server process (spec/overlay-rules.md §8, "Mounts").

:func:`spawn` forks a daemon (no second interpreter start) and waits on a
pipe until it reports the mount ready. The daemon closes every inherited
descriptor but the image's and the pipe's, logs to ``NAME.log`` next to the
mount's record, writes the record once the mount is ready, and then either
serves the FUSE mount (:func:`serve_fuse`) or, for a kernel mount, only
watches its references. Unless the mount is persistent, a reference watcher
ends it when the last reference is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any

from appimg.errors import AppimgError, ToolError, UsageError
from appimg.format.image import Image
from appimg.host.dirs import UserDirs
from appimg.host.rules import Rule
from appimg.services.mount import state
from appimg.services.mount.log import log, set_up_with
from appimg.services.mount.state import MountInfo, MountStatus
from appimg.services.mount.table import remove_default_place

#: How long a new mount may take to become ready.
READY_TIMEOUT = 30.0
#: How often a reference-counted mount's server checks whether references are left.
WATCH_INTERVAL = 0.05
#: Entry and attribute timeout when host paths take part in the view.
HOST_TTL = 1.0

#: Set in the server once its reference watcher holds the mount's lock for good.
_WATCHER_HOLDS_LOCK = threading.Event()

#: Daemons forked by this process, reaped when they have exited (no zombies piling up).
_CHILDREN: set[int] = set()


# -- starting the daemon --------------------------------------------------------------------


def _reap() -> None:
    for pid in list(_CHILDREN):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _CHILDREN.discard(pid)


def spawn(dirs: UserDirs, info: MountInfo, role: str, image: Image | None) -> MountInfo:
    """Fork the daemon and wait until it reports the mount ready.

    ``role`` is "fuse" (serve ``image`` at ``info.mountpoint``) or "kernel-watch"
    (unmount the kernel mount once its last reference is gone). One fork (about
    5 ms less than the classic double fork): the daemon starts its own session,
    and this process reaps it once it has exited. The daemon serves the
    ``image`` this process opened and checked (no second open).
    """
    _reap()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setsid()  # no signals from the caller's terminal
            code = _daemon_main(dirs, info, role, write_end, image)
        except BaseException as exc:
            # Our own errors are written for the user; anything else names its class.
            error = str(exc) if isinstance(exc, AppimgError) else f"{type(exc).__name__}: {exc}"
            _report(write_end, {"ok": False, "error": error})
        finally:
            os._exit(code)
    _CHILDREN.add(pid)
    os.close(write_end)
    message = _await_ready(read_end, READY_TIMEOUT)
    if not message.get("ok"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        error = message.get("error") or "the mount server gave no reason"
        raise ToolError(f"cannot mount {info.image} at {info.mountpoint}: {error}")
    ready = state.read(dirs, info.name)
    if ready is None:
        raise ToolError(f"{info.name}: the mount server wrote no record")
    ready.status = MountStatus.MOUNTED
    return ready


# -- the readiness pipe: one JSON object a line, the last "ok" one decides ------------------


def _await_ready(fd: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"ok": False, "error": f"not ready after {timeout:.0f} s"}
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    last = {"ok": False, "error": "the mount server exited before the mount was ready"}
    for line in data.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                last = {**last, **message} if "ok" not in message else message
    return last


def _report(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(message) + "\n").encode())


# -- in the daemon --------------------------------------------------------------------------


def _daemonize_fds(keep: set[int], log_file: Path) -> None:
    """stdin from /dev/null, stdout/stderr to the log, every other inherited fd but
    ``keep`` closed (an inherited reference or pipe must not live on in the server)."""
    # The parent's objects, some owning the fds closed below, are never collected here:
    # finalizing one would close whatever fd has that number by then.
    gc.freeze()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    logfd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)
    try:
        top = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        top = 65536
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, min(top, 1 << 20))


def _image_fds(image: Image) -> set[int]:
    """The descriptors open on the image file (to keep across _daemonize_fds)."""
    try:
        want = os.stat(image.path)
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return set()
    found = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                found.add(fd)
    return found


def setup_logging() -> None:
    """The server's log lines: time, process, message, on stderr (the log file)."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s appimg-mount[%(process)d]: %(message)s"))
    root = logging.getLogger("appimg")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _daemon_main(
    dirs: UserDirs, info: MountInfo, role: str, ready_fd: int, image: Image | None
) -> int:
    """The daemon: serve the FUSE mount, or watch a kernel mount's references."""
    keep = {ready_fd} | (_image_fds(image) if image is not None else set())
    _daemonize_fds(keep, state.log_path(dirs, info.name))
    set_up_with(setup_logging)  # logging is loaded with the first line, after the mount is ready
    _report(ready_fd, {"pid": os.getpid()})
    info.pid = os.getpid()
    info.pid_start = state.start_time(info.pid)
    if role == "kernel-watch":
        state.write(dirs, info)
        _report(ready_fd, {"ok": True, "pid": info.pid})
        os.close(ready_fd)
        _watch_references(dirs, info.name, on_last=None)
        from appimg.services.mount import kernel

        log.info("%s: last reference released, unmounting", info.name)
        with contextlib.suppress(AppimgError):
            kernel.unmount(info.kernel, info.mountpoint, lazy=True)
        state.remove(dirs, info.name)
        return 0
    return serve_fuse(dirs, info, image, ready_fd=ready_fd)


def serve_fuse(
    dirs: UserDirs,
    info: MountInfo,
    image: Image | None = None,
    *,
    ready_fd: int | None = None,
    on_ready: Any = None,
    debug: bool = False,
) -> int:
    """Serve ``image`` (opened and checked by the caller; else opened again and checked
    to be the approved one) at ``info.mountpoint`` until unmounted (blocks)."""
    from appimg.services.mount.frontend import serve
    from appimg.services.view import View

    if image is None:
        image = Image.open(info.image)
    if image.verity.root_hash.hex() != info.root_hash:
        raise UsageError(f"{info.image} changed while it was being mounted")
    rules = tuple(Rule.from_json(r) for r in info.rules if r.get("status") == "granted")
    view = View(image.payload, rules, host_ttl=HOST_TTL)

    was_ready = threading.Event()

    def ready() -> None:
        # Runs in libfuse's init callback: the kernel holds every request to the mount
        # until it returns, so the rest (a first log line loads logging) runs after.
        was_ready.set()
        state.write(dirs, info)
        if ready_fd is not None:
            _report(ready_fd, {"ok": True, "pid": info.pid})
            os.close(ready_fd)
        if on_ready is not None:
            on_ready()
        threading.Thread(target=serving, daemon=True).start()

    def serving() -> None:
        log.info("%s: serving %s at %s", info.name, info.image, info.mountpoint)
        if not info.persistent:
            _watch_references(dirs, info.name, threading.main_thread().ident)

    info.pid = os.getpid()
    info.pid_start = state.start_time(info.pid)
    try:
        ops = serve(view, info.mountpoint, label=info.name, on_ready=ready, debug=debug)
    except RuntimeError as exc:
        if was_ready.is_set():
            # libfuse reports a session ended by a signal (SIGTERM, SIGINT) as an error.
            log.info("%s: unmounted (%s)", info.name, exc)
            return 0
        if ready_fd is not None:
            _report(ready_fd, {"ok": False, "error": _last_log_line(dirs, info.name) or str(exc)})
        reason = _last_log_line(dirs, info.name) or str(exc)
        raise ToolError(f"FUSE mount failed: {reason}{fuse_hint(reason)}") from None
    finally:
        record = state.read(dirs, info.name)
        if record is not None and record.pid == os.getpid():
            state.remove(dirs, info.name)
        if _WATCHER_HOLDS_LOCK.is_set():
            remove_default_place(dirs, info.mountpoint)
    if ops.failures:
        log.info("%s: unmounted; %d request(s) failed with EIO", info.name, ops.failures)
    else:
        log.info("%s: unmounted", info.name)
    return 0


#: What to do about libfuse's and fusermount3's usual refusals: (words in the message, hint).
_FUSE_HINTS = (
    ("no write access to mountpoint", "choose a mount point you own, or leave it out"),
    ("/dev/fuse", "/dev/fuse must be readable and writable by you (mode 0666, as desktop "
                  "distributions set it); as root, --backend kernel needs no FUSE"),
    ("Operation not permitted", "fusermount3 must be installed setuid root (package fuse3); "
                                "in a container, FUSE may not be allowed"),
)  # fmt: skip


def fuse_hint(reason: str) -> str:
    """`` (what to do)`` for a FUSE mount failure the user can fix, else ""."""
    for words, hint in _FUSE_HINTS:
        if words in reason:
            return f" ({hint})"
    return ""


def _last_log_line(dirs: UserDirs, name: str) -> str:
    try:
        lines = state.log_path(dirs, name).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip() and "invalid max threads" not in line:
            return line.strip()
    return ""


def _watch_references(dirs: UserDirs, name: str, on_last: int | None) -> None:
    """Return (after signalling thread ``on_last``) once no reference to ``name`` has been
    left for the record's grace period and the record is not persistent. Keeps the
    exclusive lock until the process exits, so that a new user waits for this mount to
    be gone and then makes a fresh one."""
    fd = state.open_lock(dirs, name)
    idle_since: float | None = None  # when the last reference was found gone
    while True:
        time.sleep(WATCH_INTERVAL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            idle_since = None  # in use (again)
            continue
        record = state.read(dirs, name)
        if record is not None and record.persistent:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return  # `appimg mount` made it persistent: it stays until `appimg umount`
        grace = record.grace if record is not None else 0.0
        now = time.time()  # wall clock: compared with the lock file's time
        idle_since = now if idle_since is None else idle_since
        # Each run touches the lock file as it lets go (manager.release): a run that
        # began and ended between two polls restarts the grace period as well.
        with contextlib.suppress(OSError):
            idle_since = max(idle_since, os.fstat(fd).st_mtime)
        if now - idle_since < grace:
            # Within the grace period: a new user may take a reference and reuse the mount.
            fcntl.flock(fd, fcntl.LOCK_UN)
            continue
        break
    # Held until this process exits: no new user can start a mount at our mount point
    # before we have removed it.
    _WATCHER_HOLDS_LOCK.set()
    if on_last is not None:
        log.info("%s: last reference released, unmounting", name)
        # libfuse's handler ends the session loop in the main thread and unmounts.
        signal.pthread_kill(on_last, signal.SIGTERM)
