"""Trusted keys: which signatures count (spec/format.md §Trust).

Keys live as files in ``$XDG_CONFIG_HOME/appimg/trusted-keys/`` (the user's) and
``/etc/appimg/trusted-keys/`` (the system's), one public key per file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import keys
from .basedirs import config_home
from .errors import AppimgError

SYSTEM_TRUST_DIR = Path("/etc/appimg/trusted-keys")
MAX_TRUSTED_KEYS = 4096


def user_trust_dir(env: Mapping[str, str]) -> Path:
    return config_home(env) / "appimg" / "trusted-keys"


def trust_dirs(env: Mapping[str, str]) -> list[Path]:
    return [user_trust_dir(env), SYSTEM_TRUST_DIR]


def load_trusted(env: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """Key id → key for every readable key file in the trust directories."""
    found: dict[str, Ed25519PublicKey] = {}
    for directory in trust_dirs(env):
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
