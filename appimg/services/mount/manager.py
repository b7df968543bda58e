"""Mounting images: the library API (spec/overlay-rules.md §7-§8).

What ``appimg mount`` and ``appimg run`` share:

* :func:`mount_image` opens and checks an image, decides trust and host rules
  (:mod:`.prepare`), and returns a :class:`MountInfo` for a ready mount: a new
  one, or the live mount of the same image with the same view (reused).
  Unless ``persistent``, the caller holds a *reference* (``info.reference``,
  an fd with a shared flock); the mount goes away after :func:`release` of the
  last reference, or when the last referencing process dies, even by SIGKILL.
* :func:`mounted` (a referenced mount for a ``with`` block), :func:`release`,
  :func:`list_mounts`,
  :func:`find_mounts`, :func:`unmount`, and :func:`mount_foreground` (serve
  in this process).

Every function takes the user's directories (:class:`UserDirs`) once: the
records, references and default mount points live under ``dirs.runtime``.

A mount may have a *grace period* (``grace``, :func:`grace_period`): it then
outlives its last reference by that many seconds, so that ``appimg run`` of
the same app again within it reuses the mount (a warm launch). Its server
still ends it by itself, also when every user was killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.errors import ToolError, UsageError
from appimg.format.image import Image
from appimg.host.dirs import UserDirs
from appimg.services.mount import lifecycle, state
from appimg.services.mount.prepare import BACKENDS, Prepared, prepare
from appimg.services.mount.state import MountInfo, MountStatus
from appimg.services.mount.table import (
    fusermount,
    is_mountpoint,
    ready_place,
    remove_default_place,
)

if TYPE_CHECKING:
    from appimg.host.trust import Verdict

#: Seconds a mount made by ``appimg run`` outlives its last run by default: none
#: (spec/run.md, "The mount": released within two seconds), until launches are
#: measured to need it; ``$APPIMG_MOUNT_GRACE`` opts in.
DEFAULT_GRACE = 0.0
#: The environment variable that sets it (seconds; 0 turns the grace period off).
GRACE_VARIABLE = "APPIMG_MOUNT_GRACE"

# -- mounting -------------------------------------------------------------------------------


def grace_period(env: Mapping[str, str]) -> float:
    """The grace period ``appimg run`` asks for: ``$APPIMG_MOUNT_GRACE`` or the default."""
    value = env.get(GRACE_VARIABLE, "").strip()
    if not value:
        return DEFAULT_GRACE
    try:
        grace = float(value)
    except ValueError:
        grace = -1.0
    if not 0 <= grace <= 3600:
        raise UsageError(f"{GRACE_VARIABLE}={value!r}: expected seconds from 0 to 3600")
    return grace


def mount_image(
    path: str | os.PathLike[str],
    dirs: UserDirs,
    *,
    mountpoint: str | os.PathLike[str] | None = None,
    backend: str = "auto",
    strict: bool = False,
    allow_untrusted: bool = False,
    allow_unsigned: bool = False,
    pinned: Collection[str] | None = None,
    no_host: bool = False,
    persistent: bool = False,
    grace: float = 0.0,
    opened: tuple[Image, Verdict] | None = None,
) -> MountInfo:
    """Mount ``path`` read-only and return the ready mount (see the module docstring).

    With the default mount point, a live mount of the same image, view and a
    compatible backend is reused (``info.reused``). Unless ``persistent``,
    ``info.reference`` is the caller's reference: keep it open while using the
    mount and :func:`release` it after. It is close-on-exec; a forked child
    shares it, and a program that should keep the mount alive by itself can be
    handed an inheritable duplicate (``os.dup``). Warnings (unsigned image,
    denied host rules, unverified kernel mount) are in ``info.warnings``.
    ``grace``: seconds the mount outlives its last reference (see the module docstring).
    ``opened``: the image of ``path`` already open and judged (see :func:`.prepare.prepare`);
    it stays the caller's to close.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    prep = prepare(path, dirs, strict=strict, allow_untrusted=allow_untrusted,
                   allow_unsigned=allow_unsigned, pinned=pinned, no_host=no_host,
                   opened=opened)  # fmt: skip
    try:
        return _mount_prepared(prep, dirs, mountpoint, backend, persistent, grace)
    finally:
        if opened is None:
            prep.image.close()


def _mount_prepared(
    prep: Prepared,
    dirs: UserDirs,
    mountpoint: str | os.PathLike[str] | None,
    backend: str,
    persistent: bool,
    grace: float = 0.0,
) -> MountInfo:
    name, where = lifecycle.placement(prep, dirs, mountpoint)
    reference = state.take_reference(dirs, name)
    try:
        with state.exclusive(state.state_dir(dirs) / f"{name}.create"):
            info = lifecycle.reusable(dirs, name, backend)
            if info is not None:
                if (persistent and not info.persistent) or grace > info.grace:
                    info.persistent = info.persistent or persistent
                    info.grace = max(info.grace, grace)
                    state.write(dirs, info)
                # What this caller must hear: its own checks, and how the mount verifies.
                info.warnings = prep.warnings + lifecycle.backend_warnings(info)
                info.reused = True
            else:
                info = lifecycle.create(
                    prep, dirs, name, where, mountpoint is None, backend, persistent, grace
                )
    except BaseException:
        os.close(reference)
        # A failed mount leaves neither its mount point nor its lock and log behind.
        if mountpoint is None:
            remove_default_place(dirs, str(where))
        with contextlib.suppress(OSError):
            state.sweep(dirs, [name])
        raise
    if persistent:
        os.close(reference)
    else:
        info.reference = reference
    return info


