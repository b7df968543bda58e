"""The host rules of an app on this host (spec/overlay-rules.md): profile, requests,
policy, and whether each granted host path can be shown."""

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
