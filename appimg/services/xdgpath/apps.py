"""``appimg apps``: the desktop shell's view of installed applications
(spec/xdg-index.md §Enumerating applications).

Follows GLib's ``g_app_info_get_all()``: every ``applications/`` directory of
the search path, recursively (``kde/foo.desktop`` has the id
``kde-foo.desktop``); the first directory that has a desktop id owns it, even
if that entry turns out hidden or invalid; an entry counts if its first group
is ``[Desktop Entry]``, its ``Type`` is ``Application``, it is not ``Hidden``,
and its ``TryExec`` and ``Exec`` programs exist. Entries are read by the one
desktop-entry parser (:mod:`appimg.services.exports.keyfile`) in its lenient
mode, which stops after the first group and keeps only the keys needed, so
enumerating a thousand entries costs a thousand small reads.
Icon names are resolved in the hicolor theme of every data directory
(scalable first, then the largest size), then in ``pixmaps/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from appimg.files import FileTooLargeError, read_capped
from appimg.host.dirs import UserDirs
from appimg.services.exports.exec_line import first_word
from appimg.services.exports.keyfile import parse_keyfile, unescape
from appimg.services.xdgpath import search_path

MAX_DESKTOP_FILE = 1 << 20
MAX_DEPTH = 8
WANTED = frozenset({
    "Type", "Name", "Icon", "Exec", "TryExec", "Hidden", "NoDisplay", "OnlyShowIn",
    "NotShowIn", "Terminal", "X-Appimg-Id", "X-Appimg-Version", "X-Appimg-Image",
})  # fmt: skip
_ICON_EXTS = (".png", ".svg", ".xpm")


def read_entry(path: str) -> dict[str, str] | None:
    """The wanted keys of the ``[Desktop Entry]`` group; None if it is not the first group."""
    try:
        data = read_capped(path, MAX_DESKTOP_FILE)
    except (OSError, FileTooLargeError):
        return None  # GLib skips an entry it cannot load; its id stays claimed
    groups = parse_keyfile(data, strict=False, first_group_only=True, keys=WANTED).groups
    if not groups or groups[0].name != "Desktop Entry":
        return None
    return {key: unescape(raw, strict=False) for key, raw in groups[0].entries}


class _Programs:
    """g_find_program_for_path with a cache: a thousand entries name a handful of programs."""

    def __init__(self, program_path: str) -> None:
        self.path = (program_path or "/usr/bin:/bin").split(":")
        self.cache: dict[str, bool] = {}

    def exists(self, program: str) -> bool:
        found = self.cache.get(program)
        if found is None:
            found = self.cache[program] = self._find(program)
        return found

    def _find(self, program: str) -> bool:
        if "/" in program:
            return os.path.isfile(program) and os.access(program, os.X_OK)
        for directory in self.path:
            candidate = os.path.join(directory or ".", program)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return True
        return False


class IconIndex:
    """Icon name -> file, built on first use from one directory listing per theme directory."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self._map: dict[str, str] | None = None

    def lookup(self, name: str) -> str | None:
        if not name:
            return None
        if name.startswith("/"):
            return name if os.path.isfile(name) else None
        if self._map is None:
            self._map = self._build()
        return self._map.get(name)

    @staticmethod
    def _score(size_dir: str) -> int:
        if size_dir == "scalable":
            return 1 << 20
        base, _, scale = size_dir.partition("@")
        width, _, height = base.partition("x")
        if not (width.isdigit() and width == height):
            return 0
        return int(width) * (int(scale) if scale.isdigit() else 1)

    def _build(self) -> dict[str, str]:
        best: dict[str, tuple[int, int, str]] = {}
        for order, base in enumerate(self.dirs):
            hicolor = os.path.join(base, "icons", "hicolor")
            try:
                size_dirs = [e for e in os.scandir(hicolor) if e.is_dir()]
            except OSError:
                size_dirs = []
            for size_dir in size_dirs:
                score = self._score(size_dir.name)
                if not score:
                    continue
                try:
                    contexts = [e for e in os.scandir(size_dir.path) if e.is_dir()]
                except OSError:
                    continue
                for context in contexts:
                    try:
                        files = list(os.scandir(context.path))
                    except OSError:
                        continue
                    for entry in files:
                        stem, ext = os.path.splitext(entry.name)
                        if ext in _ICON_EXTS:
                            key = (score, -order)
                            known = best.get(stem)
                            if known is None or key > known[:2]:
                                best[stem] = (score, -order, entry.path)
        for order, base in enumerate(self.dirs):
            try:
                files = list(os.scandir(os.path.join(base, "pixmaps")))
            except OSError:
                continue
            for entry in files:
                stem, ext = os.path.splitext(entry.name)
                if ext in _ICON_EXTS and stem not in best:
                    best[stem] = (0, -order, entry.path)
        return {name: value[2] for name, value in best.items()}


def _desktop_files(directory: str, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(desktop id, path) of every .desktop file below ``directory``."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(".desktop"):
            if entry.is_file():
                yield prefix + entry.name, entry.path
        elif depth < MAX_DEPTH and entry.is_dir():
            yield from _desktop_files(entry.path, f"{prefix}{entry.name}-", depth + 1)


def _shown(values: Mapping[str, str], desktops: list[str]) -> bool:
    if values.get("NoDisplay") == "true":
        return False
    only = [d for d in values.get("OnlyShowIn", "").split(";") if d]
    if only and not set(only) & set(desktops):
        return False
    never = [d for d in values.get("NotShowIn", "").split(";") if d]
    return not set(never) & set(desktops)


def enumerate_apps(
    dirs: UserDirs, *, program_path: str = "", current_desktop: str = ""
) -> list[dict[str, Any]]:
    """Every application a GLib-based shell would list, sorted by desktop id.

    ``program_path`` and ``current_desktop`` are the caller's ``PATH`` (where
    ``TryExec`` and ``Exec`` programs are looked up) and ``XDG_CURRENT_DESKTOP``
    (for ``OnlyShowIn``/``NotShowIn``)."""
    places = search_path(dirs)
    programs = _Programs(program_path)
    icons = IconIndex([d for d, _ in places])
    desktops = [d for d in current_desktop.split(":") if d]
    claimed: set[str] = set()
    apps: list[dict[str, Any]] = []
    for directory, source in places:
        for desktop_id, path in _desktop_files(os.path.join(directory, "applications")):
            if desktop_id in claimed:
                continue
            claimed.add(desktop_id)
            values = read_entry(path)
            if not values or values.get("Type") != "Application" or values.get("Hidden") == "true":
                continue
            try_exec = values.get("TryExec")
            if try_exec and not programs.exists(try_exec):
                continue
            command = values.get("Exec", "")
            if command:
                program = first_word(command)
                if program is None or not programs.exists(program):
                    continue
            icon = values.get("Icon", "")
            apps.append({
                "id": desktop_id,
                "name": values.get("Name", ""),
                "icon": icon or None,
                "icon_path": icons.lookup(icon),
                "exec": command or None,
                "source": source,
                "file": path,
                "show": _shown(values, desktops),
                "terminal": values.get("Terminal") == "true",
                "app_id": values.get("X-Appimg-Id") if source == "appimg" else None,
                "version": values.get("X-Appimg-Version") if source == "appimg" else None,
                "image": values.get("X-Appimg-Image") if source == "appimg" else None,
            })  # fmt: skip
    apps.sort(key=lambda a: a["id"])
    return apps
