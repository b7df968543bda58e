"""Mounting images: trust, host rules, backends, references (spec/overlay-rules.md §7-§8).

The library API that ``appimg mount`` and ``appimg run`` share:

* :func:`mount_image` opens and checks an image, decides trust and host rules,
  and returns a :class:`MountInfo` for a ready mount: a new one, or the live
  mount of the same image with the same view (reused). Unless ``persistent``,
  the caller holds a *reference* (``info.reference``, an fd with a shared
  flock); the mount goes away after :func:`release` of the last reference, or
  when the last referencing process dies, even by SIGKILL.
* :func:`release`, :func:`unmount`, :func:`list_mounts`, :func:`find_mounts`.

The FUSE server runs in a daemon process (fork: no second interpreter start),
which writes the mount's record and then reports readiness through a pipe;
its log goes to ``NAME.log`` next to the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appimg.errors import AppimgError, PolicyError, ToolError, UsageError
from appimg.format.image import Image
from appimg.host.app_rules import host_rules
from appimg.host.dirs import UserDirs, runtime_dir
from appimg.host.rules import Resolution, Rule
from appimg.host.trust import decide
from appimg.services.mount import state
from appimg.services.mount.state import MountInfo

log = logging.getLogger("appimg.services.mount")

BACKENDS = ("auto", "fuse", "kernel")
#: How long a new mount may take to become ready.
READY_TIMEOUT = 30.0
#: How often a reference-counted mount's server checks whether references are left.
WATCH_INTERVAL = 0.05
#: Entry and attribute timeout when host paths take part in the view.
HOST_TTL = 1.0


@dataclass
class Prepared:
    """An opened, checked image and what its mount will show."""

    image: Image
    root_hash: str
    resolution: Resolution
    warnings: list[str]
    name: str  # the mount's default name: <app id>-<root hash prefix>[-<view fingerprint>]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.resolution.granted


# -- preparing ------------------------------------------------------------------------------


def check_trust(image: Image, env: Mapping[str, str], allow_untrusted: bool) -> list[str]:
    """The trust rule (:func:`appimg.host.trust.decide`) for a mount: unsigned images
    mount with a warning, untrusted ones only with ``allow_untrusted``. Returns warnings."""
    verdict = decide(image, UserDirs.from_env(env), allow_unsigned=True,
                     allow_untrusted=allow_untrusted)  # fmt: skip
    return [verdict.warning] if verdict.warning else []


def prepare(
    path: str | os.PathLike[str],
    env: Mapping[str, str],
    *,
    strict: bool = False,
    allow_untrusted: bool = False,
    no_host: bool = False,
) -> Prepared:
    """Open the image and decide everything about its mount, without mounting."""
    image = Image.open(path)
    try:
        warnings = check_trust(image, env, allow_untrusted)
        resolution = host_rules(image.manifest, UserDirs.from_env(env), no_host=no_host)
        refusals = resolution.refusals()
        if strict and refusals:
            raise PolicyError(f"--strict: {'; '.join(refusals)}")
        warnings += resolution.notices()
        root = image.verity.root_hash.hex()
        name = f"{image.manifest['id']}-{root[:12]}"
        if resolution.granted:
            name += f"-{resolution.fingerprint()[:8]}"
        return Prepared(image, root, resolution, warnings, name)
    except BaseException:
        image.close()
        raise


# -- mount points and the mount table ---------------------------------------------------


def mount_root(env: Mapping[str, str]) -> Path:
    path = runtime_dir(env) / "appimg"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \\ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table() -> dict[str, str]:
    """Mount point -> file system type, from /proc/self/mountinfo."""
    table: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return table
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5:
            table[_unescape(fields[4])] = right.split()[0] if right else ""
    return table


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.path.abspath(path) in mount_table()


def _fusermount() -> str:
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolError("fusermount3 is not installed (package fuse3)")


def _detach_stale(mountpoint: str) -> None:
    """Remove a dead FUSE mount (its server is gone: "Transport endpoint is not connected")."""
    with contextlib.suppress(ToolError, OSError):
        subprocess.run([_fusermount(), "-u", "-z", mountpoint], capture_output=True, timeout=30)
    if is_mountpoint(mountpoint) and os.geteuid() == 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, timeout=30)


# -- the live mount of a name -------------------------------------------------------------


def _refresh(env: Mapping[str, str], info: MountInfo, *, count: bool = True) -> MountInfo:
    """Fill ``status`` (and, if ``count``, ``references``) from the live system."""
    mounted = is_mountpoint(info.mountpoint)
    running = state.alive(info.pid, info.pid_start)
    if info.backend == "kernel":
        info.status = "mounted" if mounted else "gone"
    elif mounted and running:
        info.status = "mounted"
    elif running:
        info.status = "detached"  # lazily unmounted, still serving open files
    elif mounted:
        info.status = "dead"  # the server died: the mount point answers ENOTCONN
    else:
        info.status = "gone"
    if count:
        info.references = state.references(env, info.name)
    return info


def list_mounts(env: Mapping[str, str]) -> list[MountInfo]:
    """Every recorded mount with its status; records of mounts that are gone are removed."""
    found = []
    for name in state.names(env):
        info = state.read(env, name)
        if info is None:
            continue
        _refresh(env, info)
        if info.status == "gone":
            state.remove(env, name)
            continue
        found.append(info)
    return found


def find_mounts(target: str, env: Mapping[str, str]) -> list[MountInfo]:
    """Mounts named by ``target``: a mount point, an image file, a mount name or an app id."""
    mounts = list_mounts(env)
    path = Path(target)
    if path.is_dir() or is_mountpoint(target):
        wanted = os.path.abspath(target)
        return [m for m in mounts if os.path.abspath(m.mountpoint) == wanted]
    if path.is_file():
        with Image.open(path) as image:
            root = image.verity.root_hash.hex()
        return [m for m in mounts if m.root_hash == root]
    return [m for m in mounts if target in (m.name, m.app_id)]


# -- mounting ---------------------------------------------------------------------------


def mount_image(
    path: str | os.PathLike[str],
    env: Mapping[str, str],
    *,
    mountpoint: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    strict: bool = False,
    allow_untrusted: bool = False,
    no_host: bool = False,
    persistent: bool = False,
) -> MountInfo:
    """Mount ``path`` read-only and return the ready mount (see the module docstring).

    With the default mount point, a live mount of the same image, view and a
    compatible backend is reused (``info.reused``). Unless ``persistent``,
    ``info.reference`` is the caller's reference: keep it open while using the
    mount and :func:`release` it after. It is close-on-exec; a forked child
    shares it, and a program that should keep the mount alive by itself can be
    handed an inheritable duplicate (``os.dup``). Warnings (unsigned image,
    denied host rules, unverified kernel mount) are in ``info.warnings``.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    prep = prepare(path, env, strict=strict, allow_untrusted=allow_untrusted, no_host=no_host)
    try:
        return _mount_prepared(prep, env, mountpoint, backend, persistent)
    finally:
        prep.image.close()


