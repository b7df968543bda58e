"""The extended XDG data search path (spec/xdg-index.md §Search path).

The search path is ``$XDG_DATA_HOME``, then the store's exports directory,
then ``$XDG_DATA_DIRS`` (default ``/usr/local/share:/usr/share``): the exports
directory goes in front of the host's directories, as Flatpak puts its exports,
unless ``XDG_DATA_DIRS`` already names it. :mod:`.env` writes the setup
snippets, :mod:`.find` resolves data files (also inside images, through the
index), :mod:`.apps` enumerates desktop entries the way GLib does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from appimg.host.dirs import data_dirs, data_home
from appimg.services.store.layout import Layout

DEFAULT_DATA_DIRS = "/usr/local/share:/usr/share"


def exports_dir(env: Mapping[str, str]) -> Path:
    return Layout.from_env(env).exports


def _same(a: Path, b: Path) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def data_dirs_value(env: Mapping[str, str]) -> str:
    """What XDG_DATA_DIRS should be: the exports directory, then the current value."""
    exports = exports_dir(env)
    current = env.get("XDG_DATA_DIRS", "") or DEFAULT_DATA_DIRS
    if any(_same(Path(p), exports) for p in current.split(":") if p):
        return current
    return f"{exports}:{current}"


def search_path(env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """``(directory, source)`` in lookup order; source is "appimg" for the exports directory."""
    exports = exports_dir(env)
    dirs = data_dirs(env)
    if not any(_same(d, exports) for d in dirs):
        dirs = [exports, *dirs]
    result: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for directory in [data_home(env), *dirs]:
        key = os.path.normpath(directory)
        if key in seen:
            continue
        seen.add(key)
        result.append((Path(key), "appimg" if _same(directory, exports) else "host"))
    return result
