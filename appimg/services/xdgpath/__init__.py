"""The extended XDG data search path (spec/xdg-index.md §Search path).

The search path is ``$XDG_DATA_HOME``, then the store's exports directory,
then ``$XDG_DATA_DIRS`` (default ``/usr/local/share:/usr/share``): the exports
directory goes in front of the host's directories, as Flatpak puts its exports,
unless ``XDG_DATA_DIRS`` already names it. :mod:`.env` writes the setup
snippets, :mod:`.find` resolves data files (also inside images, through the
index), :mod:`.apps` enumerates desktop entries the way GLib does. All of them
take the user's :class:`~appimg.host.dirs.UserDirs`: ``XDG_DATA_DIRS`` is
``dirs.data_dirs`` (already cleaned of empty and relative entries).
"""

from __future__ import annotations

import os
from pathlib import Path

from appimg.host.dirs import UserDirs
from appimg.services.store.layout import StoreLayout

DEFAULT_DATA_DIRS = "/usr/local/share:/usr/share"


def exports_dir(dirs: UserDirs) -> Path:
    return StoreLayout.from_dirs(dirs).exports


def _same(a: Path, b: Path) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def data_dirs_value(dirs: UserDirs) -> str:
    """What XDG_DATA_DIRS should be: the exports directory, then the current value."""
    exports = exports_dir(dirs)
    current = [str(d) for d in dirs.data_dirs]
    if any(_same(Path(p), exports) for p in current):
        return ":".join(current)
    return ":".join([str(exports), *current])


def search_path(dirs: UserDirs) -> list[tuple[Path, str]]:
    """``(directory, source)`` in lookup order; source is "appimg" for the exports directory."""
    exports = exports_dir(dirs)
    data_dirs = list(dirs.data_dirs)
    if not any(_same(d, exports) for d in data_dirs):
        data_dirs = [exports, *data_dirs]
    result: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for directory in [dirs.data_home, *data_dirs]:
        key = os.path.normpath(directory)
        if key in seen:
            continue
        seen.add(key)
        result.append((Path(key), "appimg" if _same(directory, exports) else "host"))
    return result
