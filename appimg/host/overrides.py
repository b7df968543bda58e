"""A change to an app's permissions: the user's stored override, or one run's flags.

The grammar is ``flatpak override``'s: ``--socket=X`` / ``--nosocket=X``,
``--device`` / ``--nodevice``, ``--share`` / ``--unshare``,
``--filesystem=P[:ro|:create]`` / ``--nofilesystem=P``. An :class:`Override`
records, per entry, whether it is granted (True) or revoked (False), and for
filesystems the mode or ``None`` (revoked). Where it is stored and how it is
read back is this module's job too (spec/permissions.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appimg.format.permissions import NAMED, Permissions


@dataclass
class Override:
    sockets: dict[str, bool] = field(default_factory=dict)
    devices: dict[str, bool] = field(default_factory=dict)
    share: dict[str, bool] = field(default_factory=dict)
    #: location -> mode, or None for ``--nofilesystem``
    filesystems: dict[str, str | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sockets or self.devices or self.share or self.filesystems)

    def apply(self, base: Permissions) -> Permissions:
        """``base`` with this override's grants added and its revocations removed."""
        named = {}
        for category in NAMED:
            changes: dict[str, bool] = getattr(self, category)
            names = set(base.names(category))
            names |= {n for n, granted in changes.items() if granted}
            names -= {n for n, granted in changes.items() if not granted}
            named[category] = frozenset(names)
        filesystems = dict(base.filesystems)
        for location, mode in self.filesystems.items():
            if mode is None:
                filesystems.pop(location, None)
            else:
                filesystems[location] = mode
        return Permissions(filesystems=filesystems, **named)
