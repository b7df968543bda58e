"""Crash-safe file operations (spec/xdg-index.md §Transactions), shared by every layer.

Every file the store, the trust store and ``xdg setup`` publish is written
under a temporary name, fsynced and renamed into place, and the directory that
holds it is fsynced after the rename, so a crash leaves either the old or the
new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from appimg.errors import StoreError

COPY_CHUNK = 1 << 30


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a new file ``path`` (replacing it) and fsync it; no rename."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
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
