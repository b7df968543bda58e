"""Reading host paths for the view without ever following a symlink (spec/overlay-rules.md §6).

Every access resolves the whole absolute host path again, component by
component, refusing symlinks on the way: with ``openat2(RESOLVE_NO_SYMLINKS)``
where the kernel has it (one system call), else by ``openat(O_NOFOLLOW)`` per
component. The last component is looked at with ``fstatat(AT_SYMLINK_NOFOLLOW)``,
so a host symlink is shown as a symlink and never followed by the mounter. No
descriptor is kept between calls: a host file replaced by rename (as
``/etc/resolv.conf`` often is) is seen at the next access, and a directory moved
out of a granted path is no longer reachable through it. Paths below a
``hidden`` prefix (policy ``deny`` entries inside a granted path) do not exist.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterable

from appimg.host.whitelist import covers

#: openat2(2) and its ``struct open_how``; RESOLVE_NO_SYMLINKS implies NO_MAGICLINKS.
_SYS_OPENAT2 = 437
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_IN_ROOT = 0x10
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_openat2() -> ctypes._CFuncPtr | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, _RESOLVE_NO_SYMLINKS)
    fd = syscall(_SYS_OPENAT2, _AT_FDCWD, b"/", ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        return None  # ENOSYS: an old kernel or a seccomp filter; walk instead
    os.close(fd)
    return syscall


_OPENAT2 = _load_openat2()


def open_in_root(root: str, path: str, flags: int) -> int | None:
    """``path`` opened as a process whose root directory is ``root`` would open it
    (openat2 ``RESOLVE_IN_ROOT``: absolute symlinks and ``..`` stay below ``root``),
    with ``flags`` | O_CLOEXEC. OSError as open(2) fails; None where the kernel has no
    openat2 (before Linux 5.6), so the caller cannot look as the sandbox will."""
    if _OPENAT2 is None:
        return None
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT)
        fd = _OPENAT2(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how),
                      ctypes.sizeof(how))  # fmt: skip
        if fd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):
                return None  # refused by a seccomp filter around us
            raise OSError(err, os.strerror(err), path)
        return fd
    finally:
        os.close(root_fd)


#: Bits 63 (host) | 62-48 (device index) | 47-0 (host inode): never equal to an app
#: inode number (< 2**32) or a synthesized directory's (bit 62 only).
HOST_INO = 1 << 63
_DEV_SHIFT = 48
_INO_MASK = (1 << _DEV_SHIFT) - 1


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class HostFS:
    """Symlink-free access to host paths; ``hidden`` prefixes are absent. Thread-safe."""

    def __init__(self, hidden: Iterable[str] = ()) -> None:
        self.hidden = tuple(sorted(set(hidden)))
        self._devices: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- opening ----------------------------------------------------------------------

    def is_hidden(self, path: str) -> bool:
        return any(covers(h, path) for h in self.hidden)

    def _open(self, path: str, flags: int) -> int:
        """A descriptor of ``path`` opened with ``flags``; OSError if any component is a
        symlink (ELOOP/ENOTDIR) or missing."""
        if self.is_hidden(path):
            raise FileNotFoundError(errno.ENOENT, "hidden by the host policy", path)
        flags |= os.O_CLOEXEC | os.O_NOFOLLOW
        if _OPENAT2 is not None:
            how = _OpenHow(flags, 0, _RESOLVE_NO_SYMLINKS)
            fd = _OPENAT2(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(how),
                          ctypes.sizeof(how))  # fmt: skip
            if fd >= 0:
                return fd
            err = ctypes.get_errno()
            if err not in (errno.ENOSYS, errno.EPERM, errno.EAGAIN):
                raise OSError(err, os.strerror(err), path)
        parts = _split(path)
        fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                step = flags if last else os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                nfd = os.open(part, step, dir_fd=fd)
                os.close(fd)
                fd = nfd
            if not parts and not flags & os.O_PATH:
                nfd = os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _parent(self, path: str) -> tuple[int, str]:
        parent, _, name = path.rstrip("/").rpartition("/")
        return self._open(parent or "/", os.O_PATH | os.O_DIRECTORY), name

    # -- queries ----------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result | None:
        """The host entry at ``path`` itself (a symlink is not followed), or None."""
        if self.hidden and self.is_hidden(path):
            return None
        if path == "/":
            return os.lstat("/")
        try:
            fd, name = self._parent(path)
        except OSError:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[tuple[str, os.stat_result]]:
        """Entries of the host directory ``path`` with their lstat, hidden ones left out."""
        try:
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return []
        found = []
        prefix = path.rstrip("/") + "/"
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if self.hidden and self.is_hidden(prefix + entry.name):
                        continue
                    try:
                        found.append((entry.name, entry.stat(follow_symlinks=False)))
                    except OSError:
                        continue  # removed meanwhile
        except OSError:
            return found
        finally:
            os.close(fd)
        return found

    def read(self, path: str, offset: int, size: int) -> bytes:
        fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        if self.is_hidden(path):
            raise FileNotFoundError(errno.ENOENT, "hidden by the host policy", path)
        fd, name = self._parent(path)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def problem(self, path: str) -> str | None:
        """Why the host path cannot be shown (None if it can): a rule's own path may
        end in a symlink, but every directory on the way must be a real directory."""
        if self.is_hidden(path):
            return "hidden by the host policy"
        prefix = ""
        parts = _split(path)
        for i, part in enumerate(parts):
            prefix += "/" + part
            try:
                st = os.lstat(prefix)
            except FileNotFoundError:
                return f"{prefix} does not exist on the host"
            except OSError as exc:
                return f"{prefix}: {exc.strerror}"
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                return f"{prefix} is {kind} on the host (symlinks are not followed)"
        return None

    def ino(self, st: os.stat_result) -> int:
        """A view inode number for a host entry: stable for the life of the mount."""
        index = self._devices.get(st.st_dev)
        if index is None:
            with self._lock:
                index = self._devices.setdefault(st.st_dev, len(self._devices) & 0x7FFF)
        return HOST_INO | (index << _DEV_SHIFT) | (st.st_ino & _INO_MASK)
