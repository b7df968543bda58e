"""Well-formedness checks of XML data files and SVG icons (spec/xdg-index.md §3.4 Icons, §3.5).

Parsed with expat directly so that nothing is ever fetched or expanded: a
document type with entity declarations or an external identifier (an external
DTD), an external entity reference, or a processing instruction (such as
``<?xml-stylesheet?>``; the XML declaration is not one) is refused, which rules
out billion-laughs and XXE tricks whatever the Python version. The caller caps
the size before parsing.

An SVG icon is drawn by the desktop's renderer (librsvg, Qt), which would load
what the document references: so an icon may reference nothing but itself.
Every ``href`` (any namespace: ``xlink:href`` too), every ``url(...)`` in an
attribute or a ``<style>`` element, must be a same-document ``#fragment`` or a
``data:`` URI of a PNG, JPEG or GIF image; CSS ``@import``, CSS escapes (which
could spell ``url`` in disguise), the CSS functions that load a string
(``src()``, ``image()``, ``image-set()``, ...), ``xml:base``, XInclude, XHTML elements, scripts,
``foreignObject``, event attributes and animations of an ``href`` are refused.
"""

from __future__ import annotations

import re
from xml.parsers import expat

from appimg.services.exports import Refused

MAX_DEPTH = 256
_XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
_XHTML_NS = "http://www.w3.org/1999/xhtml"
_FORBIDDEN_ELEMENTS = frozenset({"script", "foreignObject", "iframe", "embed", "object"})
_ANIMATIONS = frozenset({"animate", "set", "animateMotion", "animateTransform", "animateColor"})
#: A reference that stays inside the icon: a fragment, or an embedded raster image.
_LOCAL_REF = re.compile(r"\s*(#|data:image/(png|jpeg|gif)[;,])", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)", re.IGNORECASE)
#: CSS functions that load a resource named by a string, not url(): refused outright.
_CSS_LOADERS = re.compile(r"(?<![\w-])(src|image|(-webkit-)?image-set|cross-fade|element)\(",
                          re.IGNORECASE)  # fmt: skip
#: xml:base would make even a ``#fragment`` resolve against another document.
_XML_BASE = "http://www.w3.org/XML/1998/namespace base"


def _check_reference(value: str, what: str) -> None:
    if not _LOCAL_REF.match(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise Refused(f"SVG {what} {shown!r} is not a #fragment or a data: image")


def _check_css(text: str, what: str) -> None:
    """``url(...)`` targets must be local; ``@import`` and escapes are refused."""
    if "\\" in text:
        raise Refused(f"SVG {what}: CSS escapes are not allowed in icons")
    if "@import" in text.lower():
        raise Refused(f"SVG {what}: CSS @import is not allowed in icons")
    loader = _CSS_LOADERS.search(text)
    if loader:
        raise Refused(f"SVG {what}: CSS {loader.group(1)}() is not allowed in icons")
    for match in _CSS_URL.finditer(text):
        _check_reference(text[match.end() :], f"{what} url()")


def root_element(data: bytes, *, svg: bool = False) -> str:
    """The local name of the root element; refuse entities, external references and, for
    ``svg``, scripts and references outside the document; and deep nesting."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    state: dict[str, object] = {"root": None, "depth": 0, "style": None}

    def refuse(*_args: object) -> None:
        raise Refused("XML entity declarations are not allowed")

    def doctype(_name: str, sysid: str | None, pubid: str | None, _internal: int) -> None:
        if sysid or pubid:
            raise Refused("XML document type with an external DTD is not allowed")

    def instruction(target: str, _data: str) -> None:
        raise Refused(f"XML processing instruction <?{target}?> is not allowed")

    def start(name: str, attrs: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if state["root"] is None:
            state["root"] = local
        state["depth"] = int(state["depth"]) + 1  # type: ignore[call-overload]
        if int(state["depth"]) > MAX_DEPTH:  # type: ignore[call-overload]
            raise Refused(f"XML nested deeper than {MAX_DEPTH}")
        if namespace == _XINCLUDE_NS:
            raise Refused("XInclude is not allowed")
        if svg:
            _check_svg_element(namespace, local, attrs)
            if local == "style":
                state["style"] = []

    def text(content: str) -> None:
        if isinstance(state["style"], list):
            state["style"].append(content)

    def end(name: str) -> None:
        state["depth"] = int(state["depth"]) - 1  # type: ignore[call-overload]
        if svg and name.rpartition(" ")[2] == "style" and isinstance(state["style"], list):
            _check_css("".join(state["style"]), "<style>")
            state["style"] = None

    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartDoctypeDeclHandler = doctype
    parser.ProcessingInstructionHandler = instruction
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise Refused(f"not well-formed XML ({expat.errors.messages[exc.code]}, "
                      f"line {exc.lineno})") from None  # fmt: skip
    if state["root"] is None:
        raise Refused("XML without a root element")
    return str(state["root"])


def _check_svg_element(namespace: str, local: str, attrs: dict[str, str]) -> None:
    if local in _FORBIDDEN_ELEMENTS:
        raise Refused(f"SVG <{local}> elements are not allowed in icons")
    if namespace == _XHTML_NS:
        raise Refused("XHTML elements are not allowed in icons")
    for attr, value in attrs.items():
        if attr == _XML_BASE:
            raise Refused("xml:base is not allowed in icons")
        attr_local = attr.rpartition(" ")[2]
        lowered = attr_local.lower()
        if lowered.startswith("on"):
            raise Refused("SVG event-handler attributes are not allowed in icons")
        if lowered in ("href", "src"):
            _check_reference(value, f"<{local} {attr_local}>")
        elif local in _ANIMATIONS and lowered == "attributename" and "href" in value.lower():
            raise Refused("SVG animations of href are not allowed in icons")
        if (lowered == "style" or "url(" in value.lower() or "@import" in value.lower()
                or _CSS_LOADERS.search(value)):  # fmt: skip
            _check_css(value, f"<{local} {attr_local}>")
