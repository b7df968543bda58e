"""Trusted keys: which signatures count (spec/format.md §Trust).

Keys live as files in ``$XDG_CONFIG_HOME/appimg/trusted-keys/`` (the user's) and
``/etc/appimg/trusted-keys/`` (the system's), one public key per file.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appimg.errors import AppimgError
from appimg.format import keys
from appimg.host.dirs import UserDirs

SYSTEM_TRUST_DIR = Path("/etc/appimg/trusted-keys")
MAX_TRUSTED_KEYS = 4096


def user_trust_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "trusted-keys"


def trust_dirs(dirs: UserDirs) -> list[Path]:
    return [user_trust_dir(dirs), SYSTEM_TRUST_DIR]


def load_trusted(dirs: UserDirs) -> dict[str, Ed25519PublicKey]:
    """Key id → key for every readable key file in the trust directories."""
    found: dict[str, Ed25519PublicKey] = {}
    for directory in trust_dirs(dirs):
        try:
            names = sorted(os.listdir(directory))[:MAX_TRUSTED_KEYS]
        except OSError:
            continue
        for name in names:
            try:
                key = keys.load_public(directory / name)
            except AppimgError:
                continue  # an unreadable key trusts nothing; `appimg trust list` shows it
            found[keys.key_id(key)] = key
    return found
