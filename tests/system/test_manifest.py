"""The manifest: authoring file → canonical JSON, validation, and the JSON Schema in spec/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from appimg.errors import FormatError
from appimg.format import canonical
from appimg.format.manifest import compile_manifest, validate

from ..helpers import HELLO, ROOT, appimg, assert_one_line_error, write_app

SCHEMA = json.loads((ROOT / "spec" / "manifest.schema.json").read_text())


def base() -> dict:
    return {
        "format_version": 1, "id": "org.example.App", "name": "App", "version": "1.0",
        "arch": "x86_64", "entrypoint": "bin/app", "profile": "none",
    }  # fmt: skip


def test_example_compiles_and_matches_schema() -> None:
    manifest = compile_manifest(HELLO)
    assert manifest["id"] == "org.example.Hello"
    assert manifest["env"] == {"HELLO_MODE": "demo"}
    assert manifest["exports"]["desktop"] == ["share/applications/org.example.Hello.desktop"]
    assert sorted(manifest["exports"]["icons"]) == [
        "share/icons/hicolor/48x48/apps/org.example.Hello.png",
        "share/icons/hicolor/scalable/apps/org.example.Hello.svg",
    ]
    jsonschema.validate(manifest, SCHEMA)
    assert canonical.loads(canonical.dumps(manifest), "manifest") == manifest


BAD = {
    "two-part id": {"id": "example.App"},
    "dash in last id element": {"id": "org.example.my-app"},
    "digit-led id element": {"id": "org.9example.App"},
    "unknown key not a key name": {"Colour": "blue"},
    "unknown host rule member": {"host": [{"path": "/usr", "at": "/usr", "uid": 0}]},
    "permissions not a table": {"permissions": ["x11"]},
    "permissions of a wrong type": {"permissions": {"sockets": "x11"}},
    "requires not a list": {"requires": "x"},
    "requires unsorted": {"requires": ["b", "a"]},
    "requires unknown feature": {"requires": ["some-feature"]},
    "absolute entrypoint": {"entrypoint": "/bin/app"},
    "dotdot entrypoint": {"entrypoint": "bin/../../etc/passwd"},
    "bad mode": {"host": [{"path": "/usr", "at": "/usr", "mode": "merge"}]},
    "relative host path": {"host": [{"path": "usr", "at": "/usr", "mode": "under"}]},
    "rule at root": {"host": [{"path": "/usr", "at": "/", "mode": "over"}]},
    "host path starting with //": {"host": [{"path": "//usr", "at": "/usr", "mode": "under"}]},
    "target starting with //": {"host": [{"path": "/usr", "at": "//opt/u", "mode": "under"}]},
    "boolean format_version": {"format_version": True},
    "bad env name": {"env": {"1BAD": "x"}},
    "bad profile": {"profile": "Has Space"},
    "future version": {"format_version": 2},
    "control char in name": {"name": "a\x07b"},
    "export kind not a key name": {"exports": {"Fonts": ["share/fonts/x.ttf"]}},
}
#: What the validator refuses and the schema cannot say (or knows nothing about).
VALIDATOR_ONLY = ("future version", "control char in name", "requires unknown feature",
                  "requires unsorted")  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_validator_and_schema_reject(case: str) -> None:
    manifest = {**base(), **BAD[case]}
    with pytest.raises(FormatError):
        validate(manifest)
    if case not in VALIDATOR_ONLY:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(manifest, SCHEMA)


def test_full_manifest_accepted_by_both() -> None:
    manifest = {
        **base(),
        "commands": {"shell": "bin/sh"},
        "env": {"HELLO_MODE": "demo"},
        "host": [{"path": "/usr/share/fonts", "at": "/run/host/fonts", "mode": "replace"}],
        "exports": {"desktop": ["share/applications/org.example.App.desktop"]},
        "summary": "An app",
    }
    validate(manifest)
    jsonschema.validate(manifest, SCHEMA)


def test_ancillary_entries_accepted_by_both() -> None:
    """Unknown top-level keys, export kinds and permissions: ignored (spec/README.md)."""
    manifest = {
        **base(),
        "colour": {"any": ["value"]},
        "exports": {"fonts": ["share/fonts/x.ttf"]},
        "permissions": {"sockets": ["x11", "foo"], "bus": ["org.a.B"], "filesystems": ["~/x:ro"]},
        "requires": [],
    }
    validate(manifest)
    jsonschema.validate(manifest, SCHEMA)


def test_inspect_shows_what_it_ignored() -> None:
    valid = ROOT / "spec/conformance/valid"
    out = appimg("inspect", valid / "manifest-permissions-unknown.appimg").stdout
    assert "  ignored (unknown to this appimg): permissions.sockets: foo\n" in out
    assert "  ignored (unknown to this appimg): permissions.session-bus\n" in out
    info = json.loads(appimg("inspect", "--json", valid / "manifest-unknown-key.appimg").stdout)
    assert info["ignored"] == ["color"] and info["manifest"]["color"] == "blue"
    assert json.loads(appimg("inspect", "--json", valid / "minimal.appimg").stdout)["ignored"] == []
    assert "ignored" not in appimg("inspect", valid / "minimal.appimg").stdout


def test_init_writes_a_template_that_packs(tmp_path: Path) -> None:
    app = tmp_path / "myapp"
    appimg("init", app)
    text = (app / "appimg.toml").read_text()
    assert "entrypoint" in text and "[[host]]" in text
    assert_one_line_error(appimg("init", app, check=False))  # refuses to overwrite
    (app / "bin").mkdir()
    (app / "bin" / "myapp").write_text("#!/bin/sh\n")
    (app / "bin" / "myapp").chmod(0o755)
    appimg("pack", app, "-o", tmp_path / "my.appimg")
    info = json.loads(appimg("inspect", "--json", tmp_path / "my.appimg").stdout)
    assert info["manifest"]["id"] == "org.example.Myapp"


def test_pack_default_output_name(tmp_path: Path) -> None:
    write_app(tmp_path / "app", name="Named", version="2.5")
    out = appimg("pack", tmp_path / "app", cwd=tmp_path)
    assert "Named-2.5-" in out.stdout
    assert list(tmp_path.glob("Named-2.5-*.appimg"))
