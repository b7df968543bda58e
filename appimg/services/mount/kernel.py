"""The kernel backend for privileged callers (spec/overlay-rules.md §7, "Kernel backend").

The payload partition is attached to a read-only loop device with
``losetup --offset/--sizelimit`` (works without kernel partition-table
support); with device-mapper, the verity partition gets a second loop device
and ``veritysetup open`` maps the payload through dm-verity, so the kernel
checks every block it reads. Without device-mapper the whole payload is
checked once before mounting and the mount is recorded (and reported) as not
kernel-verified. The SquashFS is mounted read-only; host rules become bind
mounts and overlayfs mounts on top, and directories, files and symlinks the app
lacks for them come from a small "skeleton" tmpfs laid over the app with
overlayfs. The view is the same as the FUSE backend's; what overlayfs cannot
express exactly (nested rules, paths the policy hides, entries overlayfs would
read as whiteouts, ...) is refused with the reason (``--backend auto`` then
uses FUSE).

Loop devices are released with ``losetup -d`` right after mounting (the kernel
then frees them on the last unmount) and the dm-verity map is closed deferred,
so nothing leaks if appimg dies; every failure path undoes what was done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from appimg.errors import PolicyError, ToolError, UsageError
from appimg.format.container.partitions import PAYLOAD, VERITY
from appimg.format.image import Image
from appimg.host.rules import Rule
from appimg.services.mount.table import is_mountpoint
from appimg.services.view import APP, HOST, View
from appimg.values import Fields

#: Every mount this backend makes: a setuid file or a device node in a (signed but
#: hostile) payload must not give its powers to whoever runs or opens it. overlayfs
#: and bind mounts do not inherit these flags from the mounts below them.
MOUNT_FLAGS = "nosuid,nodev"

#: Characters that overlayfs' option parser or mount(8) would read specially.
_UNSAFE = (":", ",", "\\", "\n", "=")


class Unsupported(PolicyError):
    """The view cannot be expressed exactly with kernel mounts."""


def unavailable() -> str | None:
    """Why the kernel backend cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root (mounting block devices is privileged)"
    for tool in ("losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control is missing)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "cannot read /proc/filesystems"
    if "squashfs" not in filesystems:
        return "the kernel has no squashfs support"
    return None


def dm_verity_available() -> bool:
    return os.path.exists("/dev/mapper/control") and shutil.which("veritysetup") is not None


class MountPlan(Fields):
    """What to create and mount, derived from the view (the FUSE backend's truth).

    A plain class, not a dataclass: a first launch asks this module whether the
    kernel backend is available, and importing dataclasses costs it ~5 ms.
    """

    __slots__ = ("skeleton", "mounts", "overlaid")  # noqa: RUF023 (repr order)
    _FIELDS = __slots__

    def __init__(self) -> None:
        #: Skeleton entries: (view path, kind "dir"/"file"/"symlink", mode, uid, gid, mtime,
        #: target).
        self.skeleton: list[tuple[str, str, int, int, int, int, str]] = []
        #: Mounts in order: ("bind", at, host path) or ("overlay", at, [lower layer specs]).
        self.mounts: list[tuple[str, str, Any]] = []
        #: Is the whole app tree below an overlay (and so must hold no whiteout lookalikes)?
        self.overlaid = False


def plan(view: View, rules: tuple[Rule, ...]) -> MountPlan:
    """The kernel mounts that show exactly ``view``; Unsupported if there are none."""
    result = MountPlan()
    reader = view.reader
    skeleton: dict[str, tuple[str, str, int, int, int, int, str]] = {}
    for rule in rules:
        for path in (rule.path, rule.at):
            if any(c in path for c in _UNSAFE):
                raise Unsupported(f"{path!r} holds characters mount options cannot carry")
        if rule.hidden:
            raise Unsupported(f"{rule.path}: parts of it are hidden by the host policy")
        if any(o is not rule and rule.at.startswith(o.at.rstrip("/") + "/") for o in rules):
            raise Unsupported(f"{rule.at}: rules nested inside other rules")
        node = view.node(rule.at)
        app = _app_entry(view, rule.at)
        kinds = {s for s, _ in node.layers}
        if node.source == APP and HOST not in kinds:
            continue  # the app's own entry wins: nothing to mount
        if node.kind == "dir":
            layers = []
            for source, handle in node.layers:
                if source == APP:
                    layers.append(("app", rule.at))
                else:
                    layers.append(("host", str(handle)))
            if len(layers) == 1:
                result.mounts.append(("bind", rule.at, layers[0][1]))
            else:
                result.mounts.append(("overlay", rule.at, layers))
                result.overlaid = True
            if app is None or app.kind != "dir":
                skeleton[rule.at] = _synth_entry(view, rule.at, "dir")
        elif node.kind == "file" and node.source == HOST:
            result.mounts.append(("bind", rule.at, str(node.host)))
            if app is None or app.kind != "file":
                skeleton[rule.at] = (rule.at, "file", 0o644, 0, 0, 0, "")
        elif node.kind == "symlink" and node.source == HOST:
            target = view.readlink(node)
            skeleton[rule.at] = (rule.at, "symlink", 0o777, node.uid, node.gid, 0, target)
        else:
            raise Unsupported(f"{rule.at}: a host {node.kind} cannot be mounted")
    if skeleton:
        result.overlaid = True
        for path in list(skeleton):
            parts = [p for p in path.split("/") if p]
            for depth in range(1, len(parts)):
                ancestor = "/" + "/".join(parts[:depth])
                if ancestor in skeleton:
                    continue
                inode = _app_entry(view, ancestor)
                if inode is not None and inode.kind == "dir":
                    skeleton[ancestor] = (ancestor, "dir", stat.S_IMODE(inode.mode), inode.uid,
                                          inode.gid, inode.mtime, "")  # fmt: skip
                else:
                    skeleton[ancestor] = _synth_entry(view, ancestor, "dir")
        result.skeleton = sorted(skeleton.values(), key=lambda e: (e[0].count("/"), e[0]))
    if result.overlaid:
        _check_no_whiteouts(reader)
    return result


def _app_entry(view: View, path: str) -> Any:
    try:
        return view.reader.lookup(path)
    except OSError:
        return None


def _synth_entry(view: View, path: str, kind: str) -> tuple[str, str, int, int, int, int, str]:
    root = view.reader.root
    return (path, kind, 0o755, root.uid, root.gid, root.mtime, "")


def _check_no_whiteouts(reader: Any) -> None:
    """overlayfs reads a 0:0 character device as a whiteout and trusted/user.overlay.*
    xattrs as its own metadata; the FUSE view shows them as they are."""
    from appimg.format.squashfs.structs import INVALID_U64

    has_xattrs = reader.superblock.xattr_id_table_start != INVALID_U64
    for path, inode in reader.walk():
        if inode.kind == "char" and inode.rdev == 0:
            raise Unsupported(f"{path}: a 0:0 device node, which overlayfs reads as a whiteout")
        if has_xattrs and any(".overlay." in key for key in reader.xattrs(inode)):
            raise Unsupported(f"{path}: carries overlayfs xattrs")


# -- running the tools ------------------------------------------------------------------


def _run(argv: list[str], *, pass_fds: tuple[int, ...] = ()) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, pass_fds=pass_fds, timeout=60)
    except FileNotFoundError:
        raise ToolError(f"{argv[0]} is not installed") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ToolError(f"{' '.join(argv[:2])}: {detail}")
    return proc.stdout.strip()


