"""Crash-safe file operations (spec/xdg-index.md §Transactions), shared by every layer.

Every file the store, the trust store and ``xdg setup`` publish is written
under a temporary name, fsynced and renamed into place, and the directory that
holds it is fsynced after the rename, so a crash leaves either the old or the
new file, never a torn one.

The ``*_at`` variants work on names relative to a directory descriptor that
:func:`open_dirs` opened without following symlinks, for trees another program
of the user could plant links in (the store's exports): nothing is ever
written, replaced or deleted through a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from appimg.errors import StoreError

COPY_CHUNK = 1 << 30


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a new file ``path`` (replacing it) and fsync it; no rename."""
    _write_fd(os.open(path, _WRITE_FLAGS, mode), data, mode)


def write_file_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """:func:`write_file` for ``name`` in the directory ``dir_fd`` (a symlink there: ELOOP)."""
    _write_fd(os.open(name, _WRITE_FLAGS, mode, dir_fd=dir_fd), data, mode)


def _write_fd(fd: int, data: bytes, mode: int) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically give ``path`` the content ``data``: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_file(tmp, data, mode)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def replace_file_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """:func:`replace_file` for ``name`` in the directory ``dir_fd``; a symlink at ``name``
    is replaced, never followed."""
    tmp = f".{name}.tmp-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)  # a stale one, or a planted symlink
        write_file_at(dir_fd, tmp, data, mode)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def open_dirs(
    base: Path | int, parts: Sequence[str], *, create: bool = False, replace: bool = False
) -> int:
    """A descriptor of the directory ``base/parts[0]/…``, no component followed if it is a
    symlink (``base`` itself, a path or a descriptor, is trusted; a descriptor stays open).

    ``create`` makes missing directories; ``replace`` removes a symlink or other
    non-directory found where a directory is expected (the link itself, never what it
    points to). Otherwise such an entry is ``NotADirectoryError``, a missing one
    ``FileNotFoundError``. The caller closes the result."""
    fd = os.open(base, _DIR_FLAGS & ~os.O_NOFOLLOW) if not isinstance(base, int) else os.dup(base)
    try:
        for name in parts:
            if name in ("", ".", "..") or "/" in name or "\0" in name:
                raise StoreError(f"invalid path component {name!r}")
            child = _open_child(fd, name, create=create, replace=replace)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, name: str, *, create: bool, replace: bool) -> int:
    for _ in range(4):  # a racing program may plant the entry again: a few tries, then fail
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if not replace:
                reason = "not a directory (or a symlink)"
                raise NotADirectoryError(errno.ENOTDIR, reason, name) from None
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                continue
            os.unlink(name, dir_fd=fd)
    raise StoreError(f"{name}: keeps changing while it is being opened")


def unlink_at(dir_fd: int, name: str) -> bool:
    """Remove the entry ``name`` (a symlink itself, not its target); False if absent.
    A directory there is left alone."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except (FileNotFoundError, IsADirectoryError):
        return False
    except PermissionError:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return False  # unlink(2) of a directory is EPERM on some systems
        raise


def unlink_below(base: Path, rel: str) -> bool:
    """Remove ``base/rel`` without following a symlink on the way; False if absent or
    if a component on the way is not a directory."""
    *parents, name = rel.split("/")
    try:
        fd = open_dirs(base, parents)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return unlink_at(fd, name)
    finally:
        os.close(fd)


def remove_empty_dirs_at(base: Path | int, parts: Sequence[str]) -> None:
    """Remove ``base/parts…`` and then its parents while they are empty (never ``base``),
    opening each without following symlinks."""
    if not parts:
        return
    fds: list[int] = []
    try:
        fds.append(open_dirs(base, ()))
        for name in parts[:-1]:
            fds.append(_open_child(fds[-1], name, create=False, replace=False))
    except (FileNotFoundError, NotADirectoryError):
        pass
    try:
        for depth in range(len(fds) - 1, -1, -1):
            try:
                os.rmdir(parts[depth], dir_fd=fds[depth])
            except OSError:
                return
    finally:
        for fd in fds:
            os.close(fd)


def copy_file(src: Path, dst: Path) -> int:
    """Copy ``src`` to the new file ``dst`` in the kernel (reflink or copy_file_range); fsync.

    Returns the size. The bytes never pass through this process, so installing
    a large image costs what the filesystem needs to copy it, nothing more.
    """
    try:
        sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"{src}: {exc.strerror}") from None
    try:
        size = os.fstat(sfd).st_size
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if not _reflink(sfd, dfd):
                _copy_range(sfd, dfd, size)
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return size


def _reflink(sfd: int, dfd: int) -> bool:
    import fcntl

    ficlone = 0x40049409  # FICLONE: share the extents (btrfs, XFS); same bytes, no copy
    try:
        fcntl.ioctl(dfd, ficlone, sfd)
        return True
    except OSError:
        return False


def _copy_range(sfd: int, dfd: int, size: int) -> None:
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(sfd, dfd, min(COPY_CHUNK, size - done), done, done)
            if n == 0:
                raise StoreError("the image shrank while it was being copied")
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # Older kernels refuse copy_file_range across filesystems: plain copy.
        while done < size:
            chunk = os.pread(sfd, min(1 << 20, size - done), done)
            if not chunk:
                raise StoreError("the image shrank while it was being copied") from None
            os.pwrite(dfd, chunk, done)
            done += len(chunk)


def remove_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, never ``stop`` or above."""
    current = start
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
