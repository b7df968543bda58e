"""The mount table and mount points (spec/overlay-rules.md §8, "Mounts").

What is mounted where, read from ``/proc/self/mountinfo``; the fusermount
helpers that detach FUSE mounts, also stale ones whose server died; and the
default places: ``$XDG_RUNTIME_DIR/appimg/NAME`` (``dirs.runtime``), created
for a mount and removed once nothing is mounted there. Knows nothing of
records, references or backends, so every other module of the package may
use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from appimg.errors import ToolError, UsageError
from appimg.host.dirs import UserDirs

# -- the mount table ------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \\ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_table() -> dict[str, str]:
    """Mount point -> file system type, from /proc/self/mountinfo."""
    table: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return table
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5:
            table[_unescape(fields[4])] = right.split()[0] if right else ""
    return table


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.path.abspath(path) in mount_table()


# -- detaching FUSE mounts ------------------------------------------------------------------


def fusermount() -> str:
    """The fusermount program (libfuse 3's name first)."""
    for name in ("fusermount3", "fusermount"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolError("fusermount3 is not installed (package fuse3)")


def detach_stale(mountpoint: str) -> None:
    """Remove a dead FUSE mount (its server is gone: "Transport endpoint is not connected")."""
    with contextlib.suppress(ToolError, OSError):
        subprocess.run([fusermount(), "-u", "-z", mountpoint], capture_output=True, timeout=30)
    if is_mountpoint(mountpoint) and os.geteuid() == 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, timeout=30)


# -- mount points ---------------------------------------------------------------------------


def mount_root(dirs: UserDirs) -> Path:
    """``$XDG_RUNTIME_DIR/appimg``: the default mount points, and the package's state."""
    path = dirs.runtime / "appimg"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def ready_place(where: Path, default_place: bool) -> None:
    """Make ``where`` ready to mount on: a default place is created (and cleared of a
    stale mount); a place the caller chose must be an existing, unused directory."""
    if default_place:
        if is_mountpoint(where):
            detach_stale(str(where))
        where.mkdir(mode=0o700, exist_ok=True)
    elif not where.is_dir():
        raise UsageError(f"{where}: mount point must be an existing directory")
    elif is_mountpoint(where):
        raise UsageError(f"{where}: something is already mounted there")


def remove_default_place(dirs: UserDirs, mountpoint: str) -> None:
    """Remove a mount point we created under the mount root, once nothing is mounted
    there (an empty directory only: rmdir fails on anything else, which is fine)."""
    if Path(mountpoint).parent == mount_root(dirs) and not is_mountpoint(mountpoint):
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
