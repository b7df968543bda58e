"""Well-formedness checks of XML data files and SVG icons (spec/xdg-index.md §Icons, §Data files).

Parsed with expat directly so that nothing is ever fetched or expanded: a
document type with entity declarations, an external entity reference or a
processing instruction other than the XML declaration is refused, which rules
out billion-laughs and XXE tricks whatever the Python version. The caller caps
the size before parsing.
"""

from __future__ import annotations

from xml.parsers import expat

from appimg.services.exports import Refused

MAX_DEPTH = 256


def root_element(data: bytes, *, svg: bool = False) -> str:
    """The local name of the root element; refuse entities, scripts (``svg``), deep nesting."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    state = {"root": None, "depth": 0}

    def refuse(*_args: object) -> None:
        raise Refused("XML entity declarations are not allowed")

    def start(name: str, attrs: dict[str, str]) -> None:
        local = name.rsplit(" ", 1)[-1]
        if state["root"] is None:
            state["root"] = local
        state["depth"] += 1
        if state["depth"] > MAX_DEPTH:
            raise Refused(f"XML nested deeper than {MAX_DEPTH}")
        if svg:
            if local in ("script", "foreignObject"):
                raise Refused(f"SVG <{local}> elements are not allowed in icons")
            for attr in attrs:
                if attr.rsplit(" ", 1)[-1].lower().startswith("on"):
                    raise Refused("SVG event-handler attributes are not allowed in icons")

    def end(_name: str) -> None:
        state["depth"] -= 1

    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise Refused(f"not well-formed XML ({expat.errors.messages[exc.code]}, "
                      f"line {exc.lineno})") from None  # fmt: skip
    if state["root"] is None:
        raise Refused("XML without a root element")
    return str(state["root"])
