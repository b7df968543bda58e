"""The extraction cache used without FUSE (spec/run.md, "Without FUSE"): its
tree digest and what :func:`prune` removes."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from appimg.host.dirs import UserDirs
from appimg.services.mount.extracted import tree_digest
from appimg.services.store.extracted_cache import cache_root, prune


def _dirs(tmp_path: Path) -> UserDirs:
    return UserDirs.from_env({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")})


def _copy(base: Path, root: str) -> None:
    (base / root / "tree").mkdir(parents=True)
    (base / root / "complete").write_text("{}")
    (base / f".{root}.use").write_bytes(b"")
    (base / f".{root}.fill").write_bytes(b"")


def test_the_digest_sees_a_change_of_content_mode_or_name(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    app = tree / "bin" / "app"
    app.write_text("one")
    before = tree_digest(tree)
    assert tree_digest(tree) == before
    app.write_text("two")  # same size: the change time still moves
    after_write = tree_digest(tree)
    assert after_write != before
    app.chmod(0o700)
    assert tree_digest(tree) != after_write
    changed = tree_digest(tree)
    app.rename(tree / "bin" / "other")
    assert tree_digest(tree) != changed


def test_prune_keeps_installed_and_used_copies_and_removes_the_rest(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    base = cache_root(dirs)
    kept, used, gone = "a" * 64, "b" * 64, "c" * 64
    for root in (kept, used, gone):
        _copy(base, root)
    (base / f".{gone}.tmp" / "tree").mkdir(parents=True)  # a killed fill's leftovers
    (base / "unrelated").write_text("not ours")
    fd = os.open(base / f".{used}.use", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a run is using it
        assert prune(dirs, {kept}) == [gone]
    finally:
        os.close(fd)
    names = set(os.listdir(base))
    assert kept in names and used in names and "unrelated" in names
    assert not {n for n in names if gone in n}
    assert prune(dirs, {kept}) == [used]  # the run is over
    assert prune(dirs, set()) == [kept]
    assert os.listdir(base) == ["unrelated"]


def test_prune_removes_the_cache_directory_once_empty(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    _copy(cache_root(dirs), "d" * 64)
    (cache_root(dirs) / ("d" * 64) / "tree").chmod(0o500)  # read-only, as images have
    assert prune(dirs, set()) == ["d" * 64]
    assert not cache_root(dirs).exists()
