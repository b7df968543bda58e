"""The sandbox without bubblewrap: the same namespaces set up with the kernel calls.

Used where ``bwrap`` is not installed. A child process unshares user, mount
and pid namespaces (mapping the caller's uid/gid), forks the app's init as pid
1, builds a tmpfs root with the view's top-level entries bound read-only, /proc,
a minimal /dev, a private /tmp and the binds, pivots into it and execs the app.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from pathlib import Path

from appimg.errors import ToolError
from appimg.services.run.sandbox import Sandbox, SignalForwarder

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
SYS_PIVOT_ROOT = 155  # x86_64
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    ctypes.c_ulong(flags), data.encode() if data else None),
        f"mount {target}",
    )  # fmt: skip


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


#: statvfs flag -> mount flag, for the flags a remount must keep.
_KEPT_FLAGS = {
    os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: 0x8,
    os.ST_NOATIME: 0x400, os.ST_NODIRATIME: 0x800, os.ST_RELATIME: 0x200000,
}  # fmt: skip


def _remount_readonly(target: str) -> None:
    # A mount made in another user namespace has its flags locked (FUSE mounts are
    # nosuid,nodev): a remount that drops one fails with EPERM, so keep them all.
    current = os.statvfs(target).f_flag
    kept = sum(flag for st, flag in _KEPT_FLAGS.items() if current & st)
    _mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | kept)


def _bind(source: str, target: str, *, writable: bool, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    _mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _remount_readonly(target)


def _build_root(sandbox: Sandbox, new_root: str) -> None:
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for name, target in sandbox.top_level():
        dest = f"{new_root}/{name}"
        if target is not None:
            os.symlink(target, dest)
        else:
            source = str(sandbox.root / name)
            _bind(source, dest, writable=False, is_dir=os.path.isdir(source))
    os.mkdir(f"{new_root}/proc")
    _mount("proc", f"{new_root}/proc", "proc", MS_NOSUID | MS_NODEV)
    os.mkdir(f"{new_root}/dev")
    _mount("tmpfs", f"{new_root}/dev", "tmpfs", MS_NOSUID, "mode=0755")
    for device in DEVICES:
        _bind(f"/dev/{device}", f"{new_root}/dev/{device}", writable=True, is_dir=False)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{new_root}/dev/{link}")
    os.mkdir(f"{new_root}/tmp")
    _mount("tmpfs", f"{new_root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for bind in sandbox.binds:
        _bind(bind.source, new_root + bind.dest, writable=bind.writable,
              is_dir=os.path.isdir(bind.source))  # fmt: skip
    _remount_readonly(new_root)


#: Directories the new root can be built on (covered by a tmpfs in our mount
#: namespace only); the first that holds none of the paths the sandbox binds.
STAGING_CANDIDATES = ("/mnt", "/srv", "/media", "/opt", "/boot", "/home", "/tmp")


def _staging_dir(sandbox: Sandbox) -> str:
    sources = [os.path.realpath(sandbox.root), *(os.path.realpath(b.source) for b in sandbox.binds)]
    for candidate in STAGING_CANDIDATES:
        if os.path.isdir(candidate) and not any(
            s == candidate or s.startswith(candidate + "/") for s in sources
        ):
            return candidate
    raise OSError(errno.ENOENT, "no directory to build the sandbox root on")


def _init(sandbox: Sandbox, status_fd: int) -> None:
    """Pid 1 of the new pid namespace: build the root, then run the app and reap."""
    try:
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        new_root = _staging_dir(sandbox)
        _build_root(sandbox, new_root)
        os.chdir(new_root)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir(sandbox.cwd)
    except OSError as exc:
        os.write(status_fd, f"sandbox setup failed: {exc.strerror or exc}".encode())
        os._exit(126)
    os.close(status_fd)
    app = os.fork()
    if app == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            os.execve(sandbox.argv[0], sandbox.argv, sandbox.env)
        except OSError as exc:
            os.write(2, f"appimg run: cannot execute {sandbox.argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    # Reap everything; our status is the app's.
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == app:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)
    os._exit(1)


def run_direct(sandbox: Sandbox) -> int:
    """Run the sandbox with unshare/mount/pivot_root; return the app's exit status."""
    uid, gid = os.getuid(), os.getgid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        try:
            _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC),
                   "unshare")  # fmt: skip
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
        except OSError as exc:
            os.write(write_fd, f"cannot create namespaces: {exc.strerror or exc}".encode())
            os._exit(126)
        init = os.fork()  # the first child in a new pid namespace is its pid 1
        if init == 0:
            _init(sandbox, write_fd)
        os.close(write_fd)
        _, status = os.waitpid(init, 0)
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    os.close(write_fd)
    with SignalForwarder() as forwarder:
        forwarder.init_pid = None
        forwarder.fallback_pid = child
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        # The intermediate child's only child is the namespace's init; the app is below it.
        forwarder.init_pid = _first_child(child)
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
    if message:
        raise ToolError(message)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _first_child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None
