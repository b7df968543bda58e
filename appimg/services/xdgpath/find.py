"""``appimg xdg find REL``: a data file across the search path and inside images
(spec/xdg-index.md §Finding data files).

First the directories of the search path, in order (a file there is what any
XDG program would find), then the XDG files the index records for the active
version of every installed image: those are read with ``appimg cat IMAGE
PATH`` (verified, no mount). Only the index is loaded, never an image.
"""

from __future__ import annotations

import os
from typing import Any

from appimg.errors import UsageError
from appimg.host.dirs import UserDirs
from appimg.services.store import index as index_mod
from appimg.services.store.layout import StoreLayout
from appimg.services.xdgpath import search_path


def normalise(rel: str) -> str:
    parts = [p for p in rel.split("/") if p and p != "."]
    if not parts or ".." in parts or "\0" in rel:
        raise UsageError(
            f"{rel!r}: give a relative path like applications/ID.desktop, without '..'"
        )
    return "/".join(parts)


def find(dirs: UserDirs, rel: str, *, every: bool = False) -> list[dict[str, Any]]:
    """Where ``rel`` is found, in lookup order; only the first match unless ``every``."""
    rel = normalise(rel)
    matches: list[dict[str, Any]] = []
    for directory, source in search_path(dirs):
        path = os.path.join(directory, rel)
        if os.path.isfile(path):
            matches.append({"source": source, "path": path})
            if not every:
                return matches
    layout = StoreLayout.from_dirs(dirs)
    index = index_mod.load(layout)
    for app_id in sorted(index["apps"]):
        version = index_mod.active_version(index["apps"][app_id])
        payload_path = version["xdg_files"].get(rel)
        if payload_path is not None:
            matches.append({
                "source": "image",
                "app_id": app_id,
                "version": version["version"],
                "image": str(layout.image_file(version["file"])),
                "path": payload_path,
            })  # fmt: skip
            if not every:
                break
    return matches
