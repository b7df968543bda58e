"""The conformance suite spec/conformance/ (spec/format.md §11): current, and passed by appimg.

(a) The checked-in suite is exactly what ``tools/conformance.py`` writes now
(the whole suite is regenerated: it takes about a second). (b) ``appimg verify
--full`` and ``appimg inspect`` give every image the verdict and exit status of
``index.json``; valid images also verify with ``--key`` for each signer.

Images marked ``"issue": true`` test items of issue 15. Those whose expectation
the reader does not meet yet are listed in PENDING and expected to fail
(strictly: once the reader is fixed the mark must go).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appimg.cli import main
from tests.helpers import appimg

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "spec" / "conformance"
INDEX: list[dict[str, Any]] = json.loads((SUITE / "index.json").read_text("utf-8"))["images"]

ERROR_STATUS = {"FormatError": 3, "IntegrityError": 4, "SignatureError": 5}

#: Items the reader does not meet yet, with what still differs (xfail, strictly): none.
PENDING: dict[str, str] = {}


def _params() -> list[Any]:
    params = []
    for entry in INDEX:
        marks = []
        if entry["file"] in PENDING:
            reason = f"issue 15, not implemented yet: {PENDING[entry['file']]}"
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(entry, marks=marks, id=entry["file"]))
    return params


def run(*args: str) -> tuple[int, str]:
    """The CLI in this process (a fresh interpreter per image would take minutes)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, err.getvalue()


@pytest.fixture(autouse=True)
def empty_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_pending_names_exist() -> None:
    files = {entry["file"]: entry for entry in INDEX}
    for name in PENDING:
        assert files[name].get("issue"), name


def test_suite_is_what_the_generator_writes(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    subprocess.run(
        [sys.executable, "-m", "tools.conformance", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    generated = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    checked_in = {
        p.relative_to(SUITE) for p in SUITE.rglob("*") if p.is_file() and p.name != "README.md"
    }
    assert generated == checked_in, "regenerate with: python -m tools.conformance"
    differ = [
        str(p) for p in sorted(generated) if (out / p).read_bytes() != (SUITE / p).read_bytes()
    ]
    assert not differ, f"out of date (python -m tools.conformance): {differ[:10]}"


def test_index_is_complete() -> None:
    for entry in INDEX:
        assert (SUITE / entry["file"]).is_file()
        assert entry["verdict"] in ("valid", "invalid")
        if entry["verdict"] == "valid":
            assert entry["exit_status"] == 0 and "error" not in entry
            for signer in entry["signed_by"]:
                assert (SUITE / signer["key"]).is_file()
        else:
            assert entry["exit_status"] in (3, 4, 5)
            assert entry["detected_by"] in ("open", "tree", "full", "signatures")


@pytest.mark.parametrize("entry", _params())
def test_appimg_gives_the_expected_verdict(entry: dict[str, Any]) -> None:
    image = str(SUITE / entry["file"])
    status, stderr = run("verify", "--full", image)
    assert status == entry["exit_status"], stderr
    if status:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("appimg verify: error: "), stderr
        assert ERROR_STATUS[entry["error"]] == status  # spec/errors.md
    expected_inspect = entry.get("inspect_exit_status", 0)
    if expected_inspect is not None:
        status, stderr = run("inspect", image)
        assert status == expected_inspect, stderr
    if entry["verdict"] == "valid" and entry["signed_by"]:
        keys = [arg for s in entry["signed_by"] for arg in ("--key", str(SUITE / s["key"]))]
        status, stderr = run("verify", *keys, image)
        assert status == 0, stderr
        status, _ = run("verify", "--key", str(SUITE / "keys/key-63.pub"), image)
        assert status == (0 if len(entry["signed_by"]) == 64 else 5)


def test_the_installed_command_agrees_on_a_sample() -> None:
    """The same verdicts from ``appimg`` as a separate process, for one image of each kind."""
    seen: set[tuple[str, int]] = set()
    for entry in INDEX:
        kind = (entry.get("detected_by", "valid"), entry["exit_status"])
        if kind in seen or entry["file"] in PENDING:
            continue
        seen.add(kind)
        result = appimg("verify", "--full", SUITE / entry["file"], check=False)
        assert result.returncode == entry["exit_status"], (entry["file"], result.stderr)
