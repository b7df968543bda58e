"""Crash-safe file operations (spec/xdg-index.md §Transactions): ``appimg.atomic``.

``replace_file`` is killed with SIGKILL before every system call it makes and at
random moments, and the file is always the old or the new one, whole, with its
mode. ``write_file`` (the step that fills a fresh temporary file) refuses a
symlink in its place; ``copy_file`` copies in the kernel or, where it cannot,
by reads and writes; ``unlink`` and ``remove_empty_dirs`` tidy up.
"""

from __future__ import annotations

import errno
import inspect
import os
import random
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg import atomic
from appimg.errors import StoreError


def content(n: int) -> bytes:
    """Version ``n`` of the file: its header says which, so a torn file is recognisable."""
    body = bytes([n % 251]) * (1000 + (n * 7919) % 300_000)
    return f"version {n} {len(body)}\n".encode() + body


#: The children define content() as the test does.
CONTENT = inspect.getsource(content)

#: Kills itself with SIGKILL right before the STEP-th system call of one replace_file
#: (STEP -1: none, and prints the count). Writes are cut to 64 KiB, as a short
#: write is, so that a kill can also land between two writes.
STEPPED = (
    CONTENT
    + r"""
import os, signal, sys
from pathlib import Path
from appimg import atomic
path, version, step, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
calls = []
def wrap(name):
    real = getattr(os, name)
    def call(*args, **kwargs):
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGKILL)
        calls.append(name)
        if name == "write":
            args = (args[0], args[1][: 1 << 16])
        return real(*args, **kwargs)
    setattr(os, name, call)
for name in ("open", "write", "fchmod", "fsync", "close", "rename", "unlink"):
    wrap(name)
atomic.replace_file(path, content(version), mode)
print(" ".join(calls))
"""
)

#: Replaces the file with new versions until it is killed.
LOOPING = (
    CONTENT
    + r"""
import sys
from pathlib import Path
from appimg.atomic import replace_file
path, version = Path(sys.argv[1]), int(sys.argv[2])
print("go", flush=True)
while True:
    version += 1
    replace_file(path, content(version), 0o640)
"""
)


def version_of(path: Path) -> int:
    """The version whose content ``path`` holds entirely; fails on anything else."""
    data = path.read_bytes()
    header = data.split(b"\n", 1)[0].split()
    assert header[0] == b"version", data[:40]
    n = int(header[1])
    assert data == content(n), f"torn: version {n}, {len(data)} bytes"
    return n


def leftovers(path: Path) -> set[str]:
    """Names in the file's directory other than the file and its temporary files."""
    return {
        name
        for name in os.listdir(path.parent)
        if name != path.name and not name.startswith(f".{path.name}.tmp-")
    }


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o077)  # modes must not depend on it
    yield
    os.umask(old)


# -- replace_file: old or new, whole, at every kill point ------------------------------------


def test_replace_file_killed_before_each_system_call(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    old, new = 20, 21  # 150 to 200 KiB: three writes each

    def run(step: int) -> subprocess.CompletedProcess:
        atomic.replace_file(path, content(old), 0o600)
        argv = [sys.executable, "-c", STEPPED, str(path), str(new), str(step), str(0o640)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    full = run(-1)
    assert full.returncode == 0, full.stderr
    calls = full.stdout.split()
    assert calls.count("write") == 3 and "rename" in calls, calls
    assert version_of(path) == new
    for step, call in enumerate(calls):
        killed = run(step)
        assert killed.returncode == -signal.SIGKILL, (step, killed.stderr)
        renamed = "rename" in calls[:step]
        assert version_of(path) == (new if renamed else old), (step, call)
        assert stat.S_IMODE(path.stat().st_mode) == (0o640 if renamed else 0o600)
        assert leftovers(path) == set()  # a temporary file may be left, nothing else


def test_replace_file_killed_at_random_moments(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    atomic.replace_file(path, content(0), 0o640)
    rng = random.Random(7)
    seen = set()
    version = 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOPING, str(path), str(version)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.08))
        except subprocess.TimeoutExpired:
            proc.kill()
        assert proc.wait() == -signal.SIGKILL
        version = version_of(path)
        seen.add(version)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert leftovers(path) == set()
    assert len(seen) > 5  # the kills landed at many different points


# -- replace_file and write_file: modes, replacing, symlinks ----------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o755, 0o640])
def test_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: None, mode: int) -> None:
    atomic.write_file(tmp_path / "w", b"data", mode)
    atomic.replace_file(tmp_path / "r", b"data", mode)
    for name in ("w", "r"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    # Replacing gives the new mode too.
    atomic.write_file(tmp_path / "w", b"more", 0o444 if mode != 0o444 else 0o400)
    atomic.replace_file(tmp_path / "r", b"more", 0o400)
    assert stat.S_IMODE((tmp_path / "r").stat().st_mode) == 0o400
    assert (tmp_path / "r").read_bytes() == b"more"


def test_default_mode_is_0644(tmp_path: Path, umask: None) -> None:
    atomic.replace_file(tmp_path / "r", b"x")
    atomic.write_file(tmp_path / "w", b"x")
    assert stat.S_IMODE((tmp_path / "r").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "w").stat().st_mode) == 0o644


