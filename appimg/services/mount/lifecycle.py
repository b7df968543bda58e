"""The live mount of a name: its status, reuse and creation (spec/overlay-rules.md §8).

A mount's name fixes its record and lock (:mod:`.state`) and, by default, its
mount point (:func:`placement`). :func:`refresh` derives a record's
:class:`~.state.MountStatus` from the mount table and the server process;
:func:`reusable` says whether a recorded mount can serve a new caller (and
clears one that cannot); :func:`create` mounts a :class:`~.prepare.Prepared`
image with the chosen backend, through the daemon (:mod:`.daemon`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from appimg.digests import sha256
from appimg.errors import UsageError
from appimg.host.dirs import UserDirs
from appimg.services.mount import state
from appimg.services.mount.prepare import Prepared, choose_backend
from appimg.services.mount.state import MountInfo, MountStatus
from appimg.services.mount.table import detach_stale, is_mountpoint, mount_root, ready_place


def refresh(dirs: UserDirs, info: MountInfo, *, count: bool = True) -> MountInfo:
    """Fill ``status`` (and, if ``count``, ``references``) from the live system."""
    mounted = is_mountpoint(info.mountpoint)
    running = state.alive(info.pid, info.pid_start)
    if info.backend == "kernel":
        info.status = MountStatus.MOUNTED if mounted else MountStatus.GONE
    elif mounted and running:
        info.status = MountStatus.MOUNTED
    elif running:
        info.status = MountStatus.DETACHED
    elif mounted:
        info.status = MountStatus.DEAD
    else:
        info.status = MountStatus.GONE
    if count:
        info.references = state.references(dirs, info.name)
    return info


def placement(
    prep: Prepared, dirs: UserDirs, mountpoint: str | os.PathLike[str] | None
) -> tuple[str, Path]:
    """The mount's name and mount point: $XDG_RUNTIME_DIR/appimg/NAME by default."""
    if mountpoint is None:
        return prep.name, mount_root(dirs) / prep.name
    where = Path(os.path.abspath(mountpoint))
    return f"{prep.name}@{sha256(os.fsencode(where)).hexdigest()[:8]}", where


def reusable(dirs: UserDirs, name: str, backend: str) -> MountInfo | None:
    """The live mount of ``name`` if ``backend`` may serve it; a stale one is cleared.

    Called under the name's ``.create`` lock."""
    info = state.read(dirs, name)
    if info is None:
        return None
    refresh(dirs, info, count=False)
    if info.status == MountStatus.MOUNTED and backend in ("auto", info.backend):
        return info
    if info.status == MountStatus.MOUNTED:
        raise UsageError(
            f"{info.mountpoint} is already mounted with the {info.backend} backend "
            f"(appimg umount {info.mountpoint} first)"
        )
    if info.status == MountStatus.DEAD:
        detach_stale(info.mountpoint)
    state.remove(dirs, name)
    return None


def backend_warnings(info: MountInfo) -> list[str]:
    """What a caller must hear about how the mount verifies reads."""
    if info.backend == "kernel" and "dm-verity" not in info.verity:
        return [f"{info.mountpoint}: verity is not enforced by the kernel ({info.verity})"]
    return []


def new_info(prep: Prepared, name: str, where: Path, backend: str, persistent: bool,
             grace: float = 0.0) -> MountInfo:  # fmt: skip
    """The record of a mount about to be made (no server yet)."""
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
        grace=grace,
    )
    return info


def create(
    prep: Prepared,
    dirs: UserDirs,
    name: str,
    where: Path,
    default_place: bool,
    requested: str,
    persistent: bool,
    grace: float = 0.0,
) -> MountInfo:
    """Mount ``prep`` at ``where`` with the backend :func:`choose_backend` picks; the
    ready mount. Called under the name's ``.create`` lock."""
    ready_place(where, default_place)
    backend, _why = choose_backend(prep, requested)
    info = new_info(prep, name, where, backend, persistent, grace)
    if backend == "kernel":
        return _create_kernel(prep, dirs, info)
    # Loaded before the fork: a process that mounts again (appimg run) pays for it once,
    # and the server starts with the payload's superblock and tables already read.
    from appimg.services import view  # noqa: F401
    from appimg.services.mount import frontend

    frontend.preload()
    from appimg.services.mount.daemon import spawn  # not at import: a reuse needs no server

    prep.image.payload  # noqa: B018 - a cached property: reads the superblock and tables
    return spawn(dirs, info, "fuse", prep.image)


def _create_kernel(prep: Prepared, dirs: UserDirs, info: MountInfo) -> MountInfo:
    from appimg.services.mount import kernel
    from appimg.services.view import View

    view = View(prep.image.payload, prep.rules)
    workdir = mount_root(dirs) / "kernel" / info.name
    info.kernel = kernel.mount(
        prep.image, info.name, Path(info.mountpoint), view, prep.rules, workdir
    )
    info.verity = info.kernel.get("verity", info.verity)
    info.warnings += backend_warnings(info)
    if info.persistent:
        state.write(dirs, info)
        info.status = MountStatus.MOUNTED
        return info
    try:
        # Someone has to unmount when the last reference goes: a small watcher process.
        from appimg.services.mount.daemon import spawn

        return spawn(dirs, info, "kernel-watch", None)
    except BaseException:
        kernel.unmount(info.kernel, info.mountpoint, lazy=True)
        state.remove(dirs, info.name)
        raise
