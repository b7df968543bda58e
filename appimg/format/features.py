"""Feature compatibility of the manifest (spec/README.md, "Feature compatibility").

``format_version`` names the frozen security core (container, verity,
statement, signatures, canonical JSON); the manifest grows by *features*
without a new version, in two classes modelled on PNG's chunks and ext4's
feature sets:

* **ancillary** (PNG ancillary, ext4 compat): a top-level key, a key of an
  ancillary table or an export kind this reader does not know is ignored,
  because ignoring it grants, exports or shows less;
* **critical** (PNG critical, ext4 incompat): named in the manifest's
  ``requires``; a reader refuses an image that requires a feature it does not
  implement, before it uses anything else of the manifest.

This module holds the names and the two checks; :mod:`appimg.format.manifest`
applies them while validating.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from appimg.errors import FormatError

#: Critical features this appimg implements. None yet: every optional key of the
#: manifest so far (``permissions``, say) is ancillary. A feature that restricts
#: the app or that is unsafe to ignore (a new ``host`` rule member or mode) is
#: added here together with the code that honours it.
KNOWN_FEATURES: frozenset[str] = frozenset()
#: At most this many names in ``requires``.
MAX_REQUIRES = 64
#: A feature name of ``requires``.
FEATURE_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}\Z")
#: The name of a key that a reader may ignore (top level, ancillary tables, export kinds).
KEY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")


def _shown(name: object) -> str:
    """A name for an error message: escaped, and cut short (names are not bounded)."""
    text = name if isinstance(name, str) else repr(name)
    return ascii(text[:64] + ("..." if len(text) > 64 else ""))


def check_requires(value: object, known: frozenset[str] = KNOWN_FEATURES) -> list[str]:
    """The ``requires`` list, checked; a feature not in ``known`` is a :class:`FormatError`."""
    if not isinstance(value, list):
        raise FormatError("requires: must be a list of feature names")
    if len(value) > MAX_REQUIRES:
        raise FormatError(f"requires: more than {MAX_REQUIRES} features")
    for index, name in enumerate(value):
        if not isinstance(name, str) or not FEATURE_NAME.match(name):
            raise FormatError(
                f"requires[{index}]: {_shown(name)} is not a feature name "
                "([a-z][a-z0-9-]*, at most 64 characters)"
            )
    if value != sorted(set(value)):
        raise FormatError("requires: must be sorted, without duplicates")
    missing = [name for name in value if name not in known]
    if missing:
        raise FormatError(
            f"this image requires feature(s) {', '.join(missing)} "
            f"(this appimg knows: {', '.join(sorted(known)) or 'none'}); "
            "a newer appimg is needed"
        )
    return value


def unknown_keys(table: dict[str, Any], known: Iterable[str], where: str) -> list[str]:
    """Keys of ``table`` not in ``known``, sorted; each must still be a valid key name.

    ``where`` names the table in the error (``manifest``, ``exports``, ...).
    """
    unknown = sorted(set(table).difference(known))
    for name in unknown:
        if not KEY_NAME.match(name):
            raise FormatError(
                f"{where}: invalid key name {_shown(name)} "
                "(an unknown key must match [a-z][a-z0-9_-]*, at most 64 characters)"
            )
    return unknown
