"""What the host's shared-mime-info database already defines (spec/xdg-index.md §3.6).

An app's MIME package may define only types of its own; to tell, the export
rules need the host's types, aliases, globs and XML root namespaces. They are
read from the files ``update-mime-database`` generates (``mime/types``,
``mime/aliases``, ``mime/globs2``, ``mime/XMLnamespaces``) in ``XDG_DATA_HOME``,
each XDG data directory and ``/usr/share``, leaving out the exports directory
(whose database is built from the apps' own packages). Files are read
size-capped; a missing or unreadable one contributes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from appimg.host.dirs import UserDirs

#: freedesktop.org.xml generates ~1,200 globs: the files are far below this.
MAX_DB_FILE = 8 << 20


@dataclass
class HostMime:
    """Types (aliases included) -> where defined; globs (lowercased) -> type;
    XML root ``namespace localname`` -> type."""

    types: dict[str, str] = field(default_factory=dict)
    globs: dict[str, str] = field(default_factory=dict)
    xml_roots: dict[str, str] = field(default_factory=dict)


def _lines(path: Path) -> list[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_DB_FILE + 1)
    if len(data) > MAX_DB_FILE:
        return []
    text = data.decode("utf-8", "replace")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def mime_dirs(dirs: UserDirs, exclude: Path | None = None) -> list[Path]:
    found = []
    for base in (dirs.data_home, *dirs.data_dirs, Path("/usr/share")):
        if exclude is not None and os.path.abspath(base) == os.path.abspath(exclude):
            continue
        if base / "mime" not in found:
            found.append(base / "mime")
    return found


def host_mime(dirs: UserDirs, exclude: Path | None = None) -> HostMime:
    db = HostMime()
    for mime in mime_dirs(dirs, exclude):
        where = str(mime)
        for line in _lines(mime / "types"):
            db.types.setdefault(line.strip(), where)
        for line in _lines(mime / "aliases"):
            for name in line.split()[:2]:
                db.types.setdefault(name, where)
        for line in _lines(mime / "globs2"):
            parts = line.split(":")
            if len(parts) >= 3:
                db.globs.setdefault(parts[2].lower(), parts[1])
        for line in _lines(mime / "XMLnamespaces"):
            parts = line.split(" ")
            if len(parts) == 3:
                db.xml_roots.setdefault(f"{parts[0]} {parts[1]}", parts[2])
    return db
