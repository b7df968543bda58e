"""A change to an app's permissions: the user's stored override, or one run's flags
(spec/permissions.md §3).

The grammar is ``flatpak override``'s: ``--socket=X`` / ``--nosocket=X``,
``--device`` / ``--nodevice``, ``--share`` / ``--unshare``,
``--filesystem=P[:ro|:create]`` / ``--nofilesystem=P``. An :class:`Override`
records, per entry, whether it is granted (True) or revoked (False), and for
filesystems the mode or ``None`` (revoked). Names are checked strictly against
:mod:`appimg.format.permissions`: a typo is an error naming the nearest name.

The user's override of an app is stored at
``$XDG_CONFIG_HOME/appimg/overrides/ID.toml``, Flatpak's override keyfile as
TOML: one list per category, a revocation written with a leading ``!``::

    sockets = ["x11", "!wayland"]
    filesystems = ["xdg-download:ro", "!home"]
    talk = ["org.example.Service", "!org.freedesktop.secrets"]
    search-provider = true

``search-provider`` is not a permission: it is the user's choice to export the app's
search providers (spec/xdg-index.md §3.7), off unless said; :func:`search_provider_on`
reads it and :func:`set_search_provider` changes it.

The file is written atomically (:mod:`appimg.atomic`) and read without following a
symlink, size-capped; a malformed file is a :class:`~appimg.errors.PolicyError`
naming it, never a silently different grant.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from appimg.errors import FormatError, PolicyError, UsageError
from appimg.format.permissions import (
    BUS,
    FLAG_OF,
    NAMED,
    SETS,
    Permissions,
    _nearest,
    parse_bus_name,
    parse_filesystem,
    parse_location,
)
from appimg.host.dirs import UserDirs
from appimg.values import Fields

#: A stored override holds a few dozen entries; anything much larger is not one.
MAX_OVERRIDE_BYTES = 64 << 10

#: ``--FLAG`` -> (category, grants?) for the named categories.
NAMED_FLAGS = {
    "socket": ("sockets", True), "nosocket": ("sockets", False),
    "device": ("devices", True), "nodevice": ("devices", False),
    "share": ("share", True), "unshare": ("share", False),
}  # fmt: skip
#: ``--talk-name`` / ``--no-talk-name`` ... -> (category, grants?) for the bus names.
BUS_FLAGS = {
    flag: (cat, granted)
    for cat in BUS
    for flag, granted in ((FLAG_OF[cat], True), (f"no-{FLAG_OF[cat]}", False))
}
FILESYSTEM_FLAGS = ("filesystem", "nofilesystem")
#: The stored key of ``--search-provider=on|off`` (not a permission: no ``!`` form).
SEARCH_PROVIDER_KEY = "search-provider"
FLAGS = (*NAMED_FLAGS, *BUS_FLAGS, *FILESYSTEM_FLAGS)
_SINGULAR = {"sockets": "socket", "devices": "device", "share": "share",
             **{cat: FLAG_OF[cat] for cat in BUS}}  # fmt: skip


def _revoke_flag(category: str) -> str:
    if category in BUS:
        return f"no-{FLAG_OF[category]}"
    return "unshare" if category == "share" else f"no{_SINGULAR[category]}"


class Override(Fields):
    """A user's grants and revocations over an app's permissions.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    _FIELDS = ("sockets", "devices", "share", "filesystems", "talk", "own", "see",
               "system_talk", "search_provider")  # fmt: skip
    __slots__ = _FIELDS

    def __init__(
        self,
        sockets: dict[str, bool] | None = None,
        devices: dict[str, bool] | None = None,
        share: dict[str, bool] | None = None,
        filesystems: dict[str, str | None] | None = None,
        talk: dict[str, bool] | None = None,
        own: dict[str, bool] | None = None,
        see: dict[str, bool] | None = None,
        system_talk: dict[str, bool] | None = None,
        search_provider: bool | None = None,
    ) -> None:
        self.sockets = {} if sockets is None else sockets
        self.devices = {} if devices is None else devices
        self.share = {} if share is None else share
        #: location -> mode, or None for ``--nofilesystem``
        self.filesystems = {} if filesystems is None else filesystems
        self.talk = {} if talk is None else talk
        self.own = {} if own is None else own
        self.see = {} if see is None else see
        self.system_talk = {} if system_talk is None else system_talk
        #: ``--search-provider=on|off``: export the app's search providers; None: not
        #: said (off)
        self.search_provider = search_provider

    def changes(self, category: str) -> dict[str, bool]:
        """The grants (True) and revocations (False) of a category of :data:`SETS`."""
        return getattr(self, category.replace("-", "_"))

    def __bool__(self) -> bool:
        return bool(self.filesystems or any(self.changes(cat) for cat in SETS)
                    or self.search_provider is not None)  # fmt: skip

    def apply(self, base: Permissions) -> Permissions:
        """``base`` with this override's grants added and its revocations removed."""
        named = {}
        for category in SETS:
            changes = self.changes(category)
            names = set(base.names(category))
            names |= {n for n, granted in changes.items() if granted}
            names -= {n for n, granted in changes.items() if not granted}
            named[category] = frozenset(names)
        filesystems = dict(base.filesystems)
        for location, mode in self.filesystems.items():
            if mode is None:
                filesystems.pop(location, None)
            else:
                filesystems[location] = mode
        return Permissions.of_sets(named, filesystems)

    def merged(self, later: Override) -> Override:
        """This override with ``later``'s entries on top (the later one wins per entry)."""
        merged = Override(filesystems={**self.filesystems, **later.filesystems})
        merged.search_provider = (self.search_provider if later.search_provider is None
                                  else later.search_provider)  # fmt: skip
        for category in SETS:
            merged.changes(category).update({**self.changes(category),
                                             **later.changes(category)})  # fmt: skip
        return merged

    def flags(self) -> list[str]:
        """The override as command-line flags, in a stable order (``--nosocket=x11``, ...)."""
        out = []
        for category, singular in _SINGULAR.items():
            for name, granted in sorted(self.changes(category).items()):
                flag = singular if granted else _revoke_flag(category)
                out.append(f"--{flag}={name}")
        for location, mode in sorted(self.filesystems.items()):
            if mode is None:
                out.append(f"--nofilesystem={location}")
            else:
                out.append(f"--filesystem={location}" + ("" if mode == "rw" else f":{mode}"))
        if self.search_provider is not None:
            out.append(f"--search-provider={'on' if self.search_provider else 'off'}")
        return out

    def to_table(self) -> dict[str, list[str] | bool]:
        """The stored form: per category, entries with ``!`` for revocations; and
        ``search-provider``, a boolean, if the user said."""
        table: dict[str, list[str] | bool] = {}
        for category in SETS:
            items = sorted(self.changes(category).items())
            if items:
                table[category] = [n if granted else f"!{n}" for n, granted in items]
        if self.filesystems:
            table["filesystems"] = [
                f"!{loc}" if mode is None else (loc if mode == "rw" else f"{loc}:{mode}")
                for loc, mode in sorted(self.filesystems.items())
            ]
        if self.search_provider is not None:
            table[SEARCH_PROVIDER_KEY] = self.search_provider
        return table


