"""Extracting an image's payload to a directory, safely.

Names come from the payload reader, which refuses '/', '.', '..' and NUL in
names, and every entry is created relative to a directory file descriptor with
O_NOFOLLOW / O_EXCL, so a hostile image can never write outside the target.
Directory modes are applied last so read-only directories can still be filled.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from appimg.errors import AppimgError, UsageError
from appimg.format.squashfs import Inode, SquashfsReader

CHUNK = 1 << 20
Progress = Callable[[int, int], None]


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class Extractor:
    def __init__(self, reader: SquashfsReader, progress: Progress | None = None) -> None:
        self.reader = reader
        self.progress = progress
        self._links: dict[int, tuple[int, str]] = {}  # inode number -> (dir fd, name) written
        self._dir_modes: list[tuple[int, str, Inode]] = []
        self._fds: list[int] = []
        self._done = 0
        self._total = 0

    def extract(self, target: Path, paths: list[str]) -> None:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UsageError(f"{target}: exists and is not an empty directory")
        roots = [self._resolve(p) for p in (paths or ["/"])]
        self._total = sum(self._size(inode) for _, inode in roots)
        target.mkdir(parents=True, exist_ok=True)
        top = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        self._fds.append(top)
        try:
            for parts, inode in roots:
                if not parts:
                    self._fill(top, inode)
                    os.chmod(top, stat.S_IMODE(inode.mode))
                    continue
                parent = top
                for name in parts[:-1]:
                    parent = self._mkdir(parent, name, 0o755)
                self._entry(parent, parts[-1], inode)
            for fd, name, inode in reversed(self._dir_modes):
                os.chmod(name, stat.S_IMODE(inode.mode), dir_fd=fd)
                os.utime(name, (inode.mtime, inode.mtime), dir_fd=fd, follow_symlinks=False)
        finally:
            for fd in self._fds:
                os.close(fd)

    def _resolve(self, path: str) -> tuple[list[str], Inode]:
        parts = _split(path)
        return parts, self.reader.lookup("/" + "/".join(parts))

    def _size(self, inode: Inode) -> int:
        if inode.is_dir():
            return sum(self._size(child) for _, child in self.reader.iterdir(inode))
        return inode.size if inode.is_file() else 0

    def _mkdir(self, parent: int, name: str, mode: int) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        self._fds.append(fd)
        return fd

    def _fill(self, dir_fd: int, inode: Inode) -> None:
        for name, child in self.reader.iterdir(inode):
            self._entry(dir_fd, name, child)

    def _entry(self, parent: int, name: str, inode: Inode) -> None:
        if inode.is_dir():
            fd = self._mkdir(parent, name, inode.mode)
            self._fill(fd, inode)
            self._dir_modes.append((parent, name, inode))
            return
        if inode.is_file() and inode.nlink > 1:
            first = self._links.get(inode.number)
            if first is not None:
                os.link(first[1], name, src_dir_fd=first[0], dst_dir_fd=parent)
                return
            self._links[inode.number] = (parent, name)
        if inode.is_file():
            self._write_file(parent, name, inode)
        elif inode.is_symlink():
            os.symlink(self.reader.readlink(inode), name, dir_fd=parent)
            return  # symlink times and modes are not settable portably
        elif inode.kind == "fifo":
            os.mkfifo(name, stat.S_IMODE(inode.mode), dir_fd=parent)
        elif inode.kind in ("char", "block"):
            try:
                os.mknod(name, inode.mode, inode.rdev, dir_fd=parent)
            except PermissionError:
                return  # device nodes need privileges; skipped like tar does
        else:
            return  # sockets are not recreated
        os.chmod(name, stat.S_IMODE(inode.mode), dir_fd=parent)
        os.utime(name, (inode.mtime, inode.mtime), dir_fd=parent, follow_symlinks=False)

    def _write_file(self, parent: int, name: str, inode: Inode) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            offset = 0
            while offset < inode.size:
                chunk = self.reader.read(inode, offset, min(CHUNK, inode.size - offset))
                if not chunk:
                    break
                out.write(chunk)
                offset += len(chunk)
                self._done += len(chunk)
                if self.progress:
                    self.progress(self._done, self._total)


def extract(
    reader: SquashfsReader, target: Path, paths: list[str], progress: Progress | None = None
) -> None:
    """Write the payload (or only ``paths`` and what lies below them) into ``target``."""
    try:
        Extractor(reader, progress).extract(target, paths)
    except AppimgError:
        raise
    except OSError as exc:
        where = exc.filename or target
        raise UsageError(f"{where}: cannot extract: {exc.strerror}") from None
