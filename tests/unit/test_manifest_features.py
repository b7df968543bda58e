"""Feature compatibility of the manifest (spec/README.md, "Feature compatibility").

Reading ignores ancillary entries it does not know (top-level keys, export
kinds, permissions) and says what it ignored; it refuses critical features
(``requires``) it does not implement; the security core and ``host`` rules stay
strict; authoring stays strict with a "did you mean".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appimg.errors import FormatError
from appimg.format import canonical, features
from appimg.format.limits import MAX_MANIFEST_BYTES
from appimg.format.manifest import compile_manifest, ignored, validate
from appimg.format.permissions import of_manifest


def base(**extra: Any) -> dict[str, Any]:
    return {
        "format_version": 1, "id": "org.example.App", "name": "App", "version": "1.0",
        "arch": "x86_64", "entrypoint": "bin/app", "profile": "none", **extra,
    }  # fmt: skip


# --- ancillary: ignored, and reported ------------------------------------------------------


def test_unknown_top_level_key_is_ignored_and_reported() -> None:
    manifest = base(colour={"any": ["json", 1, None]}, zz_new="x")
    assert validate(manifest) is manifest
    assert ignored(manifest) == ["colour", "zz_new"]


def test_a_manifest_without_anything_unknown_ignores_nothing() -> None:
    assert ignored(base(permissions={"sockets": ["x11"]}, requires=[])) == []


@pytest.mark.parametrize(
    "name", ["Colour", "1st", "_private", "a.b", "a b", "é", "x" * 65, "", "a\nb"]
)
def test_unknown_key_names_must_still_be_key_names(name: str) -> None:
    with pytest.raises(FormatError, match="invalid key name"):
        validate(base(**{name: 1}))


def test_the_longest_unknown_key_name_is_accepted() -> None:
    assert ignored(base(**{"k" + "-_9" * 21: 1})) == ["k" + "-_9" * 21]


def test_unknown_keys_still_count_against_the_limits() -> None:
    deep = canonical.dumps(base(colour=0)).replace(
        b'"colour":0', b'"colour":' + b"[" * 40 + b"]" * 40
    )
    with pytest.raises(FormatError, match="deep"):
        canonical.loads(deep, "manifest")
    big = canonical.dumps(base(colour="x" * MAX_MANIFEST_BYTES))
    assert len(big) > MAX_MANIFEST_BYTES  # what the image reader refuses before validate()


def test_unknown_export_kind_is_ignored() -> None:
    manifest = base(exports={"desktop": [], "fonts": {"not": "even a list"}})
    assert ignored(manifest) == ["exports.fonts"]
    with pytest.raises(FormatError, match="invalid key name"):
        validate(base(exports={"Fonts": []}))
    with pytest.raises(FormatError, match=r"exports\.desktop"):
        validate(base(exports={"desktop": ["/abs"], "fonts": []}))


def test_unknown_permissions_are_ignored_and_grant_nothing() -> None:
    manifest = base(permissions={
        "sockets": ["x11", "foo"], "devices": ["dri", "gpu-9"], "share": ["network"],
        "filesystems": ["xdg-download", "xdg-nowhere/x"], "session-bus": ["org.a.B"],
    })  # fmt: skip
    validate(manifest)
    assert ignored(manifest) == [
        "permissions.session-bus",
        "permissions.sockets: foo",
        "permissions.devices: gpu-9",
        "permissions.filesystems: xdg-nowhere/x",
    ]
    granted = of_manifest(manifest)
    assert granted.sockets == {"x11"} and granted.devices == {"dri"}
    assert granted.filesystems == {"xdg-download": "rw"}


def test_ignored_lines_escape_control_characters() -> None:
    manifest = base(permissions={"sockets": ["\x1b]0;owned\x07"]})
    [line] = ignored(manifest)
    assert line.isprintable() and "\\x1b" in line


@pytest.mark.parametrize(
    "table",
    [
        "x11",
        None,
        [],
        {"sockets": "x11"},
        {"sockets": [1]},
        {"sockets": [""]},
        {"filesystems": [7]},
        {"Sockets": []},
        {"sockets": ["x"] * 1025},
    ],
)
def test_permissions_of_a_wrong_type_are_refused(table: object) -> None:
    with pytest.raises(FormatError, match="permissions"):
        validate(base(permissions=table))


# --- critical: requires --------------------------------------------------------------------


def test_an_unknown_required_feature_is_refused_with_a_clear_message() -> None:
    with pytest.raises(FormatError) as info:
        validate(base(requires=["host-rule-uid", "zz"]))
    assert str(info.value) == (
        "this image requires feature(s) host-rule-uid, zz (this appimg knows: none); "
        "a newer appimg is needed"
    )


def test_requires_is_checked_before_the_rest_of_the_manifest() -> None:
    """A critical feature may change what the rest means: refuse for it, not for a symptom."""
    manifest = base(requires=["host-rule-uid"], host=[{"path": "/usr", "uid": 0}])
    with pytest.raises(FormatError, match="requires feature"):
        validate(manifest)


def test_a_known_feature_is_accepted() -> None:
    assert features.check_requires(["a", "b-2"], frozenset({"a", "b-2", "c"})) == ["a", "b-2"]
    assert features.check_requires([]) == []
    assert not features.KNOWN_FEATURES  # none yet: see the module


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x11", "must be a list"),
        ({"a": 1}, "must be a list"),
        ([1], "is not a feature name"),
        (["A"], "is not a feature name"),
        (["a_b"], "is not a feature name"),
        (["-a"], "is not a feature name"),
        (["a" * 65], "is not a feature name"),
        (["b", "a"], "sorted"),
        (["a", "a"], "sorted"),
        ([f"f{i}" for i in range(65)], "more than 64"),
    ],
)
def test_requires_of_a_wrong_shape_is_refused(value: object, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        features.check_requires(value, frozenset({"a", "b"}))
    with pytest.raises(FormatError):
        validate(base(requires=value))


# --- strict parts stay strict --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"host": [{"path": "/usr", "uid": 0}]},
        {"host": [{"path": "/usr", "mode": "merge"}]},
        {"format_version": 2},
        {"format_version": True},
        {"id": "two.parts"},
        {"commands": {"bad name": "bin/app"}},
    ],
)
def test_the_strict_parts_are_unchanged(extra: dict[str, Any]) -> None:
    with pytest.raises(FormatError):
        validate(base(**extra))


# --- authoring -----------------------------------------------------------------------------


def _app(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/app").write_text("#!/bin/sh\n")
    (tmp_path / "bin/app").chmod(0o755)
    (tmp_path / "appimg.toml").write_text(
        'id = "org.example.App"\nname = "App"\nversion = "1"\nentrypoint = "bin/app"\n' + toml
    )
    return tmp_path


@pytest.mark.parametrize(
    ("toml", "hint"),
    [
        ("[permission]\nsockets = []\n", "did you mean 'permissions'?"),
        ('summery = "x"\n', "did you mean 'summary'?"),
        ('colour = "blue"\n', ""),
        ("requires = []\n", ""),
        ("format_version = 1\n", "did you mean 'version'?"),
    ],
)
def test_authoring_refuses_unknown_keys_with_the_nearest_one(
    tmp_path: Path, toml: str, hint: str
) -> None:
    with pytest.raises(FormatError, match="unknown key") as info:
        compile_manifest(_app(tmp_path, toml))
    assert str(info.value).endswith(hint or ")") or hint in str(info.value)
    if not hint:
        assert "did you mean" not in str(info.value)


def test_authoring_refuses_unknown_permissions(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="did you mean 'wayland'"):
        compile_manifest(_app(tmp_path, '[permissions]\nsockets = ["waylnd"]\n'))


def test_an_empty_permissions_table_is_left_out(tmp_path: Path) -> None:
    manifest = compile_manifest(_app(tmp_path, "[permissions]\nsockets = []\n"))
    assert "permissions" not in manifest and "requires" not in manifest


def test_permissions_compile_sorted(tmp_path: Path) -> None:
    toml = '[permissions]\nsockets = ["x11", "wayland"]\nfilesystems = ["~/Games:create"]\n'
    manifest = compile_manifest(_app(tmp_path, toml))
    assert manifest["permissions"] == {
        "filesystems": ["~/Games:create"], "sockets": ["wayland", "x11"],
    }  # fmt: skip
    assert ignored(manifest) == []
