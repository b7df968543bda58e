"""Reading an app tree on disk as the image will show it (spec/manifest.md §7).

A tree unpacked from a package is not trusted: its symbolic links may point
anywhere on the host. :func:`resolve` follows them the way the payload reader
does inside an image (an absolute target is relative to the tree's root, ``..``
stops at the root), so nothing outside the tree is ever read, and
:func:`walk` lists files without following links to directories.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from appimg.errors import FormatError
from appimg.files import read_capped

MAX_LINKS = 40
#: Files looked at by one walk: a package with more is not a desktop app we can guess.
MAX_WALK = 200_000


def resolve(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names inside ``root``, links followed inside it; None if missing."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        path = root.joinpath(*done, part)
        try:
            info = path.lstat()
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_LINKS:
                return None
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if parts and not stat.S_ISDIR(info.st_mode):
            return None
        done.append(part)
    return root.joinpath(*done)


def read(root: Path, rel: str, cap: int) -> bytes | None:
    """A regular file of the tree (links followed inside it), None if there is none."""
    path = resolve(root, rel)
    if path is None or not path.is_file():
        return None
    try:
        return read_capped(path, cap, FormatError)
    except OSError:
        return None


def head(root: Path, rel: str, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a regular file of the tree (b"" if there is none)."""
    path = resolve(root, rel)
    try:
        if path is None or not path.is_file():
            return b""
        with path.open("rb") as f:
            return f.read(size)
    except OSError:
        return b""


def walk(root: Path, *, strict: bool = True) -> Iterator[str]:
    """Every entry that is not a directory, as a path relative to ``root``, depth first.

    Links to directories are listed, not followed. Iterative: a tree thousands of
    levels deep must not exhaust the stack. Past :data:`MAX_WALK` entries, a
    FormatError (``strict``) or the end of the listing."""
    count = 0
    stack = [""]
    while stack:
        base = stack.pop()
        try:
            with os.scandir(root / base if base else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            rel = f"{base}/{entry.name}" if base else entry.name
            if entry.is_dir(follow_symlinks=False):
                folders.append(rel)
                continue
            count += 1
            if count > MAX_WALK:
                if strict:
                    raise FormatError(f"{root}: more than {MAX_WALK} files")
                return
            yield rel
        stack.extend(reversed(folders))
