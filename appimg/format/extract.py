"""Extracting an image's payload to a directory, safely (spec/format.md §13.3).

The image is distrusted. Names come from the payload reader, which refuses
'/', '.', '..' and NUL in names; PATH arguments may not contain '..'; every
entry is created relative to a directory file descriptor with O_NOFOLLOW /
O_EXCL, so a hostile image can never write outside the target. Traversal is
iterative with an explicit stack that holds one descriptor per level (a
directory is closed when done), and a directory met twice is a loop, refused.
Files are written sparsely: holes and all-zero chunks are skipped, and the data
to write is checked against the free space first. Extracted modes never keep
setuid/setgid (nor sticky on files), and device nodes are never created.
Directory modes are applied once a directory is complete, so read-only
directories can still be filled.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from appimg.errors import AppimgError, FormatError, UsageError
from appimg.format.squashfs import Inode, SquashfsReader

CHUNK = 1 << 20
_ZEROS = bytes(CHUNK)
Progress = Callable[[int, int], None]
Notice = Callable[[str], None]


def _split(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise UsageError(f"{path}: '..' is not allowed in a path inside the image")
    return parts


def _stderr_notice(message: str) -> None:
    print(f"appimg extract: {message}", file=sys.stderr)


def _file_mode(inode: Inode) -> int:
    """Permission bits an extracted file gets: never setuid, setgid or sticky."""
    return stat.S_IMODE(inode.mode) & 0o777


def _dir_mode(inode: Inode) -> int:
    """Permission bits an extracted directory gets: never setuid or setgid."""
    return stat.S_IMODE(inode.mode) & 0o1777


class _Walk:
    """Depth-first traversal of one subtree with loop detection.

    Yields ("enter", path, inode) for a directory before its entries,
    ("entry", path, inode) for anything else and ("leave", path, inode) once a
    directory is complete. A directory inode (or listing) met twice means the
    image has a directory loop: FormatError.
    """

    def __init__(self, reader: SquashfsReader) -> None:
        self.reader = reader
        self._refs: set[int] = set()

    def __call__(self, path: str, top: Inode) -> Iterator[tuple[str, str, Inode]]:
        if not top.is_dir():
            yield "entry", path, top
            return
        self._see(path, top)
        yield "enter", path, top
        stack: list[tuple[str, Inode, Iterator[tuple[str, Inode]]]] = [
            (path, top, self.reader.iterdir(top))
        ]
        while stack:
            prefix, directory, entries = stack[-1]
            for name, node in entries:
                child = f"{prefix.rstrip('/')}/{name}"
                if node.is_dir():
                    self._see(child, node)
                    yield "enter", child, node
                    stack.append((child, node, self.reader.iterdir(node)))
                    break
                yield "entry", child, node
            else:
                stack.pop()
                yield "leave", prefix, directory

    def _see(self, path: str, node: Inode) -> None:
        if node.ref in self._refs:
            raise FormatError(f"{path}: directory loop in the image")
        self._refs.add(node.ref)


class Extractor:
    def __init__(
        self,
        reader: SquashfsReader,
        progress: Progress | None = None,
        notice: Notice | None = None,
    ) -> None:
        self.reader = reader
        self.progress = progress
        self.notice = notice or _stderr_notice
        self._links: dict[int, list[str]] = {}  # inode number -> path (parts) written first
        self._done = 0
        self._total = 0

    def extract(self, target: Path, paths: list[str]) -> None:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UsageError(f"{target}: exists and is not an empty directory")
        roots = [self._resolve(p) for p in (paths or ["/"])]
        self._total = self._data_size(roots)
        target.mkdir(parents=True, exist_ok=True)
        free = self._free_space(target)
        if self._total > free:
            raise UsageError(
                f"{target}: not enough free space: the image's files hold {self._total} "
                f"bytes of data, {free} bytes are free"
            )
        top = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for parts, inode in roots:
                self._extract_root(top, parts, inode)
        finally:
            os.close(top)

    @staticmethod
    def _free_space(target: Path) -> int:
        st = os.statvfs(target)
        return st.f_bavail * st.f_frsize

    def _resolve(self, path: str) -> tuple[list[str], Inode]:
        parts = _split(path)
        return parts, self.reader.lookup("/" + "/".join(parts))

    def _data_size(self, roots: list[tuple[list[str], Inode]]) -> int:
        """Bytes of file data (holes excluded) the roots hold, hard links counted once."""
        total = 0
        seen: set[int] = set()
        for parts, inode in roots:
            for _, _path, node in _Walk(self.reader)("/" + "/".join(parts), inode):
                if not node.is_file():
                    continue
                # Only what _entry links (nlink > 1, same number) is written once; files
                # that merely claim one inode number are each written.
                if node.nlink > 1:
                    if node.number in seen:
                        continue
                    seen.add(node.number)
                total += sum(b - a for a, b in self.reader.data_ranges(node))
        return total

    def _extract_root(self, top: int, parts: list[str], inode: Inode) -> None:
        # Descriptors held: the parents of the directory being filled, one per level.
        fds: list[int] = []
        names: list[str] = []  # path (from ``top``) of the directory fds[-1]
        try:
            parent = top
            for name in parts[:-1]:
                parent = self._mkdir(parent, name)
                fds.append(parent)
                names.append(name)
            for event, path, node in _Walk(self.reader)("/" + "/".join(parts), inode):
                here = fds[-1] if fds else top
                name = path.rsplit("/", 1)[-1]
                if event == "enter":
                    if not fds and not parts:  # the image root is ``top`` itself
                        fds.append(os.dup(top))
                    else:
                        fds.append(self._mkdir(here, name))
                    names.append(name)
                elif event == "leave":
                    fd = fds.pop()
                    names.pop()
                    try:
                        os.fchmod(fd, _dir_mode(node))
                        if fds or parts:
                            os.utime(fd, (node.mtime, node.mtime))
                    finally:
                        os.close(fd)
                else:
                    self._entry(here, [*names, name], path, node, top)
        finally:
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _mkdir(parent: int, name: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)

    def _entry(self, parent: int, where: list[str], path: str, inode: Inode, top: int) -> None:
        name = where[-1]
        if inode.is_file() and inode.nlink > 1:
            first = self._links.get(inode.number)
            if first is not None:
                src = self._open_dir(top, first[:-1])
                try:
                    os.link(first[-1], name, src_dir_fd=src, dst_dir_fd=parent)
                finally:
                    os.close(src)
                return
            self._links[inode.number] = where
        if inode.is_file():
            self._write_file(parent, name, inode)
            mode = _file_mode(inode)
        elif inode.is_symlink():
            os.symlink(self.reader.readlink(inode), name, dir_fd=parent)
            return  # symlink times and modes are not settable portably
        elif inode.kind == "fifo":
            mode = _file_mode(inode)
            os.mkfifo(name, mode, dir_fd=parent)
        elif inode.kind in ("char", "block"):
            self.notice(f"{path}: {inode.kind} device not extracted")
            return
        else:
            return  # sockets are not recreated
        os.chmod(name, mode, dir_fd=parent)
        os.utime(name, (inode.mtime, inode.mtime), dir_fd=parent, follow_symlinks=False)

    @staticmethod
    def _open_dir(top: int, parts: list[str]) -> int:
        """A descriptor of directory ``parts`` under ``top``, never following a symlink."""
        fd = os.dup(top)
        for name in parts:
            if not name:  # the image root: ``top`` itself
                continue
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nxt
        return fd

    def _write_file(self, parent: int, name: str, inode: Inode) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            # Holes are seeked over, and so are all-zero chunks of data: what is
            # written is at most the image's real data.
            for start, end in self.reader.data_ranges(inode):
                offset = start
                while offset < end:
                    chunk = self.reader.read(inode, offset, min(CHUNK, end - offset))
                    if not chunk:
                        raise FormatError(f"{name}: file data ends early")
                    if chunk != _ZEROS[: len(chunk)]:
                        out.seek(offset)
                        out.write(chunk)
                    offset += len(chunk)
                    self._done += len(chunk)
                    if self.progress:
                        self.progress(self._done, self._total)
            out.truncate(inode.size)


def extract(
    reader: SquashfsReader,
    target: Path,
    paths: list[str],
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> None:
    """Write the payload (or only ``paths`` and what lies below them) into ``target``.

    ``notice`` gets one line for each entry skipped on purpose (device nodes);
    by default it goes to stderr.
    """
    try:
        Extractor(reader, progress, notice).extract(target, paths)
    except AppimgError:
        raise
    except OSError as exc:
        where = exc.filename or target
        raise UsageError(f"{where}: cannot extract: {exc.strerror}") from None
