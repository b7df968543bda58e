"""Overlay rules: how an app's view merges its payload with host paths (spec/overlay-rules.md).

:mod:`.policy` (the host whitelist), :mod:`.profiles` (named rule sets),
:mod:`.rules` (requests, grants, precedence), :mod:`.hostfs` (symlink-free
host access) and :mod:`.view` (the merged tree) hold no FUSE code; the mount
backends in :mod:`appimg.mount` serve what :class:`.view.View` describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .hostfs import HostFS
from .policy import load_policy
from .profiles import load_profile
from .rules import Resolution, Rule, resolve


def host_rules(
    manifest: Mapping[str, Any], env: Mapping[str, str], *, no_host: bool = False
) -> Resolution:
    """The host rules of an app on this host: its profile and requests, the host's
    policy, and whether each granted host path can be shown."""
    profile = load_profile(manifest.get("profile", "none"), env)

    def problem(rule: Rule) -> str | None:
        return HostFS(rule.hidden).problem(rule.path)

    return resolve(manifest, profile, lambda: load_policy(env), no_host=no_host, problem=problem)
