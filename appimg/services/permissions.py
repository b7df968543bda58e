"""The permissions an app gets: its manifest's, as the host's policy and the user change
them (spec/permissions.md).

:func:`effective` is the one place that combines the manifest's ``permissions``,
the host's ``permissions.d`` policy, the user's stored override and one run's
flags; ``appimg run``, ``appimg permissions`` and ``appimg install`` call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appimg.format.permissions import Permissions, of_manifest
from appimg.host.dirs import UserDirs
from appimg.host.overrides import Override


@dataclass(frozen=True)
class Effective:
    """The permissions granted, and what was asked for but refused, with why."""

    permissions: Permissions
    #: (category, entry, where it came from: "manifest", "user override", "command line")
    sources: list[tuple[str, str, str]] = field(default_factory=list)
    #: (category, entry, why not granted)
    refused: list[tuple[str, str, str]] = field(default_factory=list)


def effective(
    manifest: Mapping[str, Any], dirs: UserDirs, extra: Override | None = None
) -> Effective:
    """What an app gets when run now. (First version: the manifest and ``extra``.)"""
    granted = of_manifest(dict(manifest))
    if extra:
        granted = extra.apply(granted)
    return Effective(granted)