class _Undo:
    """Cleanup steps, run in reverse on failure."""

    def __init__(self) -> None:
        self.steps: list[list[str]] = []

    def push(self, argv: list[str]) -> None:
        self.steps.append(argv)

    def run(self) -> None:
        for argv in reversed(self.steps):
            with contextlib.suppress(Exception):
                subprocess.run(argv, capture_output=True, timeout=60)
        self.steps.clear()


def _loop(image: Path, offset: int, size: int, undo: _Undo) -> str:
    dev = _run(["losetup", "--find", "--show", "--read-only", "--offset", str(offset),
                "--sizelimit", str(size), str(image)])  # fmt: skip
    undo.push(["losetup", "-d", dev])
    return dev


def mount(
    image: Image, name: str, mountpoint: Path, view: View, rules: tuple[Rule, ...], workdir: Path
) -> dict[str, Any]:
    """Mount the view at ``mountpoint`` with kernel mounts; details for the record."""
    why = unavailable()
    if why:
        raise UsageError(f"the kernel backend {why}")
    layout = plan(view, rules)
    details: dict[str, Any] = {"workdir": str(workdir), "helper_mounts": []}
    undo = _Undo()
    try:
        payload = image.partition(PAYLOAD)
        loop = _loop(image.path, payload.offset, payload.size, undo)
        loops = [loop]
        source = loop
        if dm_verity_available():
            verity = image.partition(VERITY)
            hash_loop = _loop(image.path, verity.offset, verity.size, undo)
            loops.append(hash_loop)
            dm = f"appimg-{name}"[:120]
            _run(["veritysetup", "open", loop, dm, hash_loop, image.verity.root_hash.hex()])
            undo.push(["veritysetup", "close", dm])
            source = f"/dev/mapper/{dm}"
            details["dm"] = dm
            details["verity"] = "dm-verity (every block the kernel reads)"
        else:
            # The kernel cannot check blocks without device-mapper: check them all now.
            image.check_payload()
            details["verity"] = (
                "checked once before mounting: device-mapper is unavailable, "
                "the kernel does not verify later reads"
            )
        details["loops"] = loops
        opts = f"ro,{MOUNT_FLAGS}"
        if not layout.mounts and not layout.skeleton:
            _run(["mount", "-t", "squashfs", "-o", opts, source, str(mountpoint)])
            undo.push(["umount", "-l", str(mountpoint)])
        else:
            workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            app = workdir / "app"
            app.mkdir(exist_ok=True)
            _run(["mount", "-t", "squashfs", "-o", opts, source, str(app)])
            undo.push(["umount", "-l", str(app)])
            details["helper_mounts"].append(str(app))
            top = str(app)
            if layout.skeleton:
                skel = workdir / "skeleton"
                skel.mkdir(exist_ok=True)
                _run(["mount", "-t", "tmpfs", "-o", f"mode=0755,size=1m,{MOUNT_FLAGS}", "tmpfs",
                      str(skel)])  # fmt: skip
                undo.push(["umount", "-l", str(skel)])
                details["helper_mounts"].append(str(skel))
                _populate(skel, layout.skeleton, view.reader.root)
                _run(["mount", "-o", f"remount,ro,{MOUNT_FLAGS}", str(skel)])
                _run(["mount", "-t", "overlay", "overlay", "-o",
                      f"ro,{MOUNT_FLAGS},lowerdir={skel}:{app}", str(mountpoint)])  # fmt: skip
            else:
                _run(["mount", "--bind", "-o", f"ro,{MOUNT_FLAGS}", top, str(mountpoint)])
            undo.push(["umount", "-l", "-R", str(mountpoint)])
            for kind, at, spec in layout.mounts:
                target = str(mountpoint) + at
                if kind == "bind":
                    _bind_host(spec, target)
                else:
                    lowers = [str(app) + at if src == "app" else path for src, path in spec]
                    _run(["mount", "-t", "overlay", "overlay", "-o",
                          f"ro,{MOUNT_FLAGS},lowerdir=" + ":".join(lowers), target])  # fmt: skip
        # From here on the kernel frees the devices with the last unmount.
        for dev in loops:
            _run(["losetup", "-d", dev])
        if details.get("dm"):
            with contextlib.suppress(ToolError):
                _run(["veritysetup", "close", "--deferred", details["dm"]])
    except BaseException:
        undo.run()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
        raise
    return details


