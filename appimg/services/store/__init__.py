"""The per-user store of installed images (spec/xdg-index.md).

The layout (:mod:`.layout`), the index (:mod:`.index`), the lock (:mod:`.lock`),
crash-safe transactions and recovery (:mod:`.transaction`) and the operations
(:mod:`.ops`). Each entry point takes the user's :class:`~appimg.host.dirs.UserDirs`,
never the environment. This module itself stays cheap to import: it offers what
other commands (``appimg run``) need to find an installed app.
"""

from __future__ import annotations

from pathlib import Path

from appimg.errors import StoreError
from appimg.host.dirs import UserDirs
from appimg.services.store import index as index_mod
from appimg.services.store.layout import StoreLayout


def installed_image(dirs: UserDirs, app_id: str) -> Path | None:
    """The active image file of an installed app, or None if ``app_id`` is not installed."""
    layout = StoreLayout.from_dirs(dirs)
    app = index_mod.load(layout)["apps"].get(app_id)  # StoreError if the index is damaged
    if app is None:
        return None
    return layout.image_file(index_mod.active_version(app)["file"])


def installed_state(dirs: UserDirs, app_id: str) -> tuple[list[str] | None, str | None]:
    """The keys the installed app ``app_id`` is pinned to (None: not installed) and the
    signature state its active version was installed with."""
    try:
        app = index_mod.load(StoreLayout.from_dirs(dirs))["apps"].get(app_id)
    except StoreError:
        return None, None
    if app is None:
        return None, None
    state = index_mod.active_version(app).get("signature", {}).get("state")
    return list(app.get("pinned_keys", [])), state


__all__ = ["StoreLayout", "installed_image", "installed_state"]
