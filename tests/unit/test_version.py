"""The version order of updates (spec/xdg-index.md §4.1): dpkg's comparison."""

from __future__ import annotations

import pytest

from appimg.format.version import compare, is_newer

OLDER_NEWER = [
    ("1.0", "1.1"),
    ("1.9", "1.10"),  # numbers, not characters
    ("1.0~rc1", "1.0"),  # ~ sorts before the end
    ("1.0~rc1", "1.0~rc2"),
    ("1.0~~", "1.0~"),
    ("1.0", "1.0a"),
    ("1.0", "1.0.1"),
    ("1.0a", "1.0."),  # letters before other characters
    ("1.0+1", "1.0-1"),
    ("2", "10"),
    ("1.2.3", "1.2.10"),
    ("", "0a"),
]


@pytest.mark.parametrize(("older", "newer"), OLDER_NEWER)
def test_order(older: str, newer: str) -> None:
    assert compare(older, newer) == -1
    assert compare(newer, older) == 1
    assert is_newer(newer, older) and not is_newer(older, newer)


@pytest.mark.parametrize(("a", "b"), [("1.0", "1.0"), ("1.01", "1.1"), ("1.0", "1.00"), ("", "0")])
def test_equal(a: str, b: str) -> None:
    assert compare(a, b) == 0 and compare(b, a) == 0


def test_only_ascii_digits_are_numbers() -> None:
    # "²" is a digit to str.isdigit() but not to int(): it must compare as a character.
    assert compare("1²", "1") == 1
    assert compare("1²", "12") == -1


def test_agrees_with_dpkg_where_available() -> None:
    import shutil
    import subprocess

    dpkg = shutil.which("dpkg")
    if dpkg is None:
        pytest.skip("dpkg is not installed")
    pairs = [*OLDER_NEWER[:-1], ("1.0", "1.00"), ("1.2a3", "1.2a10"), ("a.b", "a+b")]
    # dpkg splits a revision off at the last "-"; a manifest version is one string.
    for a, b in [(a, b) for a, b in pairs if "-" not in a + b]:
        for op, want in (("lt", -1), ("eq", 0), ("gt", 1)):
            # dpkg needs an upstream version starting with a digit; every pair here does.
            ok = subprocess.run([dpkg, "--compare-versions", a, op, b]).returncode == 0
            assert ok == (compare(a, b) == want), (a, op, b)
