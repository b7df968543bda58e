"""``Exec`` lines: the one splitter, and rewriting (spec/xdg-index.md §3.2 Exec, §9).

Spec §The Exec key: arguments are separated by spaces; an argument holding a
reserved character must be enclosed in double quotes, inside which ``"``, `````,
``$`` and ``\\`` are escaped with a backslash; ``%`` starts a field code.
:func:`split_exec` reads a line in two modes:

* strict (the export rules): a line that breaks these rules (a shell
  metacharacter outside quotes, a quote that does not close, an unknown field
  code) is refused: some launchers hand Exec to ``sh -c``, so an unquoted ``;``
  or ``$(...)`` would be a command;
* lenient (``appimg apps``): splits as GLib does, with ``g_shell_parse_argv``
  (single quotes, backslashes outside quotes, words ending at space, tab or
  newline); only a quote that does not close is an error, as for GLib.

Every line the strict mode accepts is split the same way by both. An
:class:`Arg` keeps its text decoded from the quoting but with ``%``
sequences exactly as written (``%%``, ``%U``), so field codes survive the
rewrite untouched. Only cheap imports here: ``appimg apps`` imports this module.
"""

from __future__ import annotations

from appimg.services.exports import Refused

#: Characters that must be quoted (Desktop Entry Spec, "Reserved characters").
RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
FIELD_CODES = frozenset("fFuUickdDnNvm")
#: Deprecated field codes: "should be removed from the command line and ignored".
DEPRECATED = frozenset("dDnNvm")
_QUOTED_ESCAPES = frozenset('"`$\\')
#: What a backslash escapes inside double quotes for g_shell_parse_argv.
_SHELL_QUOTED_ESCAPES = frozenset('"`$\\\n')
MAX_EXEC_LENGTH = 4096
MAX_ARGS = 256


class Arg:
    """One argument: its text unquoted, '%' sequences as written."""

    # A plain class: a NamedTuple or dataclass costs `appimg apps` milliseconds to import.
    __slots__ = ("quoted", "text")

    def __init__(self, text: str, quoted: bool) -> None:
        self.text = text
        self.quoted = quoted

    def __repr__(self) -> str:
        return f"Arg({self.text!r}, {self.quoted!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arg) and (self.text, self.quoted) == (other.text, other.quoted)

    def __hash__(self) -> int:
        return hash((self.text, self.quoted))

    def literal(self) -> str:
        """The argument's value with ``%%`` decoded (field codes left as they are)."""
        return self.text.replace("%%", "%")


def split_exec(
    value: str, *, field_codes: bool = True, strict: bool = True, limit: int | None = None
) -> list[Arg]:
    """Split an Exec value (already string-unescaped) into arguments.

    Strict: refuse (:class:`Refused`) what the Desktop Entry Specification
    does not allow. Lenient: split as ``g_shell_parse_argv`` does; only an
    unterminated quote is refused, and no field code is checked. ``limit``
    stops after that many arguments (the rest of the line is not read).
    """
    if strict and len(value) > MAX_EXEC_LENGTH:
        raise Refused(f"Exec longer than {MAX_EXEC_LENGTH} characters")
    separators = " " if strict else " \t\n"
    escapes = _QUOTED_ESCAPES if strict else _SHELL_QUOTED_ESCAPES
    args: list[Arg] = []
    i, n = 0, len(value)
    while i < n and len(args) != limit:
        if value[i] in separators:
            i += 1
            continue
        start = i
        chars: list[str] = []
        quoted = False
        while i < n and value[i] not in separators:
            c = value[i]
            if c == '"' and (i == start or not strict):
                quoted = True
                i += 1
                while True:
                    if i >= n:
                        raise Refused("Exec: unterminated double quote")
                    c = value[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\":
                        if i + 1 < n and value[i + 1] in escapes:
                            i += 1
                        elif strict:
                            raise Refused("Exec: invalid backslash escape inside quotes")
                    chars.append(value[i])
                    i += 1
                if strict and i < n and value[i] != " ":
                    raise Refused("Exec: a quoted argument must be followed by a space")
            elif c == "'" and not strict:
                end = value.find("'", i + 1)
                if end < 0:
                    raise Refused("Exec: unterminated single quote")
                chars.append(value[i + 1 : end])
                quoted = True
                i = end + 1
            elif c == "\\" and not strict and i + 1 < n:
                chars.append(value[i + 1])
                i += 2
            else:
                if strict and c in RESERVED:
                    raise Refused(f"Exec: shell metacharacter {c!r} outside quotes")
                chars.append(c)
                i += 1
        text = "".join(chars)
        if strict:
            _check_percent(text, quoted=quoted, field_codes=field_codes)
        args.append(Arg(text, quoted))
        if strict and len(args) > MAX_ARGS:
            raise Refused(f"Exec: more than {MAX_ARGS} arguments")
    if strict and not args:
        raise Refused("Exec is empty")
    return args


def first_word(command: str) -> str | None:
    """argv[0] of a command line as GLib splits it (None if it cannot, or it is empty)."""
    head = command.split(None, 1)[0] if command.strip() else ""
    if head and not any(c in head for c in "'\"\\"):
        return head  # the common case, without quoting: no need to split
    try:
        args = split_exec(command, strict=False, limit=1)
    except Refused:
        return None
    return args[0].text if args and args[0].text else None


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
