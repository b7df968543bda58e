"""The host's permission policy: what no app may get (spec/permissions.md §2).

Policy files are TOML holding one optional list, ``deny``, of permissions in
Flatpak's flag spelling, ``category=entry`` (``socket=x11``, ``device=all``,
``share=network``, ``filesystem=home``, ``talk-name=org.example.Service``,
``own-name=``, ``see-name=``, ``system-talk-name=``). They are read from three places, each
in file-name order, beside the host-paths.d whitelist (:mod:`appimg.host.whitelist`):
the defaults shipped in ``appimg/data/permissions.d/`` (none: nothing is refused),
``/etc/appimg/permissions.d/*.toml`` and the user's
``$XDG_CONFIG_HOME/appimg/permissions.d/*.toml``. The lists of all files are united.

``filesystem=P`` refuses the location P and every location below it, compared
by location (``filesystem=xdg-download`` refuses ``xdg-download/sub``,
``filesystem=/srv`` refuses ``/srv/data``); ``filesystem=home`` also refuses
every ``~/...`` location. A bus name refuses itself and, as ``PREFIX.*``, every
name below PREFIX (``talk-name=org.freedesktop.*`` refuses ``org.freedesktop.secrets``
and ``org.freedesktop.*``). Names are checked against the vocabulary of
:mod:`appimg.format.permissions`: a malformed file or an unknown name fails
closed with a :class:`~appimg.errors.PolicyError` naming the file and the entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from appimg.errors import FormatError, PolicyError
from appimg.format.permissions import (
    BUS,
    FLAG_OF,
    NAMED,
    bus_name_covers,
    parse_bus_name,
    parse_location,
)
from appimg.host.dirs import UserDirs
from appimg.host.whitelist import MAX_POLICY_ENTRIES, covers
from appimg.host.whitelist import _directory as read_policy_dir

SYSTEM_PERMISSIONS_DIR = Path("/etc/appimg/permissions.d")

CATEGORY_OF = {flag: category for category, flag in FLAG_OF.items()}


def spelled(category: str, entry: str) -> str:
    """``sockets``, ``x11`` -> ``socket=x11``."""
    return f"{FLAG_OF[category]}={entry}"


# NamedTuples, not frozen dataclasses: defined at import on the launch path, they
# cost ~70 us each instead of ~500 us.
class Denial(NamedTuple):
    category: str  # sockets, devices, share, filesystems
    entry: str  # a name, or a normalised location
    source: str  # the file it comes from, for messages

    def refuses(self, category: str, entry: str) -> bool:
        """Does this denial refuse ``entry`` (for filesystems a location, no mode)?"""
        if category != self.category:
            return False
        if category in BUS:
            return bus_name_covers(self.entry, entry)
        if category != "filesystems":
            return entry == self.entry
        if self.entry == "home" and entry.startswith("~/"):
            return True
        if self.entry.startswith("/"):
            return entry.startswith("/") and covers(self.entry, entry)
        return entry == self.entry or entry.startswith(self.entry + "/")

    def __str__(self) -> str:
        return f"{self.source} (deny {spelled(self.category, self.entry)})"


class PermissionPolicy(NamedTuple):
    deny: tuple[Denial, ...] = ()
    sources: tuple[str, ...] = ()

    def refusal(self, category: str, entry: str) -> Denial | None:
        """The first denial that refuses ``entry`` of ``category``, if any."""
        return next((d for d in self.deny if d.refuses(category, entry)), None)


def user_permissions_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "permissions.d"


#: Policy files shipped with appimg; none in this release (its README says how to write one).
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "permissions.d"


def _shipped() -> list[tuple[str, bytes]]:
    return [(f"appimg's default permissions.d/{Path(path).name}", data)
            for path, data in read_policy_dir(SHIPPED_DIR)]  # fmt: skip


def parse_denial(text: object, source: str) -> Denial:
    """One ``deny`` entry, ``category=entry``, checked strictly."""
    if not isinstance(text, str) or "=" not in text:
        raise PolicyError(f"{source}: deny: {text!r} is not 'category=entry' "
                          f"(e.g. 'device=all')")  # fmt: skip
    flag, _, entry = text.partition("=")
    category = CATEGORY_OF.get(flag)
    if category is None:
        raise PolicyError(f"{source}: deny: {text!r}: unknown category {flag!r} "
                          f"(one of {', '.join(CATEGORY_OF)})")  # fmt: skip
    if category == "filesystems":
        try:
            entry = parse_location(entry, f"deny: {text!r}")
        except FormatError as exc:
            raise PolicyError(f"{source}: {exc}") from None
    elif category in BUS:
        try:
            entry = parse_bus_name(entry, f"deny: {text!r}")
        except FormatError as exc:
            raise PolicyError(f"{source}: {exc}") from None
    elif entry not in NAMED[category]:
        from appimg.format.permissions import _nearest

        raise PolicyError(f"{source}: deny: {text!r}: unknown {flag} {entry!r}"
                          f"{_nearest(entry, NAMED[category])}")  # fmt: skip
    return Denial(category, entry, source)


def parse_policy(data: bytes, source: str) -> list[Denial]:
    """The ``deny`` entries of one policy file."""
    import tomllib  # only when there is a policy file: not on every launch

    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from None
    unknown = set(table) - {"deny"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} (only 'deny')")
    values = table.get("deny", [])
    if not isinstance(values, list) or len(values) > MAX_POLICY_ENTRIES:
        raise PolicyError(f"{source}: deny must be a list of at most {MAX_POLICY_ENTRIES}")
    return [parse_denial(value, source) for value in values]


def load_permission_policy(
    dirs: UserDirs,
    *,
    system_dir: Path | None = SYSTEM_PERMISSIONS_DIR,
    user_dir: Path | None = None,
    defaults: bool = True,
) -> PermissionPolicy:
    """The united policy of the shipped defaults, the system's and the user's files.

    ``system_dir`` (None: skip it), ``user_dir`` (None: the one ``dirs`` names) and
    ``defaults`` exist so that tests can point the loader at their own files.
    """
    files = _shipped() if defaults else []
    if system_dir is not None:
        files += read_policy_dir(system_dir)
    files += read_policy_dir(user_dir if user_dir is not None else user_permissions_dir(dirs))
    deny: list[Denial] = []
    for source, data in files:
        deny += parse_policy(data, source)
    return PermissionPolicy(tuple(deny), tuple(source for source, _ in files))
