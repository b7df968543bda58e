"""Writing the payload: a SquashFS 4.0 image made by squashfs-tools-ng (spec/format.md §Payload).

The app directory is streamed as a deterministic POSIX (pax) tar archive into
``tar2sqfs``: entries in byte order of their paths, owner 0:0, every time set to
SOURCE_DATE_EPOCH (0 when unset), hard links kept as links. A tar stream rather
than a gensquashfs pack file because pack files cannot name files containing a
newline, and gensquashfs's directory scan does not keep hard links. File data is
moved with sendfile(2), so Python only writes headers.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appimg.errors import ToolError, UsageError
from appimg.format.payload.options import (
    COMPRESSORS,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_COMPRESSOR,
    LEVELS,
)
from appimg.format.squashfs import records as S

TAR_BLOCK = 512
#: Blocks queued per compressor thread, in bytes. tar2sqfs's default (10 blocks a
#: thread) starves the threads on trees of many small files: measured 16.3 s vs
#: 10.3 s for 12k files / 84 MB with zstd-15 on 2 threads (mksquashfs: 11.1 s).
QUEUE_BYTES_PER_JOB = 12 << 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Entry:
    """One entry of the app tree, as it goes into the archive."""

    relpath: str  # "a/b" relative to the app directory
    st: os.stat_result


def scan(app_dir: Path) -> list[Entry]:
    """Every entry below ``app_dir``, parents before children, siblings in byte order.

    Iterative (a stack of directory listings), so a tree of any depth packs."""

    def listing(directory: Path) -> Iterator[str]:
        try:
            names = sorted(os.listdir(directory), key=os.fsencode)
        except OSError as exc:
            raise UsageError(f"{directory}: cannot read directory: {exc.strerror}") from None
        if _listing_size(names) > S.MAX_DIR_LISTING:  # readers would refuse the directory
            raise UsageError(
                f"{directory}: {len(names)} entries, more than one directory of an image "
                f"may hold (its listing must fit in {S.MAX_DIR_LISTING} bytes)"
            )
        return iter(names)

    entries: list[Entry] = []
    stack = [(app_dir, "", listing(app_dir))]
    while stack:
        directory, prefix, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = directory / name
        st = os.lstat(path)
        rel = f"{prefix}{name}"
        if stat.S_ISSOCK(st.st_mode):
            continue  # sockets cannot be archived and mean nothing in an image
        entries.append(Entry(rel, st))
        if stat.S_ISDIR(st.st_mode):
            stack.append((path, rel + "/", listing(path)))
    return entries


def _listing_size(names: list[str]) -> int:
    """The bytes of a squashfs listing of ``names`` (sorted) with the fewest headers: a
    header starts every 256 entries (more where inode blocks change, which we cannot
    know here, so this is a lower bound)."""
    headers = -(-len(names) // S.MAX_DIR_ENTRIES)
    return headers * S.DIR_HEADER_BYTES + sum(
        S.DIR_ENTRY_BYTES + len(os.fsencode(n)) for n in names
    )


def compressor_options(compressor: str, level: int | None) -> list[str]:
    if compressor not in COMPRESSORS:
        raise UsageError(f"unknown compressor {compressor!r} (choose {', '.join(COMPRESSORS)})")
    low, high, default = LEVELS[compressor]
    if level is None:
        level = default
    if not low <= level <= high:
        raise UsageError(f"--level for {compressor} must be from {low} to {high}")
    if compressor == "lz4":
        return ["-X", "hc"] if level > 1 else []
    return ["-X", f"level={level}"]


def _tar_header(entry: Entry, app_dir: Path, mtime: int, hard_link_to: str | None) -> bytes:
    info = tarfile.TarInfo(entry.relpath)
    mode = entry.st.st_mode
    info.mode = stat.S_IMODE(mode)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    if hard_link_to is not None:
        info.type = tarfile.LNKTYPE
        info.linkname = hard_link_to
    elif stat.S_ISREG(mode):
        info.size = entry.st.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(app_dir / entry.relpath)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:  # character or block device
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(entry.st.st_rdev), os.minor(entry.st.st_rdev)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _stream_tar(
    out_fd: int, app_dir: Path, entries: list[Entry], mtime: int, progress: Progress | None
) -> None:
    """Write the archive to ``out_fd`` (a pipe); file data goes by sendfile(2)."""
    total = sum(e.st.st_size for e in entries if stat.S_ISREG(e.st.st_mode))
    done = 0
    first_path: dict[tuple[int, int], str] = {}
    out = os.fdopen(out_fd, "wb", buffering=1 << 16, closefd=False)
    for entry in entries:
        st = entry.st
        link_to = None
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            link_to = first_path.setdefault((st.st_dev, st.st_ino), entry.relpath)
            if link_to == entry.relpath:
                link_to = None
        out.write(_tar_header(entry, app_dir, mtime, link_to))
        if link_to is None and stat.S_ISREG(st.st_mode) and st.st_size:
            out.flush()
            _send_file(out_fd, app_dir / entry.relpath, st.st_size)
            out.write(bytes(-st.st_size % TAR_BLOCK))
            done += st.st_size
            if progress:
                progress(done, total)
    out.write(bytes(2 * TAR_BLOCK))
    out.flush()


def _send_file(out_fd: int, path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        sent = 0
        while sent < size:
            n = os.sendfile(out_fd, fd, sent, size - sent)
            if n == 0:
                raise UsageError(f"{path}: changed size while packing")
            sent += n
    finally:
        os.close(fd)


def write_payload(
    app_dir: Path,
    output: Path,
    *,
    compressor: str = DEFAULT_COMPRESSOR,
    level: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    jobs: int | None = None,
    mtime: int = 0,
    progress: Progress | None = None,
) -> None:
    """Pack ``app_dir`` into the SquashFS file ``output`` (padded to 4 KiB)."""
    tool = shutil.which("tar2sqfs")
    if tool is None:
        raise ToolError(
            "tar2sqfs not found: install squashfs-tools-ng (apt-get install squashfs-tools-ng)"
        )
    if block_size & (block_size - 1) or not 4096 <= block_size <= 1 << 20:
        raise UsageError("--block-size must be a power of two from 4K to 1M")
    entries = scan(app_dir)
    jobs = jobs or os.cpu_count() or 1
    command = [
        tool, "--quiet", "--force", "--no-xattr", "--no-skip",
        "--compressor", compressor, *compressor_options(compressor, level),
        "--block-size", str(block_size),
        "--dev-block-size", "4096",
        "--num-jobs", str(jobs),
        "--queue-backlog", str(jobs * max(10, QUEUE_BYTES_PER_JOB // block_size)),
        "--defaults", f"uid=0,gid=0,mode=0{stat.S_IMODE(os.stat(app_dir).st_mode):o},mtime={mtime}",
        str(output),
    ]  # fmt: skip
    # (tar2sqfs reads --defaults numbers C-style: the leading 0 makes the mode octal.)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(mtime)}
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None
    try:
        _stream_tar(proc.stdin.fileno(), app_dir, entries, mtime, progress)
    except BrokenPipeError:
        pass  # tar2sqfs died; its message follows
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdin.close()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        last = stderr.strip().splitlines()[-1:] or ["no message"]
        raise ToolError(f"tar2sqfs failed: {last[0]}")
