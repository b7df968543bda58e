"""The ``permissions`` of a manifest: what host API an app asks for (spec/manifest.md).

The vocabulary is Flatpak's (``flatpak build-finish --socket=... --device=...
--share=... --filesystem=...``), so that packagers and users already know it.
This module only names and checks permissions; what each one opens in the
sandbox is :mod:`appimg.services.run.grants`, and who may change them is
:mod:`appimg.host.permission_policy` and :mod:`appimg.host.overrides`.

Two readings of the same table:

* **authoring** (``strict=True``, ``appimg pack``): every name must be known;
  a typo is an error with the nearest known name;
* **reading an image** (``strict=False``): permissions are *ancillary*
  (spec/README.md, "Feature compatibility"): a name this reader does not know
  is left out (the app gets less, never more) and reported, so an image
  packed by a newer appimg still runs here.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, NamedTuple

from appimg.errors import FormatError
from appimg.format.limits import MAX_LIST_ITEMS, MAX_STRING_LENGTH
from appimg.values import FrozenFields

SOCKETS = ("x11", "wayland", "fallback-x11", "pulseaudio", "pipewire", "ssh-auth", "pcsc", "cups",
           "session-bus", "system-bus")  # fmt: skip
DEVICES = ("dri", "kvm", "input", "usb", "all")
SHARES = ("network", "ipc")
#: Categories of the table whose entries are plain names.
NAMED = {"sockets": SOCKETS, "devices": DEVICES, "share": SHARES}
#: Categories whose entries are D-Bus names (spec/run.md, "D-Bus"): names the app may
#: call on the session bus, own there, only see, and call on the system bus.
BUS = ("talk", "own", "see", "system-talk")
#: Every category held as a set of names.
SETS = (*NAMED, *BUS)
#: Keys of the table this reader knows; others are a newer appimg's (ignored when reading).
KEYS = (*NAMED, *BUS, "filesystems")
#: The sockets that give a whole bus, unfiltered: flagged by install and permissions.
DANGEROUS_SOCKETS = ("session-bus", "system-bus")
DANGER = "dangerous: the whole bus, unfiltered"
#: The longest D-Bus name (the D-Bus specification's limit).
MAX_BUS_NAME = 255
_BUS_ELEMENT = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*\Z")
#: Well-known names an app may own without asking (``MPRIS``: media players' remotes).
SHARED_OWN_PREFIXES = ("org.mpris.MediaPlayer2.",)

#: ``xdg-NAME`` locations that are the user's folders of ``user-dirs.dirs``.
XDG_USER_DIRS = {
    "xdg-desktop": "DESKTOP", "xdg-documents": "DOCUMENTS", "xdg-download": "DOWNLOAD",
    "xdg-music": "MUSIC", "xdg-pictures": "PICTURES", "xdg-public-share": "PUBLICSHARE",
    "xdg-templates": "TEMPLATES", "xdg-videos": "VIDEOS",
}  # fmt: skip
#: ``xdg-NAME/PATH`` locations below an XDG base directory; a PATH is required.
XDG_BASE_DIRS = ("xdg-config", "xdg-data", "xdg-cache", "xdg-run")
#: Whole-system locations.
SPECIAL = ("home", "host", "host-os", "host-etc")
#: Access suffixes: ``:rw`` (the default), ``:ro``, ``:create`` (rw, created if missing).
MODES = ("rw", "ro", "create")
#: How much a mode grants, to tell a widening update from a narrowing one.
MODE_RANK = {"ro": 0, "rw": 1, "create": 2}

_SEGMENT = re.compile(r"[^\x00-\x1f\x7f]+\Z")


# A NamedTuple, not a frozen dataclass: defined at import on the launch path, it
# costs ~70 us instead of ~500 us.
class Filesystem(NamedTuple):
    """One ``filesystems`` entry: a location and its access mode."""

    location: str
    mode: str = "rw"

    def __str__(self) -> str:
        return self.location if self.mode == "rw" else f"{self.location}:{self.mode}"


class Permissions(FrozenFields):
    """A set of permissions; the empty value grants nothing.

    Immutable, compared by value, hashed by its sets (not ``filesystems``, a dict). A
    plain class, not a frozen dataclass: importing dataclasses costs every launch ~5 ms.
    """

    _FIELDS = ("sockets", "devices", "share", "filesystems", "talk", "own", "see", "system_talk")
    __slots__ = _FIELDS
    sockets: frozenset[str]
    devices: frozenset[str]
    share: frozenset[str]
    #: location -> mode
    filesystems: dict[str, str]
    #: D-Bus names (``org.example.Service`` or ``org.example.*``) per bus category
    talk: frozenset[str]
    own: frozenset[str]
    see: frozenset[str]
    system_talk: frozenset[str]

    def __init__(
        self,
        sockets: frozenset[str] = frozenset(),
        devices: frozenset[str] = frozenset(),
        share: frozenset[str] = frozenset(),
        filesystems: dict[str, str] | None = None,
        talk: frozenset[str] = frozenset(),
        own: frozenset[str] = frozenset(),
        see: frozenset[str] = frozenset(),
        system_talk: frozenset[str] = frozenset(),
    ) -> None:
        self._set(sockets=sockets, devices=devices, share=share,
                  filesystems={} if filesystems is None else filesystems, talk=talk, own=own,
                  see=see, system_talk=system_talk)  # fmt: skip

    def __hash__(self) -> int:
        return hash((self.sockets, self.devices, self.share, self.talk, self.own, self.see,
                     self.system_talk))  # fmt: skip

    def names(self, category: str) -> frozenset[str]:
        return getattr(self, category.replace("-", "_"))

    @staticmethod
    def of_sets(sets: dict[str, frozenset[str]], filesystems: dict[str, str]) -> Permissions:
        """A value from ``{category: names}`` (categories of :data:`SETS`)."""
        return Permissions(filesystems=filesystems,
                           **{cat.replace("-", "_"): frozenset(names)
                              for cat, names in sets.items()})  # fmt: skip

    def entries(self) -> list[tuple[str, str]]:
        """(category, entry) of every permission, in a stable order."""
        out = [(cat, name) for cat in SETS for name in sorted(self.names(cat))]
        out += [("filesystems", str(Filesystem(loc, mode)))
                for loc, mode in sorted(self.filesystems.items())]  # fmt: skip
        return out

    def to_manifest(self) -> dict[str, list[str]]:
        """The manifest's ``permissions`` value: sorted lists, empty ones left out."""
        table: dict[str, list[str]] = {}
        for category in SETS:
            if self.names(category):
                table[category] = sorted(self.names(category))
        if self.filesystems:
            table["filesystems"] = [str(Filesystem(loc, mode))
                                    for loc, mode in sorted(self.filesystems.items())]  # fmt: skip
        return table

    def widened_by(self, other: Permissions) -> list[str]:
        """What ``other`` grants beyond this set, as ``category=entry`` lines."""
        new = [f"{FLAG_OF[cat]}={name}"
               for cat in SETS for name in sorted(other.names(cat) - self.names(cat))]  # fmt: skip
        for location, mode in sorted(other.filesystems.items()):
            mine = self.filesystems.get(location)
            if mine is None or MODE_RANK[mode] > MODE_RANK[mine]:
                new.append(f"filesystem={Filesystem(location, mode)}")
        return new

    def __bool__(self) -> bool:
        return bool(self.filesystems or any(self.names(cat) for cat in SETS))

    def dangers(self) -> list[str]:
        """``socket=NAME: dangerous: ...`` of each unfiltered bus granted."""
        return [f"socket={name}: {DANGER}" for name in DANGEROUS_SOCKETS if name in self.sockets]


