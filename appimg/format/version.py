"""The order of app versions (spec/xdg-index.md §4.1): which of two ``version`` strings
of a manifest is newer, so that an update can be required to raise it.

The comparison is dpkg's ``verrevcmp`` applied to the whole string: it is
split into alternating runs of non-digits and digits; non-digit runs compare
character by character with letters before every other character and ``~``
before everything, even the end of the string (``1.0~rc1`` < ``1.0``); digit
runs compare as numbers (``1.10`` > ``1.9``, ``1.01`` = ``1.1``). No epoch or
revision is split off: a manifest's version is one free-form string.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also takes "²"


def _order(char: str) -> int:
    """dpkg's weight of one character of a non-digit run ("" is the end of the run)."""
    if char == "~":
        return -1
    if not char:
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``."""
    i = j = 0
    while i < len(a) or j < len(b):
        # A run of non-digits, compared position by position (the shorter padded with "").
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ca = a[i] if i < len(a) and a[i] not in _DIGITS else ""
            cb = b[j] if j < len(b) and b[j] not in _DIGITS else ""
            if _order(ca) != _order(cb):
                return -1 if _order(ca) < _order(cb) else 1
            i += bool(ca)
            j += bool(cb)
        # A run of digits, compared as numbers (an empty run is 0).
        start_a, start_b = i, j
        while i < len(a) and a[i] in _DIGITS:
            i += 1
        while j < len(b) and b[j] in _DIGITS:
            j += 1
        na, nb = int(a[start_a:i] or 0), int(b[start_b:j] or 0)
        if na != nb:
            return -1 if na < nb else 1
    return 0


def is_newer(a: str, b: str) -> bool:
    """Whether version ``a`` is newer than ``b``."""
    return compare(a, b) > 0