def _mount_prepared(
    prep: Prepared,
    env: Mapping[str, str],
    mountpoint: str | os.PathLike[str] | None,
    backend: str,
    persistent: bool,
) -> MountInfo:
    name, where = _placement(prep, env, mountpoint)
    reference = state.take_reference(env, name)
    try:
        with state.exclusive(state.state_dir(env) / f"{name}.create"):
            info = _reusable(env, name, backend)
            if info is not None:
                if persistent and not info.persistent:
                    info.persistent = True
                    state.write(env, info)
                # What this caller must hear: its own checks, and how the mount verifies.
                info.warnings = prep.warnings + _backend_warnings(info)
                info.reused = True
            else:
                info = _create(prep, env, name, where, mountpoint is None, backend, persistent)
    except BaseException:
        os.close(reference)
        raise
    if persistent:
        os.close(reference)
    else:
        info.reference = reference
    return info


def release(info: MountInfo) -> None:
    """Drop this process's reference to the mount (idempotent)."""
    fd = info.reference
    if fd is not None:
        info.reference = None
        with contextlib.suppress(OSError):
            os.close(fd)


def release_and_unmount_if_last(info: MountInfo, env: Mapping[str, str]) -> None:
    """Drop our reference; if it was the last one, unmount now instead of waiting for
    the server to notice (it polls every WATCH_INTERVAL). Returns once the mount is
    gone, or at once if other references remain or the mount is persistent."""
    release(info)
    if info.persistent or info.backend != "fuse":
        return
    fd = state.open_lock(env, info.name)
    try:
        try:
            # Exclusive only while no reference is held; new users wait for us meanwhile.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # someone else still uses the mount
        record = state.read(env, info.name)
        if record is None or record.persistent or record.pid != info.pid:
            return
        if is_mountpoint(info.mountpoint):
            subprocess.run([_fusermount(), "-u", info.mountpoint], capture_output=True,
                           timeout=30)  # fmt: skip
        _remove_default_place(env, info.mountpoint)  # still under the lock: no one waits
    finally:
        os.close(fd)


