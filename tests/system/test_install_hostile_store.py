"""A store another program of the user tampered with (spec/xdg-index.md §2, §6.4): a
crafted index.json is a one-line StoreError, never a deletion outside the store, and
symlinks planted in exports/ are replaced or removed, never written or deleted through."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..helpers import appimg, assert_one_line_error
from .test_install_store import assert_consistent, home_env, store_dir


@pytest.fixture
def installed(tmp_path: Path, hello_image: Path) -> tuple[Path, dict[str, str], Path]:
    """A HOME with Hello installed and a precious file of the user beside the store."""
    home = tmp_path / "home"
    env = home_env(home)
    appimg("install", hello_image, "--trust", env=env)
    precious = home / ".bashrc"
    precious.write_text("# the user's own\n")
    return home, env, precious


def _tamper(home: Path, change) -> None:
    path = store_dir(home) / "index.json"
    index = json.loads(path.read_bytes())
    change(index["apps"]["org.example.Hello"])
    path.write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("file", "ABSOLUTE"),
        ("file", "images/../../../../.bashrc"),
        ("file", "images/org.example.Hello/../../../../.bashrc"),
        ("file", "exports/share/x.appimg"),
        ("file", "images/org.example.Hello/a\u0000b.appimg"),
        ("file", "images/x/" + "a" * 5000 + ".appimg"),
        ("exported", "../../../../.bashrc"),
        ("exported", "ABSOLUTE"),
        ("exported", "applications//x.desktop"),
        ("xdg_files", "../../.bashrc"),
    ],
)
def test_crafted_index_paths_are_a_store_error(
    installed: tuple[Path, dict[str, str], Path], member: str, value: str
) -> None:
    home, env, precious = installed
    value = str(precious) if value == "ABSOLUTE" else value

    def change(app: dict) -> None:
        if member == "file":
            app["versions"][0]["file"] = value
        elif member == "exported":
            app["exported"][value] = "0" * 64
        else:
            app["versions"][0]["xdg_files"][value] = "share/x"

    _tamper(home, change)
    for args in (("uninstall", "org.example.Hello"), ("list",), ("rollback", "org.example.Hello")):
        result = appimg(*args, env=env, check=False)
        assert_one_line_error(result)
        assert result.returncode == 7 and "invalid" in result.stderr, result.stderr
    assert precious.read_text() == "# the user's own\n"


def test_crafted_journal_deletes_nothing_outside(
    installed: tuple[Path, dict[str, str], Path],
) -> None:
    home, env, precious = installed
    store = store_dir(home)
    index = (store / "index.json").read_bytes()
    import hashlib

    committed = hashlib.sha256(index).hexdigest()
    (store / "journal.json").write_text(json.dumps({
        "tx": "../../..", "op": "install", "app": "x", "after_sha256": committed,
        "added_images": [], "obsolete_images": [str(precious), "images/../../.bashrc"],
    }))  # fmt: skip
    appimg("list", env=env)
    assert precious.read_text() == "# the user's own\n"
    assert_consistent(home)


def _plant(link: Path, target: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        import shutil

        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


@pytest.mark.parametrize(
    "where",
    ["applications/org.example.Hello.desktop", "applications", "icons/hicolor/48x48/apps", "."],
)
def test_planted_symlinks_are_not_followed(
    installed: tuple[Path, dict[str, str], Path], hello_image: Path, where: str
) -> None:
    home, env, precious = installed
    share = store_dir(home) / "exports" / "share"
    outside = home / "outside"
    outside.mkdir()
    (outside / "org.example.Hello.desktop").write_text("mine\n")
    (outside / "org.example.Hello.png").write_text("mine\n")
    target = precious if where.endswith(".desktop") else outside
    link = share if where == "." else share / where
    before = {p.name: p.read_text() for p in outside.iterdir()}

    _plant(link, target)
    appimg("uninstall", "org.example.Hello", env=env)
    assert precious.read_text() == "# the user's own\n"
    assert {p.name: p.read_text() for p in outside.iterdir()} == before
    assert not store_dir(home).exists() or not os.path.lexists(link)

    appimg("install", hello_image, "--trust", env=env)
    _plant(link, target)
    (store_dir(home) / "tmp").mkdir(exist_ok=True)  # makes the next command reconcile first
    result = appimg("uninstall", "org.example.Hello", env=env)
    assert result.returncode == 0
    assert precious.read_text() == "# the user's own\n"
    assert {p.name: p.read_text() for p in outside.iterdir()} == before

    appimg("install", hello_image, "--trust", env=env)
    _plant(link, target)
    # Reconciling (here by a read command) replaces the planted link by a real file.
    (store_dir(home) / "tmp").mkdir(exist_ok=True)
    appimg("list", env=env)
    assert precious.read_text() == "# the user's own\n"
    assert {p.name: p.read_text() for p in outside.iterdir()} == before
    assert not any(p.is_symlink() for p in share.rglob("*"))
    assert_consistent(home)


@pytest.mark.parametrize("where", ["images", "images/org.example.Hello", "tmp", "exports"])
def test_planted_store_symlinks_are_not_followed(
    installed: tuple[Path, dict[str, str], Path], hello_image: Path, where: str
) -> None:
    """Links where the store keeps images, staging or exports: a command writes and
    deletes only inside the store, never through the link."""
    home, env, precious = installed
    store = store_dir(home)
    outside = home / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine\n")
    (outside / "org.example.Hello").mkdir()
    (outside / "org.example.Hello" / "keep.appimg").write_text("mine\n")
    (outside / "share").mkdir()
    (outside / "share" / "keep").write_text("mine\n")

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(outside)): p.read_bytes() if p.is_file() else b"dir"
                for p in sorted(outside.rglob("*"))}  # fmt: skip

    before = snapshot()
    link = store / where
    if link.exists():
        import shutil

        shutil.copytree(link, outside / "copied", symlinks=True)
        shutil.rmtree(link)
        before = snapshot()
    link.symlink_to(outside)
    uninstall = ("uninstall", "org.example.Hello")
    for args in (("list",), uninstall, ("install", str(hello_image), "--trust"), uninstall):
        appimg(*args, env=env, check=False)
        assert snapshot() == before, args
        assert precious.read_text() == "# the user's own\n"
