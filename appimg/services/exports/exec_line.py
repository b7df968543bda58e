"""``Exec`` lines: parse by the Desktop Entry Specification and rewrite (spec/xdg-index.md §Exec).

Spec §The Exec key: arguments are separated by spaces; an argument holding a
reserved character must be enclosed in double quotes, inside which ``"``, `````,
``$`` and ``\\`` are escaped with a backslash; ``%`` starts a field code.
A line that breaks these rules (a shell metacharacter outside quotes, a quote
that does not close, an unknown field code) is refused: some launchers hand
Exec to ``sh -c``, so an unquoted ``;`` or ``$(...)`` would be a command.

An :class:`Arg` keeps its text decoded from the quoting but with ``%``
sequences exactly as written (``%%``, ``%U``), so field codes survive the
rewrite untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from appimg.services.exports import Refused

#: Characters that must be quoted (Desktop Entry Spec, "Reserved characters").
RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
FIELD_CODES = frozenset("fFuUickdDnNvm")
#: Deprecated field codes: "should be removed from the command line and ignored".
DEPRECATED = frozenset("dDnNvm")
_QUOTED_ESCAPES = frozenset('"`$\\')
MAX_EXEC_LENGTH = 4096
MAX_ARGS = 256


@dataclass(frozen=True)
class Arg:
    text: str  # unquoted; '%' sequences as written
    quoted: bool

    def literal(self) -> str:
        """The argument's value with ``%%`` decoded (field codes left as they are)."""
        return self.text.replace("%%", "%")


def parse(value: str, *, field_codes: bool = True) -> list[Arg]:
    """Split an Exec value (already string-unescaped) into arguments."""
    if len(value) > MAX_EXEC_LENGTH:
        raise Refused(f"Exec longer than {MAX_EXEC_LENGTH} characters")
    args: list[Arg] = []
    i, n = 0, len(value)
    while i < n:
        if value[i] == " ":
            i += 1
            continue
        if value[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise Refused("Exec: unterminated double quote")
                c = value[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n or value[i + 1] not in _QUOTED_ESCAPES:
                        raise Refused("Exec: invalid backslash escape inside quotes")
                    chars.append(value[i + 1])
                    i += 2
                    continue
                chars.append(c)
                i += 1
            if i < n and value[i] != " ":
                raise Refused("Exec: a quoted argument must be followed by a space")
            text = "".join(chars)
            _check_percent(text, quoted=True, field_codes=field_codes)
            args.append(Arg(text, True))
        else:
            start = i
            while i < n and value[i] != " ":
                c = value[i]
                if c in RESERVED:
                    raise Refused(f"Exec: shell metacharacter {c!r} outside quotes")
                i += 1
            text = value[start:i]
            _check_percent(text, quoted=False, field_codes=field_codes)
            args.append(Arg(text, False))
        if len(args) > MAX_ARGS:
            raise Refused(f"Exec: more than {MAX_ARGS} arguments")
    if not args:
        raise Refused("Exec is empty")
    return args


def _check_percent(text: str, *, quoted: bool, field_codes: bool) -> None:
    i = 0
    while True:
        i = text.find("%", i)
        if i < 0:
            return
        code = text[i + 1 : i + 2]
        if code == "%":
            i += 2
            continue
        if not field_codes:
            raise Refused("Exec: '%' must be written '%%' here")
        if code not in FIELD_CODES:
            raise Refused(f"Exec: invalid field code %{code}")
        if quoted:
            raise Refused(f"Exec: field code %{code} inside a quoted argument")
        i += 2


def drop_deprecated(args: list[Arg]) -> list[Arg]:
    """Remove the deprecated field codes (%d %D %n %N %v %m), as the spec says readers do."""
    out = []
    for arg in args:
        if arg.quoted or "%" not in arg.text:
            out.append(arg)
            continue
        pieces, i = [], 0
        while i < len(arg.text):
            c = arg.text[i]
            if c == "%":
                code = arg.text[i + 1]
                if code not in DEPRECATED:
                    pieces.append(c + code)
                i += 2
                continue
            pieces.append(c)
            i += 1
        text = "".join(pieces)
        if text:
            out.append(Arg(text, False))
    return out


def quote(text: str) -> str:
    """One argument as it must appear in an Exec line (``text`` has its ``%`` already encoded)."""
    if text and not any(c in RESERVED for c in text):
        return text
    escaped = "".join("\\" + c if c in _QUOTED_ESCAPES else c for c in text)
    return f'"{escaped}"'


def literal_arg(value: str) -> str:
    """A literal value (a path, an id) as one Exec argument: ``%`` doubled, quoted if needed."""
    return quote(value.replace("%", "%%"))


def join(args: list[Arg]) -> str:
    return " ".join(quote(a.text) if a.quoted else a.text for a in args)