@contextlib.contextmanager
def mounted(
    path: str | os.PathLike[str], env: Mapping[str, str], **options: Any
) -> Iterator[MountInfo]:
    """``with mounted(image, env) as info: ...``: a referenced mount for the block."""
    info = mount_image(path, env, **options)
    try:
        yield info
    finally:
        release(info)


def _reusable(env: Mapping[str, str], name: str, backend: str) -> MountInfo | None:
    info = state.read(env, name)
    if info is None:
        return None
    _refresh(env, info, count=False)
    if info.status == "mounted" and backend in ("auto", info.backend):
        return info
    if info.status == "mounted":
        raise UsageError(
            f"{info.mountpoint} is already mounted with the {info.backend} backend "
            f"(appimg umount {info.mountpoint} first)"
        )
    if info.status == "dead":
        _detach_stale(info.mountpoint)
    state.remove(env, name)
    return None


def choose_backend(prep: Prepared, requested: str) -> tuple[str, str]:
    """The backend to use and why."""
    if requested == "fuse":
        return "fuse", "requested"
    from appimg.services.mount import kernel

    why_not = kernel.unavailable()
    from appimg.services.view import View

    if requested == "kernel":
        if why_not:
            raise UsageError(f"--backend kernel: the kernel backend {why_not}")
        reason = kernel.describe_plan(View(prep.image.payload, prep.rules), prep.rules)
        if reason:
            raise kernel.Unsupported(
                f"--backend kernel cannot show this view exactly: {reason} (use --backend fuse)"
            )
        return "kernel", "requested"
    if why_not:
        return "fuse", f"kernel backend: {why_not}"
    if not kernel.dm_verity_available():
        return "fuse", "kernel backend: no device-mapper, the kernel could not verify reads"
    reason = kernel.describe_plan(View(prep.image.payload, prep.rules), prep.rules)
    if reason:
        return "fuse", f"kernel backend cannot show this view: {reason}"
    return "kernel", "privileged caller with dm-verity"


#: Set in the server once its reference watcher holds the mount's lock for good.
_WATCHER_HOLDS_LOCK = threading.Event()


def _remove_default_place(env: Mapping[str, str], mountpoint: str) -> None:
    """Remove a mount point we created under the mount root, once nothing is mounted
    there (an empty directory only: rmdir fails on anything else, which is fine)."""
    if Path(mountpoint).parent == mount_root(env) and not is_mountpoint(mountpoint):
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def _ready_place(where: Path, default_place: bool) -> None:
    if default_place:
        if is_mountpoint(where):
            _detach_stale(str(where))
        where.mkdir(mode=0o700, exist_ok=True)
    elif not where.is_dir():
        raise UsageError(f"{where}: mount point must be an existing directory")
    elif is_mountpoint(where):
        raise UsageError(f"{where}: something is already mounted there")


def _create(
    prep: Prepared,
    env: Mapping[str, str],
    name: str,
    where: Path,
    default_place: bool,
    requested: str,
    persistent: bool,
) -> MountInfo:
    _ready_place(where, default_place)
    backend, _why = choose_backend(prep, requested)
    info = _new_info(prep, name, where, backend, persistent)
    if backend == "kernel":
        return _create_kernel(prep, env, info)
    # Loaded before the fork: a process that mounts again (appimg run) pays for it once,
    # and the server starts with the payload's superblock and tables already read.
    from appimg.services import view  # noqa: F401
    from appimg.services.mount import fuse_ops  # noqa: F401

    prep.image.payload  # noqa: B018 - a cached property: reads the superblock and tables
    return _spawn(env, info, "fuse", prep.image)


def _new_info(prep: Prepared, name: str, where: Path, backend: str, persistent: bool) -> MountInfo:
    image = prep.image
    manifest = image.manifest
    info = MountInfo(
        name=name,
        mountpoint=str(where),
        image=str(Path(image.path).resolve()),
        app_id=manifest["id"],
        version=manifest["version"],
        root_hash=prep.root_hash,
        backend=backend,
        pid=None,
        verity="every block read is checked against the verity tree (user space)",
        persistent=persistent,
        created=time.time(),
        fingerprint=prep.resolution.fingerprint(),
        rules=[d.to_json() for d in prep.resolution.decisions],
        warnings=list(prep.warnings),
    )
    return info


def _placement(
    prep: Prepared, env: Mapping[str, str], mountpoint: str | os.PathLike[str] | None
) -> tuple[str, Path]:
    """The mount's name and mount point: $XDG_RUNTIME_DIR/appimg/NAME by default."""
    if mountpoint is None:
        return prep.name, mount_root(env) / prep.name
    where = Path(os.path.abspath(mountpoint))
    return f"{prep.name}@{hashlib.sha256(os.fsencode(where)).hexdigest()[:8]}", where


