"""The host's whitelist of paths an app may see (spec/overlay-rules.md §4).

Policy files are TOML with two optional lists of absolute paths, ``allow`` and
``deny``. They are read from three places, each in file-name order: the
defaults shipped in ``appimg/data/host-paths.d/``, the system's
``/etc/appimg/host-paths.d/*.toml`` and the user's
``$XDG_CONFIG_HOME/appimg/host-paths.d/*.toml``. The lists of all files are
united. A host path is allowed when it lies at or below an ``allow`` entry and
not at or below any ``deny`` entry: deny always wins. ``deny`` entries strictly
below an allowed path do not refuse it but are hidden inside it.

Comparisons are on normalised path strings (prefix by whole components); no
host file system access happens here. A malformed policy file fails closed:
:class:`~appimg.errors.PolicyError`, never a silently weaker policy.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import NamedTuple

from appimg.errors import PolicyError
from appimg.files import read_capped
from appimg.host.dirs import UserDirs

SYSTEM_POLICY_DIR = Path("/etc/appimg/host-paths.d")
#: Caps so that a hostile or broken configuration cannot make us allocate without bound.
MAX_POLICY_FILES = 256
MAX_POLICY_FILE_BYTES = 1 << 20
MAX_POLICY_ENTRIES = 4096


def normalise(path: str) -> str:
    """``path`` made absolute-normal: one leading '/', no '.', '..' or repeated '/'."""
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + norm.lstrip("/")


def covers(prefix: str, path: str) -> bool:
    """Is ``path`` at or below ``prefix`` (both normalised), by whole components?"""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/")


# NamedTuples, not frozen dataclasses: defined at import on the launch path, they
# cost ~70 us each instead of ~500 us.
class Entry(NamedTuple):
    path: str
    source: str  # the file it comes from, for messages


class Verdict(NamedTuple):
    allowed: bool
    reason: str
    #: ``deny`` entries strictly below the path: hidden inside a granted subtree.
    hidden: tuple[str, ...] = ()


class HostPolicy(NamedTuple):
    allow: tuple[Entry, ...] = ()
    deny: tuple[Entry, ...] = ()
    sources: tuple[str, ...] = ()

    def check(self, path: str) -> Verdict:
        path = normalise(path)
        for entry in self.deny:
            if covers(entry.path, path):
                return Verdict(False, f"denied by {entry.source} (deny {entry.path})")
        for entry in self.allow:
            if covers(entry.path, path):
                return Verdict(
                    True, f"allowed by {entry.source} (allow {entry.path})", self.hidden_below(path)
                )
        return Verdict(False, "no host-paths.d file allows it")

    def hidden_below(self, path: str) -> tuple[str, ...]:
        path = normalise(path)
        return tuple(sorted({e.path for e in self.deny if e.path != path and covers(path, e.path)}))

    def denies(self, path: str) -> bool:
        return any(covers(e.path, path) for e in self.deny)


def user_policy_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "host-paths.d"


def _shipped() -> list[tuple[str, bytes]]:
    from importlib import resources  # not at import: `appimg run` needs covers() only

    folder = resources.files("appimg").joinpath("data", "host-paths.d")
    if not folder.is_dir():
        return []
    found = sorted((f.name, f) for f in folder.iterdir() if f.name.endswith(".toml"))
    return [(f"appimg's default {name}", item.read_bytes()) for name, item in found]


def _directory(folder: Path) -> list[tuple[str, bytes]]:
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".toml"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PolicyError(f"{folder}: cannot read the host policy: {exc.strerror}") from None
    if len(names) > MAX_POLICY_FILES:
        raise PolicyError(f"{folder}: more than {MAX_POLICY_FILES} policy files")
    files = []
    for name in names:
        path = folder / name
        try:
            data = read_capped(path, MAX_POLICY_FILE_BYTES, PolicyError)
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the host policy: {exc.strerror}") from None
        files.append((str(path), data))
    return files


def parse_whitelist(data: bytes, source: str) -> tuple[list[Entry], list[Entry]]:
    """The ``allow`` and ``deny`` entries of one policy file."""
    import tomllib

    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from None
    unknown = set(table) - {"allow", "deny"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    lists: dict[str, list[Entry]] = {"allow": [], "deny": []}
    for key, entries in lists.items():
        values = table.get(key, [])
        if not isinstance(values, list) or len(values) > MAX_POLICY_ENTRIES:
            raise PolicyError(f"{source}: {key} must be a list of at most {MAX_POLICY_ENTRIES}")
        for value in values:
            if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
                raise PolicyError(f"{source}: {key}: {value!r} is not an absolute path")
            entries.append(Entry(normalise(value), source))
    return lists["allow"], lists["deny"]


def load_policy(
    dirs: UserDirs,
    *,
    system_dir: Path | None = SYSTEM_POLICY_DIR,
    user_dir: Path | None = None,
    defaults: bool = True,
) -> HostPolicy:
    """The united policy of the shipped defaults, the system's and the user's files.

    ``system_dir`` (None: skip it), ``user_dir`` (None: the one ``dirs`` names) and
    ``defaults`` exist so that tests can point the loader at their own files.
    """
    files = _shipped() if defaults else []
    if system_dir is not None:
        files += _directory(system_dir)
    files += _directory(user_dir if user_dir is not None else user_policy_dir(dirs))
    allow: list[Entry] = []
    deny: list[Entry] = []
    for source, data in files:
        a, d = parse_whitelist(data, source)
        allow += a
        deny += d
    return HostPolicy(tuple(allow), tuple(deny), tuple(source for source, _ in files))
