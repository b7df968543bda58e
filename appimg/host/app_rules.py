"""The host rules of an app on this host (spec/overlay-rules.md): profile, requests,
policy, and whether each granted host path can be shown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appimg.host.dirs import UserDirs
from appimg.host.fs import HostFS
from appimg.host.profiles import load_profile
from appimg.host.rules import Resolution, Rule, resolve
from appimg.host.whitelist import load_policy


def host_rules(manifest: Mapping[str, Any], dirs: UserDirs, *, no_host: bool = False) -> Resolution:
    """The host rules of an app on this host: its profile and requests, the host's
    policy, and whether each granted host path can be shown."""
    profile = load_profile(manifest.get("profile", "none"), dirs)

    def problem(rule: Rule) -> str | None:
        return HostFS(rule.hidden).problem(rule.path)

    return resolve(manifest, profile, lambda: load_policy(dirs), no_host=no_host, problem=problem)