def mount_foreground(
    path: str | os.PathLike[str],
    env: Mapping[str, str],
    *,
    mountpoint: str | os.PathLike[str] | None = None,
    strict: bool = False,
    allow_untrusted: bool = False,
    no_host: bool = False,
    debug: bool = False,
    on_ready: Any = None,
) -> int:
    """Serve a FUSE mount in this process until it is unmounted (or Ctrl-C)."""
    prep = prepare(path, env, strict=strict, allow_untrusted=allow_untrusted, no_host=no_host)
    try:
        name, where = _placement(prep, env, mountpoint)
        with state.exclusive(state.state_dir(env) / f"{name}.create"):
            if _reusable(env, name, "fuse") is not None:
                raise UsageError(f"{where}: this image is already mounted there")
            _ready_place(where, mountpoint is None)
            info = _new_info(prep, name, where, "fuse", persistent=True)
            info.warnings = list(prep.warnings)
    finally:
        prep.image.close()
    if on_ready is not None:
        callback = on_ready
        on_ready = lambda: callback(info)  # noqa: E731
    _setup_logging()
    return serve_fuse(env, info, on_ready=on_ready, debug=debug)


def _backend_warnings(info: MountInfo) -> list[str]:
    if info.backend == "kernel" and "dm-verity" not in info.verity:
        return [f"{info.mountpoint}: verity is not enforced by the kernel ({info.verity})"]
    return []


def _create_kernel(prep: Prepared, env: Mapping[str, str], info: MountInfo) -> MountInfo:
    from appimg.services.mount import kernel
    from appimg.services.view import View

    view = View(prep.image.payload, prep.rules)
    workdir = mount_root(env) / "kernel" / info.name
    info.kernel = kernel.mount(
        prep.image, info.name, Path(info.mountpoint), view, prep.rules, workdir
    )
    info.verity = info.kernel.get("verity", info.verity)
    info.warnings += _backend_warnings(info)
    if info.persistent:
        state.write(env, info)
        return info
    try:
        # Someone has to unmount when the last reference goes: a small watcher process.
        return _spawn(env, info, "kernel-watch", None)
    except BaseException:
        kernel.unmount(info.kernel, info.mountpoint, lazy=True)
        state.remove(env, info.name)
        raise


# -- the server process ---------------------------------------------------------------------


#: Daemons forked by this process, reaped when they have exited (no zombies piling up).
_CHILDREN: set[int] = set()


def _reap() -> None:
    for pid in list(_CHILDREN):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _CHILDREN.discard(pid)


