"""Named host profiles: rule sets the host defines and an app picks (spec/overlay-rules.md §3).

A profile is a TOML file ``NAME.toml`` with an optional ``description`` and
``[[host]]`` tables shaped like the manifest's (``path``, ``at``, ``mode``). The
first file found wins: the user's ``$XDG_CONFIG_HOME/appimg/profiles/``, the
system's ``/etc/appimg/profiles/``, then the ones shipped in
``appimg/data/profiles/`` (``none`` and ``host``). A profile grants nothing by
itself: its rules pass through the host whitelist like the app's own.

A launch reads a profile's parsed form from ``$XDG_CACHE_HOME/appimg/profiles/``
(:func:`compiled_profile`, keyed by the file's SHA-256) instead of parsing TOML.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import NamedTuple

from appimg.atomic import replace_file
from appimg.errors import FormatError, PolicyError
from appimg.files import read_capped
from appimg.format.manifest import host_rule
from appimg.host.dirs import UserDirs
from appimg.host.profile_dirs import SYSTEM_PROFILE_DIR, user_profile_dir

MAX_PROFILE_BYTES = 1 << 20
MAX_PROFILE_RULES = 1024
#: Same rule as the manifest's ``profile`` key (spec/manifest.md).
_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")


# A NamedTuple, not a frozen dataclass: defined at import on the launch path, it
# costs ~70 us instead of ~500 us.
class Profile(NamedTuple):
    name: str
    description: str
    rules: tuple[dict[str, str], ...]  # each {"path", "at", "mode"}, validated
    source: str


#: The profiles shipped with appimg (package data, read as plain files: importlib.resources
#: would cost the launch path a few milliseconds of imports).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"


def parse_profile(name: str, data: bytes, source: str) -> Profile:
    import tomllib  # not at import: a launch reads the compiled form (compiled_profile)

    try:
        table = tomllib.loads(data.decode("utf-8"))
        unknown = set(table) - {"description", "host"}
        if unknown:
            raise FormatError(f"unknown key(s) {', '.join(sorted(unknown))}")
        description = table.get("description", "")
        if not isinstance(description, str):
            raise FormatError("description must be a string")
        rules = table.get("host", [])
        if not isinstance(rules, list) or len(rules) > MAX_PROFILE_RULES:
            raise FormatError(f"host must be a list of at most {MAX_PROFILE_RULES} rules")
        checked = tuple(host_rule(rule, f"host[{i}]") for i, rule in enumerate(rules))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, FormatError) as exc:
        raise PolicyError(f"profile {name!r} ({source}): {exc}") from None
    return Profile(name, description, checked, source)


def compiled_cache_dir(dirs: UserDirs) -> Path:
    """Where parsed profiles are kept as JSON, named by the SHA-256 of their TOML."""
    return dirs.cache_home / "appimg" / "profiles"


def compiled_profile(name: str, data: bytes, source: str, dirs: UserDirs) -> Profile:
    """:func:`parse_profile`, through a cache of its result keyed by the file's content.

    The cache is addressed by content, so a changed profile is parsed again and
    nothing needs invalidating; the rules read back are checked as on parsing. This
    spares every launch the TOML parser (its import alone costs milliseconds)."""
    import json

    from appimg.digests import sha256

    path = compiled_cache_dir(dirs) / f"{sha256(data).hexdigest()}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, FormatError, PolicyError):
        table = json.loads(read_capped(path, MAX_PROFILE_BYTES, PolicyError))
        description, rules = table["description"], table["host"]
        if (
            isinstance(description, str)
            and isinstance(rules, list)
            and len(rules) <= MAX_PROFILE_RULES
        ):
            checked = tuple(host_rule(rule, f"host[{i}]") for i, rule in enumerate(rules))
            return Profile(name, description, checked, source)
    profile = parse_profile(name, data, source)
    record = {"description": profile.description, "host": list(profile.rules)}
    with contextlib.suppress(OSError):  # a read-only cache only costs the next launch time
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        replace_file(path, json.dumps(record).encode(), 0o600)
    return profile


def _read(path: Path) -> bytes | None:
    try:
        return read_capped(path, MAX_PROFILE_BYTES, PolicyError)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the profile: {exc.strerror}") from None


def load_profile(
    name: str,
    dirs: UserDirs,
    *,
    system_dir: Path | None = SYSTEM_PROFILE_DIR,
    user_dir: Path | None = None,
) -> Profile | None:
    """The profile called ``name``, or None if no directory defines it."""
    if not _PROFILE_NAME.match(name):
        return None
    folders = [user_dir if user_dir is not None else user_profile_dir(dirs)]
    if system_dir is not None:
        folders.append(system_dir)
    for folder in folders:
        data = _read(folder / f"{name}.toml")
        if data is not None:
            return compiled_profile(name, data, str(folder / f"{name}.toml"), dirs)
    shipped = SHIPPED_DIR / f"{name}.toml"
    if shipped.is_file():
        return compiled_profile(
            name, shipped.read_bytes(), f"appimg's default profile {name}", dirs
        )
    return None


def shipped_profiles() -> list[str]:
    folder = SHIPPED_DIR
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".toml"))