@contextlib.contextmanager
def mounted(path: str | os.PathLike[str], dirs: UserDirs, **options: Any) -> Iterator[MountInfo]:
    """``with mounted(image, dirs) as info: ...``: a referenced mount for the block."""
    info = mount_image(path, dirs, **options)
    try:
        yield info
    finally:
        release(info)


def mount_foreground(
    path: str | os.PathLike[str],
    dirs: UserDirs,
    *,
    mountpoint: str | os.PathLike[str] | None = None,
    strict: bool = False,
    allow_untrusted: bool = False,
    allow_unsigned: bool = False,
    pinned: Collection[str] | None = None,
    no_host: bool = False,
    debug: bool = False,
    on_ready: Any = None,
) -> int:
    """Serve a FUSE mount in this process until it is unmounted (or Ctrl-C)."""
    prep = prepare(path, dirs, strict=strict, allow_untrusted=allow_untrusted,
                   allow_unsigned=allow_unsigned, pinned=pinned, no_host=no_host)  # fmt: skip
    try:
        name, where = lifecycle.placement(prep, dirs, mountpoint)
        with state.exclusive(state.state_dir(dirs) / f"{name}.create"):
            if lifecycle.reusable(dirs, name, "fuse") is not None:
                raise UsageError(f"{where}: this image is already mounted there")
            ready_place(where, mountpoint is None)
            info = lifecycle.new_info(prep, name, where, "fuse", persistent=True)
            info.warnings = list(prep.warnings)
    finally:
        prep.image.close()
    if on_ready is not None:
        callback = on_ready
        on_ready = lambda: callback(info)  # noqa: E731
    from appimg.services.mount import daemon

    daemon.setup_logging()
    return daemon.serve_fuse(dirs, info, on_ready=on_ready, debug=debug)


# -- references -----------------------------------------------------------------------------


def release(info: MountInfo) -> None:
    """Drop this process's reference to the mount (idempotent)."""
    fd = info.reference
    if fd is not None:
        info.reference = None
        with contextlib.suppress(OSError):
            # The lock file's time says when the mount was last used: a run shorter
            # than the server's poll interval restarts its grace period too.
            os.utime(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


# -- listing --------------------------------------------------------------------------------


def list_mounts(dirs: UserDirs) -> list[MountInfo]:
    """Every recorded mount with its status; records of mounts that are gone are removed."""
    found = []
    for name in state.names(dirs):
        info = state.read(dirs, name)
        if info is None:
            continue
        lifecycle.refresh(dirs, info)
        if info.status == MountStatus.GONE:
            state.remove(dirs, name)
            continue
        found.append(info)
    state.sweep(dirs)  # the lock and log files of mounts that are gone
    return found


def find_mounts(target: str, dirs: UserDirs) -> list[MountInfo]:
    """Mounts named by ``target``: a mount point, an image file, a mount name or an app id.

    As for ``appimg run``, a target is a path only if it contains ``/`` or ends in
    ``.appimg``: a file planted in the working directory under an app id's name
    must not stand for that app."""
    mounts = list_mounts(dirs)
    path = Path(target)
    if not is_path_argument(target):
        return [m for m in mounts if target in (m.name, m.app_id)]
    if path.is_dir() or is_mountpoint(target):
        wanted = os.path.abspath(target)
        return [m for m in mounts if os.path.abspath(m.mountpoint) == wanted]
    if path.is_file():
        with Image.open(path) as image:
            root = image.verity.root_hash.hex()
        return [m for m in mounts if m.root_hash == root]
    return []


def is_path_argument(target: str) -> bool:
    """Whether a FILE|ID (or MOUNTPOINT|FILE|ID) argument names a path rather than an id."""
    return "/" in target or target.endswith(".appimg")


# -- unmounting -----------------------------------------------------------------------------


def unmount(info: MountInfo, dirs: UserDirs, *, lazy: bool = False) -> None:
    """Unmount one mount; UsageError with a clear message if it is busy."""
    lifecycle.refresh(dirs, info, count=False)
    if info.backend == "kernel":
        from appimg.services.mount import kernel

        kernel.unmount(info.kernel, info.mountpoint, lazy=lazy)
        if info.pid and state.alive(info.pid, info.pid_start):
            with contextlib.suppress(OSError):
                os.kill(info.pid, signal.SIGTERM)
        state.remove(dirs, info.name)
        return
    if info.status in (MountStatus.MOUNTED, MountStatus.DEAD):
        lazily = lazy or info.status == MountStatus.DEAD
        argv = [fusermount(), "-u"] + (["-z"] if lazily else [])
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
        state.remove(dirs, info.name)
    remove_default_place(dirs, info.mountpoint)
