"""Where the per-user store keeps things (spec/xdg-index.md §Store layout).

Everything lives under ``$XDG_DATA_HOME/appimg/``, taken from the caller's
:class:`~appimg.host.dirs.UserDirs`. This module only computes paths (no I/O),
so the fast read-only commands can import it cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

from appimg.host.dirs import UserDirs


class StoreLayout:
    # A plain class, not a dataclass: importing dataclasses costs `appimg apps` 10 ms.
    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"StoreLayout({str(self.root)!r})"

    @classmethod
    def from_dirs(cls, dirs: UserDirs) -> StoreLayout:
        return cls(dirs.data_home / "appimg")

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    @property
    def journal(self) -> Path:
        return self.root / "journal.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def exports(self) -> Path:
        """The directory added to XDG_DATA_DIRS."""
        return self.root / "exports" / "share"

    def image_file(self, rel: str) -> Path:
        return self.root / rel

    def needs_recovery(self) -> bool:
        """A change was interrupted (or is running): a journal or a staging area is left."""
        return os.path.exists(self.journal) or os.path.exists(self.tmp)

    def is_abandoned(self) -> bool:
        """A store with a lock but no index: a first change killed before its journal.
        (Also true while a first change runs: check again while holding the lock.)"""
        return os.path.exists(self.lock) and not os.path.exists(self.index)
