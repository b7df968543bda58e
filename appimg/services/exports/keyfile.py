"""Desktop Entry key files: the one parser, and canonical writing
(spec/xdg-index.md §3.1 Desktop entries, §9 Enumerating applications).

The format is the one of the Desktop Entry Specification 1.5 §Basic format,
shared by D-Bus service files: ``[Group]`` headers, ``Key=Value`` or
``Key[locale]=Value`` lines, ``#`` comments. :func:`parse_keyfile` reads it in
two modes:

* strict (the export rules): stricter than GLib on purpose: anything GLib or
  desktop-file-validate would read differently from us (duplicate groups or
  keys, bytes that are not UTF-8, control characters, a key before the first
  group) is refused, so what we rewrite is what the desktop runs;
* lenient (``appimg apps``, which reads a thousand host entries): reads what
  GLib reads and never refuses; lines it cannot use are skipped, and with
  ``first_group_only`` and ``keys`` it stops after the first group and keeps
  only the keys asked for.

Values are kept raw (still escaped); :func:`unescape` decodes a string value.
Only cheap imports here (no dataclasses): ``appimg apps`` imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from appimg.services.exports import Refused

MAX_GROUPS = 64
MAX_KEYS_PER_GROUP = 512
_KEY = re.compile(r"[A-Za-z0-9-]+(\[[A-Za-z0-9_.@-]+\])?\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class Group:
    """One ``[name]`` group: its entries in file order, values raw."""

    __slots__ = ("entries", "name")

    def __init__(self, name: str, entries: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.entries = entries if entries is not None else []  # (key, raw value)

    def __repr__(self) -> str:
        return f"Group({self.name!r}, {self.entries!r})"

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

    def remove(self, key: str) -> None:
        self.entries = [(k, v) for k, v in self.entries if k != key]


class KeyFile:
    __slots__ = ("groups",)

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups

    def __repr__(self) -> str:
        return f"KeyFile({self.groups!r})"

    def dump(self) -> bytes:
        parts = []
        for i, g in enumerate(self.groups):
            if i:
                parts.append("")
            parts.append(f"[{g.name}]")
            parts.extend(f"{k}={v}" for k, v in g.entries)
        return ("\n".join(parts) + "\n").encode()


def parse_keyfile(
    data: bytes,
    *,
    strict: bool = True,
    first_group_only: bool = False,
    keys: Collection[str] | None = None,
) -> KeyFile:
    """Parse a key file.

    Strict: raise :class:`Refused` with the reason if it is not well-formed.
    Lenient (``strict=False``): bytes that are not UTF-8 or a key before the
    first group give a key file without groups (GLib cannot load it either);
    lines that are not ``Key=Value`` are skipped, a duplicate key is kept
    (the last one wins for a reader that builds a dict). ``first_group_only``
    stops at the second group header; ``keys`` keeps only those keys.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not strict:
            return KeyFile([])
        raise Refused(f"not UTF-8 (byte {exc.start})") from None
    groups: list[Group] = []
    names: set[str] = set()
    seen: set[str] = set()
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if strict and _CONTROL.search(line):
            raise Refused(f"line {number}: control character")
        stripped = line.strip()
        if not stripped or stripped[0] == "#":
            continue
        if stripped[0] == "[":
            if first_group_only and groups:
                break
            name = stripped[1:-1] if stripped[-1] == "]" else stripped
            if strict:
                if stripped[-1] != "]" or "[" in name or "]" in name:
                    raise Refused(f"line {number}: malformed group header")
                if not name or name in names:
                    raise Refused(f"line {number}: empty or duplicate group [{name}]")
                if len(groups) >= MAX_GROUPS:
                    raise Refused(f"more than {MAX_GROUPS} groups")
                names.add(name)
                seen = set()
            groups.append(Group(name))
            entries = groups[-1].entries
            continue
        key, sep, value = stripped.partition("=")
        key = key.rstrip()
        if strict:
            if not sep or not _KEY.match(key):
                raise Refused(f"line {number}: not a Key=Value line")
            if not groups:
                raise Refused(f"line {number}: key before the first group")
            if key in seen:
                raise Refused(f"line {number}: duplicate key {key} in [{groups[-1].name}]")
            if len(seen) >= MAX_KEYS_PER_GROUP:
                raise Refused(f"more than {MAX_KEYS_PER_GROUP} keys in [{groups[-1].name}]")
            seen.add(key)
        elif not groups:
            return KeyFile([])
        elif not sep:
            continue
        if keys is None or key in keys:
            entries.append((key, value.lstrip()))
    if strict and not groups:
        raise Refused("no group")
    return KeyFile(groups)


def unescape(raw: str, *, strict: bool = True) -> str:
    """A ``string``/``localestring`` value: ``\\s \\n \\t \\r \\\\`` decoded.

    Strict: unknown escapes are refused (GLib and desktop-file-validate disagree
    on them). Lenient: an unknown escape stands for the character after the
    backslash, and a backslash at the end stays.
    """
    if "\\" not in raw:
        return raw
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            decoded = _ESCAPES.get(raw[i + 1])
            if decoded is None:
                if strict:
                    raise Refused(f"invalid escape sequence in {raw!r}")
                decoded = raw[i + 1]
            out.append(decoded)
            i += 2
            continue
        if c == "\\" and strict:
            raise Refused(f"invalid escape sequence in {raw!r}")
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