#: Flatpak's flag spelling of each category (``--socket=``, ``--talk-name=``, ...).
FLAG_OF = {"sockets": "socket", "devices": "device", "share": "share", "filesystems": "filesystem",
           "talk": "talk-name", "own": "own-name", "see": "see-name",
           "system-talk": "system-talk-name"}  # fmt: skip


def parse_bus_name(text: object, key: str) -> str:
    """A D-Bus well-known name, or Flatpak's ``PREFIX.*`` (every name below PREFIX).

    Two or more dot-separated elements of ``[A-Za-z0-9_-]``, none starting with a
    digit, at most 255 characters; ``*`` only as a whole last element. Unique
    names (``:1.42``) and a bare ``*`` are refused: they would name every app.
    """
    if not isinstance(text, str) or not text:
        raise FormatError(f"{key}: must be a non-empty string")
    if len(text) > MAX_BUS_NAME:
        raise FormatError(f"{key}: a D-Bus name is at most {MAX_BUS_NAME} characters")
    name = text[:-2] if text.endswith(".*") else text
    elements = name.split(".")
    if len(elements) < 2 or not all(_BUS_ELEMENT.match(e) for e in elements):
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise FormatError(f"{key}: {shown!r} is not a D-Bus name (org.example.Name, or "
                          "org.example.* for every name below org.example)")  # fmt: skip
    return text


