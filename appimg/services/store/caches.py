"""The host's caches over the exports directory (spec/xdg-index.md §Caches).

Where the host has the tools, ``update-desktop-database`` (mimeinfo.cache),
``gtk-update-icon-cache`` (icon-theme.cache) and ``update-mime-database`` are
run on the exports directory after a change, as Flatpak does for its exports.
Their output is derived data: it is never listed in the index, reconciling
leaves it alone, and when nothing it covers remains it is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

KINDS = ("applications", "icons", "mime")
DESKTOP_CACHE = "applications/mimeinfo.cache"
ICON_CACHE = "icons/hicolor/icon-theme.cache"
TOOL_TIMEOUT = 60


def is_generated(rel: str) -> bool:
    """True for files the cache tools write (rel is relative to exports/share)."""
    if rel in (DESKTOP_CACHE, ICON_CACHE) or rel == "icons/hicolor/.icon-theme.cache":
        return True
    return rel.startswith("mime/") and not rel.startswith("mime/packages/")


def kind_of(rel: str) -> str | None:
    if rel.startswith("applications/"):
        return "applications"
    if rel.startswith("icons/"):
        return "icons"
    if rel.startswith("mime/packages/"):
        return "mime"
    return None


def _has_files(directory: Path, suffix: str = "", skip: tuple[str, ...] = ()) -> bool:
    for _root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(suffix) and name not in skip:
                return True
    return False


def _run(argv: list[str]) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        return
    # A cache that could not be refreshed only slows lookups; never fail the command.
    subprocess.run([tool, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=TOOL_TIMEOUT, check=False)  # fmt: skip


def _symlink_on_the_way(exports: Path, kind: str) -> bool:
    paths = (exports.parent, exports, exports / kind, exports / kind / "hicolor")
    return any(path.is_symlink() for path in paths)


def refresh(exports: Path, kinds: set[str] | tuple[str, ...] = KINDS) -> None:
    """Bring the caches of the given kinds up to date with the exported files.

    A kind whose directory is reached through a symlink (planted by another program) is
    skipped: the tools, and the removal of a stale cache, would act on its target."""
    kinds = {kind for kind in kinds if not _symlink_on_the_way(exports, kind)}
    if "applications" in kinds:
        apps = exports / "applications"
        if _has_files(apps, ".desktop"):
            _run(["update-desktop-database", "-q", str(apps)])
        else:
            _remove(exports / DESKTOP_CACHE)
    if "icons" in kinds:
        hicolor = exports / "icons" / "hicolor"
        if _has_files(hicolor, skip=("icon-theme.cache", ".icon-theme.cache")):
            _run(["gtk-update-icon-cache", "-q", "-f", "-t", str(hicolor)])
        else:
            _remove(exports / ICON_CACHE)
    if "mime" in kinds:
        mime = exports / "mime"
        if _has_files(mime / "packages", ".xml"):
            _run(["update-mime-database", str(mime)])
        elif mime.is_dir():
            for entry in mime.iterdir():
                if entry.name != "packages":
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        _remove(entry)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
