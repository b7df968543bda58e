"""Where host-side profiles live (spec/overlay-rules.md §3); apart from the parser so
that `inspect` can check for overrides without loading it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..basedirs import config_home

SYSTEM_PROFILE_DIR = Path("/etc/appimg/profiles")


def user_profile_dir(env: Mapping[str, str]) -> Path:
    return config_home(env) / "appimg" / "profiles"


def profile_overridden(name: str, env: Mapping[str, str]) -> bool:
    """Whether the user or the system defines profile ``name`` (instead of the shipped one)."""
    return any(
        (directory / f"{name}.toml").exists()
        for directory in (user_profile_dir(env), SYSTEM_PROFILE_DIR)
    )