def bus_name_covers(pattern: str, name: str) -> bool:
    """Does ``pattern`` (a name or ``PREFIX.*``) cover ``name`` (a name or a pattern)?"""
    if pattern == name:
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]  # keeps the dot
        return name.startswith(prefix)
    return False


def own_refusal(name: str, app_id: str) -> str | None:
    """Why an image may not ask to own ``name`` (None: it may).

    An app owns its id and the names below it without asking, and a media
    player's ``org.mpris.MediaPlayer2.NAME``; any other name is a service of the
    host's or of another app's, which owning would take over. Only the user
    (``appimg override --own-name``) grants one.
    """
    if bus_name_covers(f"{app_id}.*", name) or name == app_id:
        return None
    if any(name.startswith(p) and name != p + "*" for p in SHARED_OWN_PREFIXES):
        return None
    return (f"{name!r} is neither the app's id {app_id} nor below it: owning it would take "
            "over another app's or the host's service (a user may grant it: "
            "appimg override --own-name)")  # fmt: skip


def _nearest(name: str, known: tuple[str, ...]) -> str:
    import difflib  # only for an error message

    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_location(text: str, key: str) -> str:
    """Check the location part of a ``filesystems`` entry; return it normalised.

    ``home``, ``host``, ``host-os``, ``host-etc``; ``xdg-download`` and the other
    user folders, optionally with ``/PATH`` below them; ``xdg-config/PATH`` and
    the other base directories (PATH required); ``~/PATH``; ``/ABSOLUTE/PATH``.
    PATH never holds ``.``, ``..`` or empty components.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_STRING_LENGTH:
        raise FormatError(f"{key}: must be a non-empty string")
    if text in SPECIAL:
        return text
    if text.startswith("/"):
        head, rest = "", text[1:]
    elif text.startswith("~/"):
        head, rest = "~", text[2:]
    else:
        head, _, rest = text.partition("/")
        if head not in XDG_USER_DIRS and head not in XDG_BASE_DIRS:
            known = (*SPECIAL, *XDG_USER_DIRS, *XDG_BASE_DIRS)
            raise FormatError(f"{key}: unknown location {head!r}{_nearest(head, known)}")
        if head in XDG_BASE_DIRS and not rest:
            raise FormatError(f"{key}: {head} needs a path below it ({head}/NAME)")
        if not rest:
            return head
    parts = rest.rstrip("/").split("/")
    if not rest.rstrip("/") or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise FormatError(f"{key}: {text!r} must name a path without '.', '..' or empty parts")
    normal = posixpath.join("/" if head == "" else head, *parts)
    return normal


def parse_filesystem(text: object, key: str) -> Filesystem:
    """``LOCATION`` or ``LOCATION:MODE``."""
    if not isinstance(text, str):
        raise FormatError(f"{key}: must be a string")
    location, sep, mode = text.rpartition(":")
    if not sep or "/" in mode:
        location, mode = text, "rw"
    if mode not in MODES:
        raise FormatError(f"{key}: unknown access {mode!r} (one of :ro, :rw, :create)")
    return Filesystem(parse_location(location, key), mode)


def _entries(value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{key}: must be a list")
    if len(value) > MAX_LIST_ITEMS:
        raise FormatError(f"{key}: more than {MAX_LIST_ITEMS} entries")
    return value


def parse(value: object, *, strict: bool,
          app_id: str | None = None) -> tuple[Permissions, list[str]]:  # fmt: skip
    """The ``permissions`` table -> (the permissions, what was not understood).

    ``strict`` (authoring) raises :class:`FormatError` on anything unknown;
    otherwise unknown keys and names are returned as ``permissions.KEY: NAME``
    notes and grant nothing. Wrong types are an error either way. With ``app_id``,
    an ``own`` name of another's (:func:`own_refusal`) is refused the same way.
    """
    if value is None:
        return Permissions(), []
    if not isinstance(value, dict):
        raise FormatError("permissions: must be a table")
    ignored: list[str] = []
    for key in sorted(set(value) - set(KEYS)):
        if strict:
            raise FormatError(f"permissions: unknown key {key!r}{_nearest(key, KEYS)}")
        ignored.append(f"permissions.{key}")
    named: dict[str, frozenset[str]] = {}
    for category, known in NAMED.items():
        names = set()
        for index, name in enumerate(_entries(value.get(category, []), f"permissions.{category}")):
            if not isinstance(name, str) or not name:
                raise FormatError(f"permissions.{category}[{index}]: must be a non-empty string")
            if name in known:
                names.add(name)
            elif strict:
                raise FormatError(
                    f"permissions.{category}: unknown {category.rstrip('s')} {name!r}"
                    f"{_nearest(name, known)} (known: {', '.join(known)})"
                )
            else:
                ignored.append(f"permissions.{category}: {name[:64]}")
        named[category] = frozenset(names)
    for category in BUS:
        names = set()
        for index, name in enumerate(_entries(value.get(category, []), f"permissions.{category}")):
            key = f"permissions.{category}[{index}]"
            try:
                parse_bus_name(name, key)
                why = own_refusal(name, app_id) if category == "own" and app_id else None
                if why:
                    raise FormatError(f"{key}: {why}")
            except FormatError:
                if strict or not isinstance(name, str) or not name:
                    raise
                ignored.append(f"permissions.{category}: {name[:64]}")
                continue
            names.add(name)
        named[category] = frozenset(names)
    filesystems: dict[str, str] = {}
    entries = _entries(value.get("filesystems", []), "permissions.filesystems")
    for index, text in enumerate(entries):
        key = f"permissions.filesystems[{index}]"
        try:
            entry = parse_filesystem(text, key)
        except FormatError:
            if strict or not isinstance(text, str):
                raise
            ignored.append(f"permissions.filesystems: {text[:64]}")
            continue
        previous = filesystems.get(entry.location)
        if previous is None or MODE_RANK[entry.mode] > MODE_RANK[previous]:
            filesystems[entry.location] = entry.mode
    return Permissions.of_sets(named, filesystems), ignored


def of_manifest(manifest: dict[str, Any]) -> Permissions:
    """The permissions a (validated) manifest asks for; unknown names grant nothing."""
    app_id = manifest.get("id")
    return parse(manifest.get("permissions"), strict=False,
                 app_id=app_id if isinstance(app_id, str) else None)[0]  # fmt: skip
