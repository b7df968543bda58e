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
from dataclasses import dataclass, field
from typing import Any

from appimg.errors import FormatError
from appimg.format.limits import MAX_LIST_ITEMS, MAX_STRING_LENGTH

SOCKETS = ("x11", "wayland", "fallback-x11", "pulseaudio", "pipewire", "ssh-auth", "pcsc", "cups")
DEVICES = ("dri", "kvm", "input", "usb", "all")
SHARES = ("network", "ipc")
#: Categories of the table whose entries are plain names.
NAMED = {"sockets": SOCKETS, "devices": DEVICES, "share": SHARES}
#: Keys of the table this reader knows; others are a newer appimg's (ignored when reading).
KEYS = (*NAMED, "filesystems")

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


@dataclass(frozen=True, order=True)
class Filesystem:
    """One ``filesystems`` entry: a location and its access mode."""

    location: str
    mode: str = "rw"

    def __str__(self) -> str:
        return self.location if self.mode == "rw" else f"{self.location}:{self.mode}"


@dataclass(frozen=True)
class Permissions:
    """A set of permissions; the empty value grants nothing."""

    sockets: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    share: frozenset[str] = frozenset()
    #: location -> mode
    filesystems: dict[str, str] = field(default_factory=dict, hash=False)

    def names(self, category: str) -> frozenset[str]:
        return getattr(self, category)

    def entries(self) -> list[tuple[str, str]]:
        """(category, entry) of every permission, in a stable order."""
        out = [(cat, name) for cat in NAMED for name in sorted(self.names(cat))]
        out += [("filesystems", str(Filesystem(loc, mode)))
                for loc, mode in sorted(self.filesystems.items())]  # fmt: skip
        return out

    def to_manifest(self) -> dict[str, list[str]]:
        """The manifest's ``permissions`` value: sorted lists, empty ones left out."""
        table: dict[str, list[str]] = {}
        for category in NAMED:
            if self.names(category):
                table[category] = sorted(self.names(category))
        if self.filesystems:
            table["filesystems"] = [str(Filesystem(loc, mode))
                                    for loc, mode in sorted(self.filesystems.items())]  # fmt: skip
        return table

    def widened_by(self, other: Permissions) -> list[str]:
        """What ``other`` grants beyond this set, as ``category=entry`` lines."""
        new = [f"{cat[:-1] if cat != 'share' else cat}={name}"
               for cat in NAMED for name in sorted(other.names(cat) - self.names(cat))]  # fmt: skip
        for location, mode in sorted(other.filesystems.items()):
            mine = self.filesystems.get(location)
            if mine is None or MODE_RANK[mode] > MODE_RANK[mine]:
                new.append(f"filesystem={Filesystem(location, mode)}")
        return new

    def __bool__(self) -> bool:
        return bool(self.sockets or self.devices or self.share or self.filesystems)


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


def parse(value: object, *, strict: bool) -> tuple[Permissions, list[str]]:
    """The ``permissions`` table -> (the permissions, what was not understood).

    ``strict`` (authoring) raises :class:`FormatError` on anything unknown;
    otherwise unknown keys and names are returned as ``permissions.KEY: NAME``
    notes and grant nothing. Wrong types are an error either way.
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
    permissions = Permissions(
        sockets=named["sockets"], devices=named["devices"], share=named["share"],
        filesystems=filesystems,
    )  # fmt: skip
    return permissions, ignored


def of_manifest(manifest: dict[str, Any]) -> Permissions:
    """The permissions a (validated) manifest asks for; unknown names grant nothing."""
    return parse(manifest.get("permissions"), strict=False)[0]