def _bind_host(host_path: str, target: str) -> None:
    """Bind a host path without following symlinks on the way (via an O_PATH descriptor)."""
    from appimg.host.fs import HostFS

    fd = HostFS()._open(host_path, os.O_PATH)
    try:
        _run(["mount", "--bind", "-o", f"ro,{MOUNT_FLAGS}", f"/proc/self/fd/{fd}", target],
             pass_fds=(fd,))  # fmt: skip
    finally:
        os.close(fd)


def _populate(
    skel: Path, entries: list[tuple[str, str, int, int, int, int, str]], root: Any
) -> None:
    # The skeleton is the top layer: the merged root takes its attributes from it.
    os.chmod(skel, stat.S_IMODE(root.mode))
    os.chown(skel, root.uid, root.gid)
    for path, kind, mode, uid, gid, _mtime, target in entries:
        where = skel / path.lstrip("/")
        if kind == "dir":
            where.mkdir(exist_ok=True)
            os.chmod(where, mode)
        elif kind == "file":
            where.touch()
            os.chmod(where, mode)
        else:
            os.symlink(target, where)
        os.chown(where, uid, gid, follow_symlinks=False)
    # Times last (creating children changes a directory's mtime), deepest first.
    for path, _kind, _mode, _uid, _gid, mtime, _target in sorted(entries, reverse=True):
        os.utime(skel / path.lstrip("/"), (mtime, mtime), follow_symlinks=False)
    os.utime(skel, (root.mtime, root.mtime))


def unmount(details: dict[str, Any], mountpoint: str, *, lazy: bool = False) -> None:
    """Unmount a kernel-backend mount and its helpers; UsageError if it is busy."""
    argv = ["umount", "-R"] + (["-l"] if lazy else []) + [mountpoint]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and is_mountpoint(mountpoint):
        if "busy" in proc.stderr:
            raise UsageError(
                f"{mountpoint} is busy: a program has a file open or its working directory "
                "there; close it, or use --lazy to detach the mount now"
            )
        raise ToolError(f"umount {mountpoint}: {proc.stderr.strip()}")
    for helper in reversed(details.get("helper_mounts", [])):
        subprocess.run(["umount", "-l", helper], capture_output=True, timeout=60)
    if details.get("dm"):
        subprocess.run(["veritysetup", "close", "--deferred", details["dm"]],
                       capture_output=True, timeout=60)  # fmt: skip
    workdir = details.get("workdir")
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def describe_plan(view: View, rules: tuple[Rule, ...]) -> str | None:
    """Why the kernel cannot show this view (None when it can)."""
    try:
        plan(view, rules)
    except Unsupported as exc:
        return str(exc)
    return None
