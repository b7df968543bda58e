"""MIME packages and MimeType claims (spec/xdg-index.md §3.6 MIME).

A MIME package (``share/mime/packages/NAME.xml``) is merged by
``update-mime-database`` into the database every program consults to decide
what a file is; the exports directory comes before the host's on the search
path, so a package could re-type ``*.pdf`` files or give ``text/plain`` new
magic. An app may therefore only define types of its own: named in its id's
namespace (:func:`own_type`: ``MEDIA/x-ID…`` or ``MEDIA/vnd.ID…``), not already
known to the host's shared-mime-info nor defined by another installed app; its
globs must be specific (``*.EXT`` or a literal name) and new to the host, its
magic and glob weights no stronger than the default (50), its XML root
namespaces new. :func:`check_package` applies this to a package that already
passed :func:`~appimg.services.exports.xmlcheck.root_element` (no entities, no
external DTD), and :func:`definitions` reads another app's exported package.

:func:`filter_mime_types` removes from a desktop entry's ``MimeType=`` the types
an app may not claim: the web (``x-scheme-handler/http``, ``https``), the file
manager (``inode/directory``) and the types other installed apps define;
nothing here ever writes ``mimeapps.list``: only the user makes an app a default.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from xml.parsers import expat

from appimg.services.exports import Refused

NS = "http://www.freedesktop.org/standards/shared-mime-info"
#: Claims only the user may give to an app (the web browser, the file manager).
RESERVED_CLAIMS = frozenset({"x-scheme-handler/http", "x-scheme-handler/https", "inode/directory"})
#: Media types an app may not define types under (file-system objects, URI schemes).
_RESERVED_MEDIA = frozenset({"inode", "x-scheme-handler", "x-content"})
#: shared-mime-info's default weight and priority: an app's may not exceed them.
DEFAULT_STRENGTH = 50
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}\\Z")
_GLOB_SPECIAL = frozenset("*?[]")
MAX_GLOB = 255


@dataclass
class Definitions:
    """What one MIME package defines."""

    types: list[str] = field(default_factory=list)  # <mime-type type> and <alias type>
    globs: list[tuple[str, str, str | None]] = field(default_factory=list)  # type, pattern, weight
    strengths: list[tuple[str, str, str]] = field(default_factory=list)  # type, element, priority
    xml_roots: list[tuple[str, str]] = field(default_factory=list)  # type, "ns localname"


def definitions(data: bytes) -> Definitions:
    """Parse a package (already checked by ``root_element``) for what it defines."""
    found = Definitions()
    current: list[str] = []
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def start(name: str, attrs: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if namespace != NS:
            return
        if local == "mime-type":
            current.append(attrs.get("type", ""))
            found.types.append(attrs.get("type", ""))
            return
        owner = current[-1] if current else ""
        if local == "alias":
            found.types.append(attrs.get("type", ""))
        elif local == "glob":
            found.globs.append((owner, attrs.get("pattern", ""), attrs.get("weight")))
        elif local in ("magic", "treemagic"):
            found.strengths.append((owner, local, attrs.get("priority", str(DEFAULT_STRENGTH))))
        elif local == "root-XML":
            uri, root = attrs.get("namespaceURI", ""), attrs.get("localName", "")
            found.xml_roots.append((owner, f"{uri} {root}"))

    def end(name: str) -> None:
        if name == f"{NS} mime-type" and current:
            current.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise Refused(f"not well-formed XML ({expat.errors.messages[exc.code]})") from None
    return found


def in_namespace(mime_type: str, app_id: str) -> bool:
    """``mime_type``'s subtype, less an ``x-`` or ``vnd.`` prefix, is the app id or starts
    with it followed by ``.``, ``-`` or ``+`` (compared without case)."""
    media, _, sub = mime_type.lower().partition("/")
    for prefix in ("x-", "vnd."):
        if sub.startswith(prefix):
            sub = sub[len(prefix) :]
            break
    ident = app_id.lower()
    return media not in _RESERVED_MEDIA and (
        sub == ident or (sub.startswith(ident) and sub[len(ident)] in ".-+")
    )


def _strength(value: str | None, what: str) -> None:
    if value is None:
        return
    try:
        number = int(value)
    except ValueError:
        raise Refused(f"{what} {value!r} is not a number") from None
    if number > DEFAULT_STRENGTH:
        raise Refused(f"{what} {number} exceeds {DEFAULT_STRENGTH}: it would outrank the "
                      f"host's types")  # fmt: skip


def _check_glob(pattern: str) -> None:
    if not pattern or len(pattern) > MAX_GLOB or "/" in pattern:
        raise Refused(f"glob {pattern!r} is not a file name pattern")
    rest = pattern[2:] if pattern.startswith("*.") else pattern
    if not rest or any(c in _GLOB_SPECIAL for c in rest):
        raise Refused(f"glob {pattern!r} is too wide: only *.EXT or a literal file name")


def check_package(
    data: bytes,
    app_id: str,
    *,
    host_types: Mapping[str, str],
    host_globs: Mapping[str, str],
    host_xml_roots: Mapping[str, str],
    others: Mapping[str, str],
    other_globs: Mapping[str, str],
    other_ids: Collection[str],
) -> list[str]:
    """The types the package defines, if it touches nothing the app does not own."""
    found = definitions(data)
    for mime_type in found.types:
        if not _MEDIA_TYPE.match(mime_type):
            raise Refused(f"{mime_type!r} is not a MIME type")
        if not in_namespace(mime_type, app_id):
            raise Refused(f"defines {mime_type}, which is not the app's own type "
                          f"(MEDIA/x-{app_id}… or MEDIA/vnd.{app_id}…)")  # fmt: skip
        longer = next((o for o in sorted(other_ids) if len(o) > len(app_id)
                       and in_namespace(mime_type, o)), None)  # fmt: skip
        if longer:
            raise Refused(f"defines {mime_type}, which belongs to the installed app {longer}")
        if mime_type in host_types:
            raise Refused(f"defines {mime_type}, which the host's shared-mime-info defines")
        if mime_type in others:
            raise Refused(f"defines {mime_type}, which the installed app {others[mime_type]} "
                          "defines")  # fmt: skip
    for _type, pattern, weight in found.globs:
        _check_glob(pattern)
        _strength(weight, f"glob {pattern!r} weight")
        key = pattern.lower()
        if key in host_globs:
            raise Refused(f"glob {pattern!r} is the host's {host_globs[key]}")
        if key in other_globs:
            raise Refused(f"glob {pattern!r} is already the installed app {other_globs[key]}'s")
    for _type, element, priority in found.strengths:
        _strength(priority, f"<{element}> priority")
    for _type, root in found.xml_roots:
        if root in host_xml_roots:
            raise Refused(f"root-XML {root!r} is the host's {host_xml_roots[root]}")
    return sorted(set(found.types))


def filter_mime_types(value: str, others: Mapping[str, str]) -> tuple[str, list[str]]:
    """A ``MimeType`` value (unescaped) without the claims an app may not make; and
    the reasons for what was removed."""
    kept, removed = [], []
    for item in value.split(";"):
        name = item.strip()
        if not name:
            continue
        if name in RESERVED_CLAIMS:
            removed.append(f"{name} (only you make an app the web browser or file manager)")
        elif name in others:
            removed.append(f"{name} (a type of the installed app {others[name]})")
        else:
            kept.append(name)
    return "".join(f"{t};" for t in kept), removed
