"""The permissions an app gets: its manifest's, as the user and the host's policy change
them (spec/permissions.md §1).

:func:`effective` is the one place that combines, in this order, the manifest's
``permissions``, the user's stored override (:mod:`appimg.host.overrides`), one
run's flags, and last the host's ``permissions.d`` policy
(:mod:`appimg.host.permission_policy`), which refuses what it denies whoever
granted it. ``appimg run``, ``appimg permissions`` and ``appimg install`` call it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from appimg.format.permissions import SETS, Permissions, of_manifest
from appimg.host.dirs import UserDirs
from appimg.host.overrides import Override
from appimg.host.permission_policy import PermissionPolicy, spelled
from appimg.values import Fields

MANIFEST = "manifest"
USER_OVERRIDE = "user override"
COMMAND_LINE = "command line"


class Effective(Fields):
    """The permissions granted, and what was asked for but refused, with why.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    Its attributes are not reassigned (it was a frozen dataclass).
    """

    _FIELDS = ("permissions", "sources", "refused", "revoked")
    __slots__ = _FIELDS

    def __init__(
        self,
        permissions: Permissions,
        sources: list[tuple[str, str, str]] | None = None,
        refused: list[tuple[str, str, str]] | None = None,
        revoked: list[tuple[str, str, str]] | None = None,
    ) -> None:
        self.permissions = permissions
        #: (category, entry, where it came from: "manifest", "user override", "command line")
        self.sources = [] if sources is None else sources
        #: (category, entry, why not granted: the host policy file and its deny entry)
        self.refused = [] if refused is None else refused
        #: (category, entry, by whom: "user override" or "command line") for entries an
        #: earlier step granted and a later one took away
        self.revoked = [] if revoked is None else revoked

    def to_json(self) -> dict[str, Any]:
        """The stable ``permissions --json`` object's permission part (spec/permissions.md)."""

        def rows(items: list[tuple[str, str, str]], key: str) -> list[dict[str, str]]:
            return [{"permission": spelled(cat, entry), "category": cat, "entry": entry,
                     key: why} for cat, entry, why in items]  # fmt: skip

        granted = {category: sorted(self.permissions.names(category)) for category in SETS}
        granted["filesystems"] = [entry for cat, entry in self.permissions.entries()
                                  if cat == "filesystems"]  # fmt: skip
        return {
            "granted": granted,
            "sources": rows(self.sources, "source"),
            "revoked": rows(self.revoked, "by"),
            "refused": rows(self.refused, "reason"),
            # What the user should know before running it: the unfiltered buses.
            "dangers": self.permissions.dangers(),
        }


def _key(category: str, entry: str) -> tuple[str, str]:
    """What identifies an entry across steps: a filesystem by its location, not its mode."""
    if category == "filesystems":
        location, sep, mode = entry.rpartition(":")
        if sep and mode in ("ro", "create") and location:
            return category, location
    return category, entry


def effective(
    manifest: Mapping[str, Any],
    dirs: UserDirs,
    extra: Override | None = None,
    *,
    stored: Override | None = None,
    policy: PermissionPolicy | None = None,
) -> Effective:
    """What the app of ``manifest`` gets when run now, with ``extra`` (one run's flags).

    ``stored`` (the user's override) and ``policy`` are read from ``dirs`` and the
    system unless given; a malformed policy or override raises PolicyError."""
    from appimg.host import overrides
    from appimg.host.permission_policy import load_permission_policy

    if stored is None:
        stored = overrides.load(dirs, manifest["id"])
    if policy is None:
        policy = load_permission_policy(dirs)
    steps = [(MANIFEST, of_manifest(dict(manifest)))]
    current = steps[0][1]
    for who, change in ((USER_OVERRIDE, stored), (COMMAND_LINE, extra)):
        if change:
            current = change.apply(current)
            steps.append((who, current))
    # Where each entry of the result came from: the first step whose set holds it
    # as it is now (a mode changed by an override counts as the override's).
    sources: list[tuple[str, str, str]] = []
    refused: list[tuple[str, str, str]] = []
    for category, entry in current.entries():
        source = next(who for who, step in steps if (category, entry) in step.entries())
        denial = policy.refusal(*_key(category, entry))
        if denial is None:
            sources.append((category, entry, source))
        else:
            refused.append((category, entry, f"refused by the host policy {denial}"))
    # Revoked: taken away by a step and not granted again by a later one.
    final = {_key(c, e) for c, e in current.entries()}
    revoked = []
    for (_, before), (who, after) in itertools.pairwise(steps):
        kept = {_key(c, e) for c, e in after.entries()} | final
        revoked += [(c, e, who) for c, e in before.entries() if _key(c, e) not in kept]
    granted = current
    if refused:
        gone = {_key(c, e) for c, e, _ in refused}
        granted = Permissions.of_sets(
            {cat: frozenset(n for n in current.names(cat) if (cat, n) not in gone)
             for cat in SETS},
            {loc: mode for loc, mode in current.filesystems.items()
             if ("filesystems", loc) not in gone},
        )  # fmt: skip
    return Effective(granted, sources, refused, revoked)