def _spawn(env: Mapping[str, str], info: MountInfo, role: str, image: Image | None) -> MountInfo:
    """Fork the daemon and wait until it reports the mount ready.

    One fork (about 5 ms less than the classic double fork): the daemon starts
    its own session, and this process reaps it once it has exited. The daemon
    serves the ``image`` this process opened and checked (no second open).
    """
    _reap()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.setsid()  # no signals from the caller's terminal
            code = _daemon_main(env, info, role, write_end, image)
        except BaseException as exc:
            _report(write_end, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
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
    ready = state.read(env, info.name)
    if ready is None:
        raise ToolError(f"{info.name}: the mount server wrote no record")
    ready.status = "mounted"
    return ready


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


def _setup_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s appimg-mount[%(process)d]: %(message)s"))
    root = logging.getLogger("appimg")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _daemon_main(
    env: Mapping[str, str], info: MountInfo, role: str, ready_fd: int, image: Image | None
) -> int:
    """The daemon: serve the FUSE mount, or watch a kernel mount's references."""
    keep = {ready_fd} | (_image_fds(image) if image is not None else set())
    _daemonize_fds(keep, state.log_path(env, info.name))
    _setup_logging()
    _report(ready_fd, {"pid": os.getpid()})
    info.pid = os.getpid()
    info.pid_start = state.start_time(info.pid)
    if role == "kernel-watch":
        state.write(env, info)
        _report(ready_fd, {"ok": True, "pid": info.pid})
        os.close(ready_fd)
        _watch_references(env, info.name, on_last=None)
        from appimg.services.mount import kernel

        log.info("%s: last reference released, unmounting", info.name)
        with contextlib.suppress(AppimgError):
            kernel.unmount(info.kernel, info.mountpoint, lazy=True)
        state.remove(env, info.name)
        return 0
    return serve_fuse(env, info, image, ready_fd=ready_fd)


def serve_fuse(
    env: Mapping[str, str],
    info: MountInfo,
    image: Image | None = None,
    *,
    ready_fd: int | None = None,
    on_ready: Any = None,
    debug: bool = False,
) -> int:
    """Serve ``image`` (opened and checked by the caller; else opened again and checked
    to be the approved one) at ``info.mountpoint`` until unmounted (blocks)."""
    from appimg.services.mount.fuse_ops import serve
    from appimg.services.view import View

    if image is None:
        image = Image.open(info.image)
    if image.verity.root_hash.hex() != info.root_hash:
        raise UsageError(f"{info.image} changed while it was being mounted")
    rules = tuple(Rule.from_json(r) for r in info.rules if r.get("status") == "granted")
    view = View(image.payload, rules, host_ttl=HOST_TTL)

    was_ready = threading.Event()

    def ready() -> None:
        # Runs in a libfuse thread once the kernel completed the FUSE handshake.
        was_ready.set()
        state.write(env, info)
        log.info("%s: serving %s at %s", info.name, info.image, info.mountpoint)
        if ready_fd is not None:
            _report(ready_fd, {"ok": True, "pid": info.pid})
            os.close(ready_fd)
        if on_ready is not None:
            on_ready()
        if not info.persistent:
            main = threading.main_thread().ident
            threading.Thread(
                target=_watch_references, args=(env, info.name, main), daemon=True
            ).start()

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
            _report(ready_fd, {"ok": False, "error": _last_log_line(env, info.name) or str(exc)})
        raise ToolError(f"FUSE mount failed: {_last_log_line(env, info.name) or exc}") from None
    finally:
        record = state.read(env, info.name)
        if record is not None and record.pid == os.getpid():
            state.remove(env, info.name)
        if _WATCHER_HOLDS_LOCK.is_set():
            _remove_default_place(env, info.mountpoint)
    if ops.failures:
        log.info("%s: unmounted; %d request(s) failed with EIO", info.name, ops.failures)
    else:
        log.info("%s: unmounted", info.name)
    return 0


def _last_log_line(env: Mapping[str, str], name: str) -> str:
    try:
        lines = state.log_path(env, name).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip() and "invalid max threads" not in line:
            return line.strip()
    return ""


def _watch_references(env: Mapping[str, str], name: str, on_last: int | None) -> None:
    """Return (after signalling thread ``on_last``) once no reference to ``name`` is left
    and the record is not persistent. Keeps the exclusive lock until the process exits,
    so that a new user waits for this mount to be gone and then makes a fresh one."""
    fd = state.open_lock(env, name)
    while True:
        time.sleep(WATCH_INTERVAL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        record = state.read(env, name)
        if record is not None and record.persistent:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return  # `appimg mount` made it persistent: it stays until `appimg umount`
        break
    # Held until this process exits: no new user can start a mount at our mount point
    # before we have removed it.
    _WATCHER_HOLDS_LOCK.set()
    if on_last is not None:
        log.info("%s: last reference released, unmounting", name)
        # libfuse's handler ends the session loop in the main thread and unmounts.
        signal.pthread_kill(on_last, signal.SIGTERM)


# -- unmounting -----------------------------------------------------------------------------


def unmount(info: MountInfo, env: Mapping[str, str], *, lazy: bool = False) -> None:
    """Unmount one mount; UsageError with a clear message if it is busy."""
    from appimg.services.mount import kernel

    _refresh(env, info, count=False)
    if info.backend == "kernel":
        kernel.unmount(info.kernel, info.mountpoint, lazy=lazy)
        if info.pid and state.alive(info.pid, info.pid_start):
            with contextlib.suppress(OSError):
                os.kill(info.pid, signal.SIGTERM)
        state.remove(env, info.name)
        return
    if info.status in ("mounted", "dead"):
        argv = [_fusermount(), "-u"] + (["-z"] if lazy or info.status == "dead" else [])
        proc = subprocess.run([*argv, info.mountpoint], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 and is_mountpoint(info.mountpoint):
            if "busy" in proc.stderr.lower():
                raise UsageError(
                    f"{info.mountpoint} is busy: a program has a file open or its working "
                    "directory there; close it, or use --lazy to detach the mount now "
                    "(it goes away when the last user is done)"
                )
            detail = proc.stderr.strip().splitlines()
            raise ToolError(f"cannot unmount {info.mountpoint}: {detail[-1] if detail else ''}")
    if lazy:
        return  # the server exits (and removes the record) when the last user is done
    deadline = time.monotonic() + 5
    while state.alive(info.pid, info.pid_start) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not state.alive(info.pid, info.pid_start):
        state.remove(env, info.name)
    _remove_default_place(env, info.mountpoint)