# --- the flag grammar ---------------------------------------------------------------------


def _check_name(category: str, name: str, where: str, error: type[Exception]) -> str:
    known = NAMED[category]
    if name not in known:
        raise error(f"{where}: unknown {_SINGULAR[category]} {name!r}{_nearest(name, known)} "
                    f"(known: {', '.join(known)})")  # fmt: skip
    return name


def add_change(override: Override, flag: str, value: str, *,
               error: type[Exception] = UsageError, where: str | None = None) -> None:  # fmt: skip
    """Record ``--FLAG=VALUE`` in ``override`` (a later change of an entry wins)."""
    where = where or f"--{flag}={value}"
    if flag in NAMED_FLAGS:
        category, granted = NAMED_FLAGS[flag]
        getattr(override, category)[_check_name(category, value, where, error)] = granted
        return
    try:
        if flag in BUS_FLAGS:
            category, granted = BUS_FLAGS[flag]
            # Any name, own included: the user decides (an image's own is checked at pack).
            override.changes(category)[parse_bus_name(value, where)] = granted
        elif flag == "filesystem":
            entry = parse_filesystem(value, where)
            override.filesystems[entry.location] = entry.mode
        elif flag == "nofilesystem":
            override.filesystems[parse_location(value, where)] = None
        else:
            raise error(f"unknown option --{flag}")
    except FormatError as exc:
        raise error(str(exc)) from None


def from_flags(changes: Iterable[tuple[str, str]]) -> Override:
    """An :class:`Override` from ``(flag, value)`` pairs in command-line order,
    e.g. ``[("socket", "x11"), ("nofilesystem", "home")]``; bad names: UsageError."""
    override = Override()
    for flag, value in changes:
        add_change(override, flag, value)
    return override


def from_table(table: object, source: str) -> Override:
    """The stored form back into an :class:`Override`; anything wrong: PolicyError."""
    if not isinstance(table, dict):
        raise PolicyError(f"{source}: not a table")
    unknown = set(table) - {*SETS, "filesystems", SEARCH_PROVIDER_KEY}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    override = Override()
    table = dict(table)
    if SEARCH_PROVIDER_KEY in table:
        choice = table.pop(SEARCH_PROVIDER_KEY)
        if not isinstance(choice, bool):
            raise PolicyError(f"{source}: {SEARCH_PROVIDER_KEY} must be true or false")
        override.search_provider = choice
    for category, values in table.items():
        if not isinstance(values, list) or len(values) > 1024:
            raise PolicyError(f"{source}: {category} must be a list of at most 1024 entries")
        for value in values:
            if not isinstance(value, str) or value in ("", "!"):
                raise PolicyError(f"{source}: {category}: {value!r} is not an entry")
            granted = not value.startswith("!")
            entry = value if granted else value[1:]
            if category == "filesystems":
                flag = "filesystem" if granted else "nofilesystem"
            else:
                flag = _SINGULAR[category] if granted else _revoke_flag(category)
            add_change(override, flag, entry, error=PolicyError,
                       where=f"{source}: {category}: {value!r}")  # fmt: skip
    return override


