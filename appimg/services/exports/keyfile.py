"""Desktop Entry key files: strict parsing, canonical writing (spec/xdg-index.md §Desktop entries).

The format is the one of the Desktop Entry Specification 1.5 §Basic format,
shared by D-Bus service files: ``[Group]`` headers, ``Key=Value`` or
``Key[locale]=Value`` lines, ``#`` comments. Parsing is stricter than GLib on
purpose: anything GLib or desktop-file-validate would read differently from us
(duplicate groups or keys, bytes that are not UTF-8, control characters, a key
before the first group) is refused, so what we rewrite is what the desktop runs.
Values are kept raw (still escaped); :func:`unescape` decodes a string value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appimg.services.exports import Refused

MAX_GROUPS = 64
MAX_KEYS_PER_GROUP = 512
_KEY = re.compile(r"[A-Za-z0-9-]+(\[[A-Za-z0-9_.@-]+\])?\Z")
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


@dataclass
class Group:
    name: str
    entries: list[tuple[str, str]] = field(default_factory=list)  # (key, raw value)

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None

    def set(self, key: str, raw: str) -> None:
        """Replace the value of ``key`` in place, or append the key."""
        for i, (k, _) in enumerate(self.entries):
            if k == key:
                self.entries[i] = (key, raw)
                return
        self.entries.append((key, raw))

    def remove(self, key: str, *, localized: bool = False) -> None:
        """Drop ``key`` (and its ``key[locale]`` variants if ``localized``)."""
        self.entries = [
            (k, v)
            for k, v in self.entries
            if k != key and not (localized and k.startswith(key + "["))
        ]


@dataclass
class KeyFile:
    groups: list[Group]

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def dump(self) -> bytes:
        parts = []
        for i, g in enumerate(self.groups):
            if i:
                parts.append("")
            parts.append(f"[{g.name}]")
            parts.extend(f"{k}={v}" for k, v in g.entries)
        return ("\n".join(parts) + "\n").encode()


def parse(data: bytes) -> KeyFile:
    """Parse a key file; raise :class:`Refused` with the reason if it is not well-formed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(f"not UTF-8 (byte {exc.start})") from None
    groups: list[Group] = []
    names: set[str] = set()
    keys: set[str] = set()
    for number, line in enumerate(text.split("\n"), 1):
        if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in line):
            raise Refused(f"line {number}: control character")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or any(c in "[]" for c in stripped[1:-1]):
                raise Refused(f"line {number}: malformed group header")
            name = stripped[1:-1]
            if not name or name in names:
                raise Refused(f"line {number}: empty or duplicate group [{name}]")
            if len(groups) >= MAX_GROUPS:
                raise Refused(f"more than {MAX_GROUPS} groups")
            names.add(name)
            groups.append(Group(name))
            keys = set()
            continue
        key, sep, value = stripped.partition("=")
        key = key.rstrip()
        if not sep or not _KEY.match(key):
            raise Refused(f"line {number}: not a Key=Value line")
        if not groups:
            raise Refused(f"line {number}: key before the first group")
        if key in keys:
            raise Refused(f"line {number}: duplicate key {key} in [{groups[-1].name}]")
        if len(keys) >= MAX_KEYS_PER_GROUP:
            raise Refused(f"more than {MAX_KEYS_PER_GROUP} keys in [{groups[-1].name}]")
        keys.add(key)
        groups[-1].entries.append((key, value.lstrip()))
    if not groups:
        raise Refused("no group")
    return KeyFile(groups)


def unescape(raw: str) -> str:
    """A ``string``/``localestring`` value: ``\\s \\n \\t \\r \\\\`` decoded.

    Unknown escapes are refused: GLib and desktop-file-validate disagree on them.
    """
    if "\\" not in raw:
        return raw
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 >= len(raw) or raw[i + 1] not in _ESCAPES:
                raise Refused(f"invalid escape sequence in {raw!r}")
            out.append(_ESCAPES[raw[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def escape(value: str) -> str:
    """The raw form of a string value (the inverse of :func:`unescape`)."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    out = out.replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\s" + out[1:]
    return out


def boolean(raw: str | None) -> bool:
    return raw == "true"
