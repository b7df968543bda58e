"""Canonical JSON, the bytes that are hashed and signed (spec/format.md §Canonical JSON)."""

from __future__ import annotations

import pytest

from appimg.errors import FormatError
from appimg.format import canonical


def nest(depth: int) -> object:
    """``depth`` arrays around a 0: the 0 sits at nesting depth ``depth``."""
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_keys_sorted_by_code_point_without_white_space() -> None:
    value = {"b": 1, "a": [True, False, None], "Z": {"y": "", "x": -3}, "é": 0}
    assert canonical.dumps(value) == (
        b'{"Z":{"x":-3,"y":""},"a":[true,false,null],"b":1,"\xc3\xa9":0}'
    )
    # Code-point order, not UTF-16 order: U+FFFF sorts before U+10000.
    assert canonical.dumps({"\U00010000": 1, "\uffff": 2}) == (
        '{"\uffff":2,"\U00010000":1}'.encode()
    )


def test_non_ascii_written_as_itself() -> None:
    assert canonical.dumps({"name": "名前 ünï"}) == '{"name":"名前 ünï"}'.encode()
    assert canonical.loads('["名前"]'.encode(), "t") == ["名前"]
    # The escaped spelling of the same string is not canonical.
    with pytest.raises(FormatError, match="not in canonical form"):
        canonical.loads(b'["\\u540d\\u524d"]', "t")


def test_round_trip() -> None:
    value = {
        "id": "org.example.App",
        "n": [0, -1, 2**63, {"nested": {"deeper": [None, True, ""]}}],
        "text": 'quotes " and \\ and\ncontrol \x01',
    }
    data = canonical.dumps(value)
    assert canonical.loads(data, "t") == value
    assert canonical.dumps(canonical.loads(data, "t")) == data


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), float("inf"), -float("inf")])
def test_no_floats_written(value: float) -> None:
    with pytest.raises(ValueError, match="float"):
        canonical.dumps({"x": [value]})


@pytest.mark.parametrize("value", [b"x", (1, 2), {1, 2}, object()])
def test_only_json_types_written(value: object) -> None:
    with pytest.raises(ValueError, match="not a JSON type"):
        canonical.dumps([value])


def test_object_keys_must_be_strings() -> None:
    with pytest.raises(ValueError, match="keys must be strings"):
        canonical.dumps({1: "one"})


@pytest.mark.parametrize("data", [b"1.0", b"[1e5]", b'{"a":-0.0}', b"NaN", b"[Infinity]",
                                  b"-Infinity"])  # fmt: skip
def test_floats_and_nan_refused_on_read(data: bytes) -> None:
    with pytest.raises(FormatError, match="invalid JSON"):
        canonical.loads(data, "t")


def test_nesting_limit() -> None:
    assert canonical.loads(canonical.dumps(nest(32)), "t") == nest(32)
    with pytest.raises(ValueError, match="nested too deeply"):
        canonical.dumps(nest(33))
    with pytest.raises(FormatError, match="nested too deeply"):
        canonical.loads(b"[" * 33 + b"0" + b"]" * 33, "t")
    # Far past Python's recursion limit: still one FormatError, no RecursionError.
    with pytest.raises(FormatError):
        canonical.loads(b"[" * 100_000 + b"]" * 100_000, "t")


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',  # insignificant white space
        b'{"a":1}\n',
        b' {"a":1}',
        b'{"b":1,"a":2}',  # keys out of order
        b'{"a":1,"a":1}',  # duplicate key (the parser would keep one)
        b"-0",  # another spelling of 0
        b'"\\/"',  # needless escape
        b'"\\u0041"',
    ],
)
def test_loads_refuses_non_canonical(data: bytes) -> None:
    with pytest.raises(FormatError, match="not in canonical form"):
        canonical.loads(data, "t")


@pytest.mark.parametrize("data", [b"", b"{", b"[1,]", b"01", b'"\xff"', b"\xef\xbb\xbf{}",
                                  b"{'a':1}", b"true false"])  # fmt: skip
def test_loads_refuses_invalid_json(data: bytes) -> None:
    with pytest.raises(FormatError, match=r"^manifest: "):
        canonical.loads(data, "manifest")