# --- storage -------------------------------------------------------------------------------


def check_app_id(app_id: str) -> str:
    """An app id fit to name a file: checked before any path is built from it."""
    from appimg.format.manifest import validate_app_id

    try:
        return validate_app_id(app_id)
    except FormatError as exc:
        raise UsageError(str(exc)) from None


def overrides_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "overrides"


def override_file(dirs: UserDirs, app_id: str) -> Path:
    return overrides_dir(dirs) / f"{check_app_id(app_id)}.toml"


def _open_dir(dirs: UserDirs, *, create: bool) -> int | None:
    """A descriptor of the overrides directory, no component below the config home followed."""
    from appimg.atomic import open_dirs

    if create:
        dirs.config_home.mkdir(parents=True, exist_ok=True)
    try:
        return open_dirs(dirs.config_home, ["appimg", "overrides"], create=create)
    except FileNotFoundError:
        return None
    except OSError as exc:
        where = overrides_dir(dirs)
        raise PolicyError(f"{where}: cannot open the overrides: {exc.strerror}") from None


def load(dirs: UserDirs, app_id: str) -> Override:
    """The user's stored override of ``app_id`` (empty if there is none)."""
    path = override_file(dirs, app_id)
    if not dirs.config_home.is_dir():
        return Override()
    fd = _open_dir(dirs, create=False)
    if fd is None:
        return Override()
    try:
        try:
            file_fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                              | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
        except FileNotFoundError:
            return Override()
        except OSError as exc:
            why = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise PolicyError(f"{path}: cannot read the override: {why}") from None
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise PolicyError(f"{path}: cannot read the override: not a regular file")
        data = handle.read(MAX_OVERRIDE_BYTES + 1)
    if len(data) > MAX_OVERRIDE_BYTES:
        raise PolicyError(f"{path}: larger than {MAX_OVERRIDE_BYTES} bytes: not an override")
    import tomllib  # only when there is an override: not on every launch

    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: invalid TOML: {exc}") from None
    return from_table(table, str(path))


def dumps(override: Override, app_id: str) -> bytes:
    import json

    lines = [f"# appimg override {app_id} (spec/permissions.md); '!' revokes.\n"]
    for key, values in override.to_table().items():
        if isinstance(values, bool):
            lines.append(f"{key} = {json.dumps(values)}\n")
        else:
            lines.append(f"{key} = [{', '.join(json.dumps(v) for v in values)}]\n")
    return "".join(lines).encode()


def save(dirs: UserDirs, app_id: str, override: Override) -> Path:
    """Store ``override`` as the user's override of ``app_id`` (atomically); an empty
    one removes the file."""
    from appimg.atomic import replace_file_at

    path = override_file(dirs, app_id)
    if not override:
        reset(dirs, app_id)
        return path
    fd = _open_dir(dirs, create=True)
    assert fd is not None
    try:
        replace_file_at(fd, path.name, dumps(override, app_id), 0o644)
    finally:
        os.close(fd)
    return path


def reset(dirs: UserDirs, app_id: str) -> bool:
    """Remove the user's override of ``app_id``; whether there was one."""
    path = override_file(dirs, app_id)
    if not dirs.config_home.is_dir():
        return False
    fd = _open_dir(dirs, create=False)
    if fd is None:
        return False
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=fd)  # a symlink is removed, not followed
            os.fsync(fd)
            return True
        return False
    finally:
        os.close(fd)


# --- search providers ----------------------------------------------------------------------


def parse_search_provider(value: str) -> bool:
    """``--search-provider=on|off``."""
    if value not in ("on", "off"):
        raise UsageError(f"--search-provider={value}: must be on or off")
    return value == "on"


def search_provider_on(dirs: UserDirs, app_id: str) -> bool:
    """Has the user enabled the search providers of ``app_id``? (Off unless they said so.)"""
    return load(dirs, app_id).search_provider is True


def set_search_provider(dirs: UserDirs, app_id: str, on: bool) -> Path:
    """Store the user's choice for the search providers of ``app_id``, keeping the rest of
    the override; ``off`` is recorded as said (``search-provider = false``)."""
    change = Override(search_provider=on)
    return save(dirs, app_id, load(dirs, app_id).merged(change))
