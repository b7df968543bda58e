"""Where host-side profiles live (spec/overlay-rules.md §3); apart from the parser so
that `inspect` can check for overrides without loading it."""

from __future__ import annotations

from pathlib import Path

from appimg.host.dirs import UserDirs

SYSTEM_PROFILE_DIR = Path("/etc/appimg/profiles")


def user_profile_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "profiles"


def profile_overridden(name: str, dirs: UserDirs) -> bool:
    """Whether the user or the system defines profile ``name`` (instead of the shipped one)."""
    return any(
        (directory / f"{name}.toml").exists()
        for directory in (user_profile_dir(dirs), SYSTEM_PROFILE_DIR)
    )
