"""The sandbox without bubblewrap: the same namespaces set up with the kernel calls.

Used where ``bwrap`` is not installed (or ``APPIMG_NO_BWRAP`` is set). A child
process unshares user, mount, pid, UTS and cgroup namespaces, and IPC and network
unless the app shares them (as bubblewrap does, mapping the caller's uid/gid;
loopback brought up), forks the app's init as pid 1, builds a
tmpfs root with the view's top-level entries bound read-only, /proc, a minimal
/dev the same as bubblewrap's ``--dev`` (device nodes, links, a private devpts
at /dev/pts, /dev/shm) or the host's, a private /tmp, a /run with the private runtime directory,
the binds (granted host paths through descriptors opened without following
symlinks) and the hidden paths' empty tmpfs, pivots into it and forks the app,
which starts a new session, drops its capabilities, loads the syscall filter
(spec/run.md §Syscall filter) and execs.

Bind destinations are created one component at a time relative to directory
file descriptors, never following a symlink: the image is hostile by assumption
and its symlinks must not steer a mount (or a mkdir) onto the host.

Without FUSE (spec/run.md, "Without FUSE") the root is the app's extracted tree
alone, and the granted host rules (:class:`~appimg.services.run.sandbox.Merge`)
are merged over it here, in the new mount namespace, with overlayfs (which
bubblewrap cannot mount): :func:`_merged_view` builds the view the FUSE server
would show on a private tmpfs beside the new root, then the root is built from
it as from a mount.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

from appimg.errors import PolicyError, ToolError
from appimg.services.run import seccomp
from appimg.services.run.grants import open_nofollow
from appimg.services.run.sandbox import Bind, Hide, Merge, Sandbox, SignalForwarder

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWNET = 0x40000000
#: The namespaces bwrap's --unshare-user/-pid/-uts/-cgroup-try always give; IPC and
#: network (--unshare-ipc, --unshare-net) unless the app shares them.
NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
SYS_PIVOT_ROOT = 155  # x86_64
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (Linux 5.12)
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: Marks a refusal (PolicyError) on the setup status pipe, as opposed to a failure.
POLICY = "policy: "
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: The symlinks of the minimal /dev, the same as bubblewrap's --dev makes.
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
    ("ptmx", "pts/ptmx"),
)

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


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def _readonly_tree(fd: int) -> None:
    """Make the mount at ``fd`` read-only and every mount below it too.

    A recursive bind brings along what is mounted inside the source (a stick below
    /media, a FUSE mount in a granted folder); a remount changes only the top one, so
    a ``:ro`` grant would leave those writable. bubblewrap's ``--ro-bind`` is
    recursive in the same way.
    """
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    result = _libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE,
                           ctypes.byref(attr), ctypes.sizeof(attr))  # fmt: skip
    if result == 0:
        return
    if ctypes.get_errno() != errno.ENOSYS:
        _check(result, "mount_setattr")
    # An older kernel: each mount at or below it, outermost first.
    top = os.readlink(f"/proc/self/fd/{fd}")
    with open("/proc/self/mountinfo") as handle:
        # Spaces, tabs, newlines and backslashes are written as octal escapes (\040).
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
                  for line in handle]  # fmt: skip
    for point in sorted({p for p in points if p == top or p.startswith(top.rstrip("/") + "/")},
                        key=len):  # fmt: skip
        _remount_readonly(point)


def _open_dest(root_fd: int, dest: str, *, is_dir: bool) -> tuple[int, int, str]:
    """Create ``dest`` under ``root_fd`` without following symlinks.

    Returns (parent directory fd, O_PATH fd of the destination, its name). Each
    component is made (mkdirat does not follow) then opened with O_NOFOLLOW: a
    symlink anywhere on the way is refused, so nothing is ever created or
    mounted where an image's symlink points.
    """
    parts = [part for part in dest.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, f"bad bind destination {dest}")
    parent = os.dup(root_fd)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if last and not is_dir:
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=parent))  # fmt: skip
            else:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=parent)
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if not last or is_dir:
                flags |= os.O_DIRECTORY
            try:
                fd = os.open(part, flags, dir_fd=parent)
            except NotADirectoryError:
                fd = -1
            if fd < 0 or stat.S_ISLNK(os.fstat(fd).st_mode):
                if fd >= 0:
                    os.close(fd)
                where, full = "/" + "/".join(parts[: index + 1]), "/" + "/".join(parts)
                raise OSError(errno.ELOOP, f"{where} is a symlink or file of the image, in the "
                                           f"way of the bind at {full}: not followed")  # fmt: skip
            if last:
                return parent, fd, part
            os.close(parent)
            parent = fd
    except BaseException:
        os.close(parent)
        raise
    raise AssertionError("unreachable")


def _bind(source: str, root_fd: int, dest: str, *, writable: bool, is_dir: bool) -> None:
    """Bind ``source`` at ``dest`` (relative to the new root's fd ``root_fd``)."""
    parent, fd, name = _open_dest(root_fd, dest, is_dir=is_dir)
    try:
        # Mount onto the very inode just checked, through its fd's magic link.
        _mount(source, f"/proc/self/fd/{fd}", None, MS_BIND | MS_REC)
        if not writable:
            # That fd still names the covered inode; a lookup by name from the
            # parent crosses into the new mount.
            top = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                _readonly_tree(top)
            finally:
                os.close(top)
    finally:
        os.close(fd)
        os.close(parent)


def _build_root(sandbox: Sandbox, new_root: str) -> None:
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    root_fd = os.open(new_root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _fill_root(sandbox, new_root, root_fd)
    finally:
        os.close(root_fd)
    _remount_readonly(new_root)


def _fill_root(sandbox: Sandbox, new_root: str, root_fd: int) -> None:
    for name, target in sandbox.root_entries():
        if target is not None:
            os.symlink(target, name, dir_fd=root_fd)
        else:
            source = str(sandbox.root / name)
            _bind(source, root_fd, name, writable=False, is_dir=os.path.isdir(source))
    os.mkdir("proc", dir_fd=root_fd)
    _mount("proc", f"{new_root}/proc", "proc", MS_NOSUID | MS_NODEV)
    if sandbox.host_dev:
        # The host's /dev as it is (devices = ["all"]): device nodes stay usable.
        _bind("/dev", root_fd, "dev", writable=True, is_dir=True)
    else:
        os.mkdir("dev", dir_fd=root_fd)
        # Not nodev: the device binds below must stay usable.
        _mount("tmpfs", f"{new_root}/dev", "tmpfs", MS_NOSUID, "mode=0755")
        for device in DEVICES:
            _bind(f"/dev/{device}", root_fd, f"dev/{device}", writable=True, is_dir=False)
        for link, target in DEV_LINKS:
            os.symlink(target, f"{new_root}/dev/{link}")
        # As bubblewrap's --dev: a private devpts instance (terminal apps open
        # /dev/ptmx) and a /dev/shm directory in the writable /dev tmpfs.
        os.mkdir(f"{new_root}/dev/shm", 0o755)
        os.mkdir(f"{new_root}/dev/pts", 0o755)
        _mount("devpts", f"{new_root}/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=620")  # fmt: skip
    os.mkdir("tmp", dir_fd=root_fd)
    _mount("tmpfs", f"{new_root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if sandbox.runtime:
        _make_run(sandbox, new_root, root_fd)
    for item in sandbox.mounts():
        if isinstance(item, Hide):
            _hide(root_fd, item)
        elif item.fd is not None:
            _bind_same(item, root_fd)
        else:
            _bind(item.source, root_fd, item.dest, writable=item.writable or item.device,
                  is_dir=item.is_dir)  # fmt: skip
    for link in sandbox.links:
        head, _, name = link.dest.strip("/").rpartition("/")
        parent, fd, _ = _open_dest(root_fd, head, is_dir=True)
        try:
            os.symlink(link.target, name, dir_fd=fd)
        finally:
            os.close(fd)
            os.close(parent)
    # Read-only only now: binds inside them (the data directory) needed their mkdir.
    for hide in sandbox.hides:
        if hide.is_dir:
            parent, fd, _ = _open_dest(root_fd, hide.dest, is_dir=True)
            try:
                _remount_readonly(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
                os.close(parent)

    if sandbox.runtime:
        _remount_readonly(f"{new_root}/run")


def _make_run(sandbox: Sandbox, new_root: str, root_fd: int) -> None:
    """A tmpfs /run with the view's /run entries, and the private runtime dir in it."""
    assert sandbox.runtime is not None
    os.mkdir("run", 0o755, dir_fd=root_fd)
    _mount("tmpfs", f"{new_root}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    run_fd = os.open("run", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=root_fd)  # fmt: skip
    try:
        for name, target in sandbox.run_entries():
            if target is not None:
                os.symlink(target, name, dir_fd=run_fd)
            else:
                source = str(sandbox.root / "run" / name)
                _bind(source, run_fd, name, writable=False, is_dir=os.path.isdir(source))
    finally:
        os.close(run_fd)
    # Made in the fresh /run tmpfs, where nothing of the view's is on the way
    # ("user" is never one of its entries): mounting by path is safe.
    parent, fd, _ = _open_dest(root_fd, sandbox.runtime, is_dir=True)
    os.close(fd)
    os.close(parent)
    _mount("tmpfs", new_root + sandbox.runtime, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")


def _bind_same(bind: Bind, root_fd: int) -> None:
    """Bind what ``bind.fd`` names, opened again without following symlinks.

    A mount of the caller's namespace cannot be bound from this one (EINVAL): the
    path is opened again here, as bwrap's --bind-fd does, and must still be the
    same inode; it is bound through the new descriptor's magic link.
    """
    fd = open_nofollow(bind.source)
    try:
        here, there = os.fstat(fd), os.fstat(bind.fd)  # type: ignore[arg-type]
        if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
            raise OSError(errno.ESTALE, f"{bind.source} changed while the sandbox was made")
        _bind(f"/proc/self/fd/{fd}", root_fd, bind.dest, writable=bind.writable,
              is_dir=bind.is_dir)  # fmt: skip
    finally:
        os.close(fd)


def _hide(root_fd: int, hide: Hide) -> None:
    """Cover ``hide.dest`` with an empty tmpfs (a file: with /dev/null, read-only)."""
    if not hide.is_dir:
        _bind("/dev/null", root_fd, hide.dest, writable=False, is_dir=False)
        return
    parent, fd, _ = _open_dest(root_fd, hide.dest, is_dir=True)
    try:
        _mount("tmpfs", f"/proc/self/fd/{fd}", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    finally:
        os.close(fd)
        os.close(parent)


# -- host rules merged into the root (spec/run.md, "Without FUSE") ---------------------------

_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = _PATH | os.O_DIRECTORY


@dataclass
class _Entry:
    """One side of a rule at its ``at``: an open entry (never reached through a symlink)."""

    fd: int  # O_PATH, not following the last component
    kind: int  # stat.S_IFMT of it
    target: str | None = None  # a symlink's text


def _lookup(base_fd: int, path: str) -> _Entry | None:
    """``path`` below ``base_fd``, directories only on the way and none of them a symlink
    (the last component may be one: it is shown as a symlink); None if there is none."""
    parts = [p for p in path.split("/") if p]
    fd = os.dup(base_fd)
    try:
        for index, name in enumerate(parts):
            last = index == len(parts) - 1
            try:
                child = os.open(name, _PATH if last else _DIR, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError, OSError):
                return None  # missing, or through a symlink or file: nothing there
            if last:
                mode = os.fstat(child).st_mode
                target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(mode) else None
                os.close(fd)
                fd = -1
                return _Entry(child, stat.S_IFMT(mode), target)
            os.close(fd)
            fd = child
    finally:
        if fd >= 0:
            os.close(fd)
    return _Entry(os.dup(base_fd), stat.S_IFDIR)


def _shown(rule: Merge, app: _Entry | None, host: _Entry | None) -> list[_Entry]:
    """What the view shows at ``rule.at`` (overlay-rules.md §6): the top entry decides;
    a directory merges with the directories below it, down to the first non-directory."""
    if rule.mode == "replace":
        layers = [host]
    else:
        layers = [app, host] if rule.mode == "under" else [host, app]
    shown: list[_Entry] = []
    for entry in layers:
        if entry is None:
            continue
        if shown and (entry.kind != stat.S_IFDIR or shown[0].kind != stat.S_IFDIR):
            break
        shown.append(entry)
        if entry.kind != stat.S_IFDIR:
            break
    return shown


class _ViewBuilder:
    """Lays the granted rules over the app's tree in ``work`` (a tmpfs of this namespace).

    Every directory a rule shows is an overlayfs mount (its lower layers the app's and
    the host's directories, ordered by the mode) with an upper layer on the tmpfs, so
    that the mount points of rules below it can be made without writing to the host;
    each is made read-only once all are laid. Destinations are walked one component at
    a time from the view's root without following a symlink: an image symlink in the
    way is replaced by a directory in the view (as the FUSE view synthesizes one), never
    followed."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.count = 0
        self.readonly: list[str] = []  # view paths of the overlays, made read-only last

    def overlay(self, lowers: list[int], target: str) -> None:
        self.count += 1
        layer = f"{self.work}/layers/{self.count}"
        os.makedirs(f"{layer}/upper")
        os.mkdir(f"{layer}/work")
        lower = ":".join(f"/proc/self/fd/{fd}" for fd in lowers)
        options = f"lowerdir={lower},upperdir={layer}/upper,workdir={layer}/work,userxattr"
        _mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, options)

    def parent(self, view_fd: int, at: str) -> tuple[int, str]:
        """The view directory holding ``at`` (made where missing, a non-directory replaced
        by one), as an fd, and the last name."""
        parts = [p for p in at.split("/") if p]
        fd = os.dup(view_fd)
        try:
            for index, name in enumerate(parts[:-1]):
                try:
                    child = os.open(name, _DIR, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError, OSError) as exc:
                    if not isinstance(exc, FileNotFoundError):
                        self.clear(fd, name, "/" + "/".join(parts[: index + 1]))
                    self.mkdir(fd, name, "/" + "/".join(parts[: index + 1]), at)
                    child = os.open(name, _DIR, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    @staticmethod
    def mkdir(parent: int, name: str, where: str, at: str) -> None:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot make {where} for the host rule at {at} without "
                                     f"FUSE: {exc.strerror}") from None  # fmt: skip

    @staticmethod
    def clear(parent: int, name: str, where: str) -> None:
        """Remove what the view has at ``name`` (in the overlay: a whiteout, the host and
        the cache are untouched); a directory only if it is empty."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        except OSError as exc:
            raise OSError(exc.errno, f"{where} of the view cannot be replaced without FUSE: "
                                     f"{exc.strerror}") from None  # fmt: skip

    def lay(self, view_fd: int, rule: Merge, shown: list[_Entry]) -> None:
        parent, name = self.parent(view_fd, rule.at)
        try:
            self._lay(parent, name, rule, shown)
        finally:
            os.close(parent)

    def _lay(self, parent: int, name: str, rule: Merge, shown: list[_Entry]) -> None:
        at = rule.at
        try:
            mode: int | None = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = None
        top = shown[0].kind if shown else None
        keep = stat.S_ISDIR if top == stat.S_IFDIR else stat.S_ISREG if top is not None else None
        if mode is not None and (keep is None or top == stat.S_IFLNK or not keep(mode)):
            self.clear(parent, name, at)
            mode = None
        if top is None:
            return  # neither side has it: the rule shows nothing
        if top == stat.S_IFLNK:
            os.symlink(shown[0].target, name, dir_fd=parent)  # type: ignore[arg-type]
            return
        if top == stat.S_IFDIR:
            if mode is None:
                self.mkdir(parent, name, at, at)
            fd = os.open(name, _DIR, dir_fd=parent)
            try:
                self.overlay([e.fd for e in shown], f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            self.readonly.append(at)
            return
        # A file (or fifo, device): bound onto a file of the view.
        if mode is None:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=parent))  # fmt: skip
        fd = os.open(name, _PATH, dir_fd=parent)
        try:
            _mount(f"/proc/self/fd/{shown[0].fd}", f"/proc/self/fd/{fd}", None, MS_BIND)
        finally:
            os.close(fd)
        top_fd = os.open(name, _PATH, dir_fd=parent)
        try:
            _remount_readonly(f"/proc/self/fd/{top_fd}")
        finally:
            os.close(top_fd)

    @staticmethod
    def hide(view_fd: int, rule: Merge, shown: list[_Entry], host: _Entry | None) -> None:
        """Cover the whitelist's deny entries inside the rule's host directory where the
        view shows them (the Hide mechanism: an empty read-only tmpfs, /dev/null)."""
        if host is None or host.kind != stat.S_IFDIR or not any(e is host for e in shown):
            return
        for secret in rule.hidden:
            if not secret.startswith(rule.path.rstrip("/") + "/"):
                continue
            where = rule.at.rstrip("/") + secret[len(rule.path.rstrip("/")) :]
            found = _lookup(view_fd, where)
            if found is None:
                continue
            try:
                if found.kind == stat.S_IFDIR:
                    _mount("tmpfs", f"/proc/self/fd/{found.fd}", "tmpfs",
                           MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0755")  # fmt: skip
                elif found.kind != stat.S_IFLNK:
                    _mount("/dev/null", f"/proc/self/fd/{found.fd}", None, MS_BIND)
                    again = _lookup(view_fd, where)
                    if again is not None:
                        try:
                            _remount_readonly(f"/proc/self/fd/{again.fd}")
                        finally:
                            os.close(again.fd)
            finally:
                os.close(found.fd)


def _merged_view(sandbox: Sandbox, work: str) -> str:
    """Build the app's view in this mount namespace: an overlayfs of the app's tree
    (``sandbox.root``) with the granted rules of ``sandbox.merge`` laid over it,
    parents first; return its path (a read-only mount)."""
    tree = os.open(sandbox.root, _DIR)
    opened: list[int] = [tree]
    try:
        # The host's entries are opened before anything is mounted (the work tmpfs
        # may cover a host path).
        host = [_lookup_host(rule.path) for rule in sandbox.merge]
        opened += [e.fd for e in host if e is not None]
        _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
        builder = _ViewBuilder(work)
        view = f"{work}/view"
        os.mkdir(view, 0o755)
        builder.overlay([tree], view)
        view_fd = os.open(view, _DIR)
        opened.append(view_fd)
        for rule, host_entry in zip(sandbox.merge, host, strict=True):
            app = _lookup(tree, rule.at)
            if app is not None:
                opened.append(app.fd)
            shown = _shown(rule, app, host_entry)
            builder.lay(view_fd, rule, shown)
            builder.hide(view_fd, rule, shown, host_entry)
        for at in reversed(builder.readonly):
            found = _lookup(view_fd, at)
            if found is not None:
                try:
                    _remount_readonly(f"/proc/self/fd/{found.fd}")
                finally:
                    os.close(found.fd)
        _remount_readonly(view)
        return view
    finally:
        for fd in opened:
            os.close(fd)


def _lookup_host(path: str) -> _Entry | None:
    root = os.open("/", _DIR)
    try:
        return _lookup(root, path)
    finally:
        os.close(root)


def _loopback_up() -> None:
    """Bring ``lo`` of the new network namespace up (as bwrap's --unshare-net does)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


#: Directories the new root can be built on (covered by a tmpfs in our mount
#: namespace only); the first that holds none of the paths the sandbox binds.
STAGING_CANDIDATES = ("/mnt", "/srv", "/media", "/opt", "/boot", "/home", "/tmp")


def _staging_dir(sandbox: Sandbox) -> str:
    # Binds through a descriptor are already open: only paths still to look up count.
    paths = [b.source for b in sandbox.binds if b.fd is None]
    sources = [os.path.realpath(sandbox.root), *(os.path.realpath(p) for p in paths)]
    for candidate in STAGING_CANDIDATES:
        if os.path.isdir(candidate) and not any(
            s == candidate or s.startswith(candidate + "/") for s in sources
        ):
            return candidate
    raise OSError(errno.ENOENT, "no directory to build the sandbox root on")


def _die_with_parent(parent: int | None) -> None:
    """Be killed when the parent goes, even by SIGKILL (as bwrap's --die-with-parent)."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # it went before the request was made


def _drop_capabilities() -> None:
    """No capability in the sandbox's user namespace either (as bwrap does)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            _check(-1, "prctl(PR_CAPBSET_DROP)")
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty
    _check(_libc.capset(header, data), "capset")


def _exec_app(sandbox: Sandbox, filt: object) -> None:
    """In the app's process: new session, no privileges, the filter, then the program."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        os.setsid()  # no controlling terminal to push input into (TIOCSTI)
        _drop_capabilities()
        seccomp.reset_personality()
        seccomp.load(filt)  # sets no_new_privs first
        # Nothing of the caller's but stdin, stdout and stderr: a descriptor it
        # left inheritable would be a way out of the sandbox (bwrap closes them too).
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    except OSError as exc:
        os.write(2, f"appimg run: sandbox setup failed: {exc.strerror or exc}\n".encode())
        os._exit(126)
    try:
        os.execve(sandbox.argv[0], sandbox.argv, sandbox.env)
    except OSError as exc:
        os.write(2, f"appimg run: cannot execute {sandbox.argv[0]}: {exc.strerror}\n".encode())
        os._exit(127)


def _init(sandbox: Sandbox, status_fd: int, filt: object) -> None:
    """Pid 1 of the new pid namespace: build the root, then run the app and reap."""
    try:
        _die_with_parent(None)  # and when pid 1 dies, the kernel kills the namespace
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        new_root = _staging_dir(sandbox)
        if sandbox.merge:
            # The view is assembled beside the new root, on the staging directory.
            sandbox.root = Path(_merged_view(sandbox, new_root))
            sandbox.check_binds()  # against the view the app will see
            new_root += "/root"
            os.mkdir(new_root, 0o755)
        _build_root(sandbox, new_root)
        os.chdir(new_root)
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
        _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir(sandbox.cwd)
    except OSError as exc:
        os.write(status_fd, f"sandbox setup failed: {exc.strerror or exc}".encode())
        os._exit(126)
    except PolicyError as exc:
        os.write(status_fd, f"{POLICY}{exc}".encode())
        os._exit(126)
    os.close(status_fd)
    app = os.fork()
    if app == 0:
        _exec_app(sandbox, filt)
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
    if not sandbox.merge:
        sandbox.check_binds()  # else in the namespace, once the view is built
    filt = seccomp.build_filter()  # before forking: a missing libseccomp is reported here
    uid, gid = os.getuid(), os.getgid()
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        # A process group of its own: the terminal's ^C reaches `appimg run`
        # only, which passes it on to the app (in a session of its own).
        os.setpgid(0, 0)
        try:
            namespaces = NAMESPACES
            namespaces |= 0 if sandbox.share_ipc else CLONE_NEWIPC
            namespaces |= 0 if sandbox.share_network else CLONE_NEWNET
            _check(_libc.unshare(namespaces), "unshare")
            # As bwrap's --unshare-cgroup-try: a kernel without cgroup namespaces goes without.
            _libc.unshare(CLONE_NEWCGROUP)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1")
            _write("/proc/self/gid_map", f"{gid} {gid} 1")
            if not sandbox.share_network:
                _loopback_up()
            _die_with_parent(parent)  # after unshare: gaining capabilities clears the setting
        except OSError as exc:
            os.write(write_fd, f"cannot create namespaces: {exc.strerror or exc}".encode())
            os._exit(126)
        init = os.fork()  # the first child in a new pid namespace is its pid 1
        if init == 0:
            _init(sandbox, write_fd, filt)
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
    if message.startswith(POLICY):
        raise PolicyError(message[len(POLICY) :])
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