def test_write_file_replaces_a_longer_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    atomic.write_file(path, b"short")
    assert path.read_bytes() == b"short"
    atomic.write_file(path, b"")
    assert path.read_bytes() == b""


def test_replace_file_puts_a_new_inode_in_place(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    other = tmp_path / "hardlink"
    os.link(path, other)
    atomic.replace_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert other.read_bytes() == b"old"  # a reader of the old file keeps the old content
    assert sorted(os.listdir(tmp_path)) == ["f", "hardlink"]


def test_write_file_refuses_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(OSError) as caught:
        atomic.write_file(link, b"evil")
    assert caught.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"precious"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError):
        atomic.write_file(tmp_path / "dangling", b"evil")
    assert not (tmp_path / "nowhere").exists()


def test_replace_file_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    atomic.replace_file(link, b"new")
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert victim.read_bytes() == b"precious"


def test_replace_file_refuses_a_symlink_planted_at_its_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "f"
    path.write_bytes(b"old")
    (tmp_path / f".f.tmp-{os.getpid()}").symlink_to(victim)
    with pytest.raises(OSError):
        atomic.replace_file(path, b"evil")
    assert victim.read_bytes() == b"precious"
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f", "victim"]  # the planted link is gone


def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    (target / "inside").mkdir(parents=True)  # a non-empty directory cannot be renamed over
    with pytest.raises(OSError):
        atomic.replace_file(target, b"data")
    assert os.listdir(tmp_path) == ["dir"]


# -- copy_file ----------------------------------------------------------------------------------


def test_copy_file_copies_and_returns_the_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = random.Random(1).randbytes(3 << 20)
    src.write_bytes(data)
    src.chmod(0o600)
    assert atomic.copy_file(src, tmp_path / "dst") == len(data)
    assert (tmp_path / "dst").read_bytes() == data
    assert stat.S_IMODE((tmp_path / "dst").stat().st_mode) == 0o644 & ~_umask()
    (tmp_path / "empty").write_bytes(b"")
    assert atomic.copy_file(tmp_path / "empty", tmp_path / "empty-copy") == 0
    assert (tmp_path / "empty-copy").read_bytes() == b""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_copy_file_without_reflink_or_copy_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older kernels refuse copy_file_range across filesystems: the plain copy takes over.
    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(atomic, "_reflink", lambda sfd, dfd: False)
    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = random.Random(2).randbytes((2 << 20) + 12345)
    (tmp_path / "src").write_bytes(data)
    assert atomic.copy_file(tmp_path / "src", tmp_path / "dst") == len(data)
    assert (tmp_path / "dst").read_bytes() == data


def test_copy_file_never_overwrites_or_follows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"image")
    existing = tmp_path / "existing"
    existing.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic.copy_file(src, existing)
    assert existing.read_bytes() == b"old"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        atomic.copy_file(src, dangling)
    assert not (tmp_path / "target").exists()


def test_copy_file_of_a_missing_source_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing"):
        atomic.copy_file(tmp_path / "missing", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


# -- unlink and remove_empty_dirs -------------------------------------------------------------


def test_unlink(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert atomic.unlink(path) is True
    assert atomic.unlink(path) is False
    victim = tmp_path / "victim"
    victim.write_bytes(b"kept")
    (tmp_path / "link").symlink_to(victim)
    assert atomic.unlink(tmp_path / "link") is True
    assert victim.read_bytes() == b"kept"
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic.unlink(tmp_path / "dir")


def test_remove_empty_dirs(tmp_path: Path) -> None:
    stop = tmp_path / "store"
    deep = stop / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (stop / "a" / "keep").write_bytes(b"")
    atomic.remove_empty_dirs(deep, stop)
    assert not (stop / "a" / "b").exists()
    assert (stop / "a" / "keep").exists()  # `a` is not empty: the walk ends there
    os.unlink(stop / "a" / "keep")
    atomic.remove_empty_dirs(stop / "a", stop)
    assert stop.is_dir() and os.listdir(stop) == []  # never `stop` itself
    atomic.remove_empty_dirs(stop, stop)
    assert stop.is_dir()


def test_remove_empty_dirs_stays_below_stop(tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "empty"
    outside.mkdir(parents=True)
    atomic.remove_empty_dirs(outside, tmp_path / "store")
    assert outside.is_dir()  # not under `stop`: nothing is removed


def test_remove_empty_dirs_does_not_follow_a_symlink(tmp_path: Path) -> None:
    stop = tmp_path / "store"
    stop.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (stop / "link").symlink_to(elsewhere)
    atomic.remove_empty_dirs(stop / "link", stop)
    assert elsewhere.is_dir()
    assert (stop / "link").is_symlink()  # rmdir of a symlink fails: left alone
