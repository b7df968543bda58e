"""The low-level FUSE binding (appimg.services.mount.lowlevel, spec/overlay-rules.md §7):
what the kernel caches, what still reaches the server, and the high-level fallback.

Mounts are served in this process, in a thread, so that the tests can count the
requests that reach the server; each is unmounted (``fusermount3 -u -z``) in a finalizer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.format.image import Image
from appimg.host.rules import Rule
from appimg.services.mount import frontend, lowlevel
from appimg.services.mount.lowlevel import Inodes
from appimg.services.view import View

from ..helpers import appimg, pack_small_image
from .test_mount_fuse import force_unmount, pack_app, snapshot

FUSERMOUNT = shutil.which("fusermount3")
pytestmark = pytest.mark.skipif(
    FUSERMOUNT is None or not os.path.exists("/dev/fuse") or not lowlevel.available(),
    reason="needs FUSE and libfuse 3",
)


@pytest.fixture
def root_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Root's mounts in a private runtime dir, with their own config dir."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    (tmp_path / "config").mkdir()
    yield {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    force_unmount(runtime)


@contextlib.contextmanager
def served(
    image: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch, **view_args: object
) -> Iterator[lowlevel.Server]:
    """Serve ``image`` at ``mnt`` with the low-level binding in a thread; the server."""
    servers: list[lowlevel.Server] = []

    class Spy(lowlevel.Server):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            servers.append(self)

    monkeypatch.setattr(lowlevel, "Server", Spy)
    mnt.mkdir(exist_ok=True)
    opened = Image.open(image)
    view = View(opened.payload, **view_args)  # type: ignore[arg-type]
    ready = threading.Event()
    thread = threading.Thread(
        target=lowlevel.serve, args=(view, str(mnt)),
        kwargs={"label": "test", "on_ready": ready.set}, daemon=True,
    )  # fmt: skip
    thread.start()
    try:
        assert ready.wait(20), "the mount did not become ready"
        yield servers[0]
    finally:
        subprocess.run([FUSERMOUNT or "fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        thread.join(20)
        opened.close()
    assert not thread.is_alive()


def walk(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry's (mode, size), listing every directory."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mode, st.st_size)
    return out


def test_image_only_listings_are_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"dir{i}/file{j}.txt": b"x" * j for i in range(20) for j in range(30)}
    image = pack_app(tmp_path, files)
    with served(image, tmp_path / "mnt", monkeypatch) as server:
        first = walk(tmp_path / "mnt")
        assert len(first) > 600
        calls = server.readdir_calls
        assert calls >= 21  # every directory was read once
        for _ in range(3):
            assert walk(tmp_path / "mnt") == first
            assert sorted(os.listdir(tmp_path / "mnt" / "dir3")) == sorted(
                f"file{j}.txt" for j in range(30)
            )
        # The kernel answered every later listing from its own cache.
        assert server.readdir_calls == calls
        # Every entry the kernel holds has a node id, and only those.
        assert len(server.inodes) <= len(first) + 1


def test_host_directory_shows_host_changes_after_host_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "a").write_text("a\n")
    image = pack_small_image(tmp_path)
    rules = (Rule(str(host), "/h", "replace", "manifest"),)
    ttl = 0.3
    mnt = tmp_path / "mnt"
    with served(image, mnt, monkeypatch, rules=rules, host_ttl=ttl) as server:
        assert sorted(os.listdir(mnt / "h")) == ["a"]
        assert "h" in os.listdir(mnt)
        # The image-only directory's listing is cached by the kernel also in a host view.
        assert sorted(os.listdir(mnt / "d")) == ["b.bin", "link"]
        calls = server.readdir_calls
        assert sorted(os.listdir(mnt / "d")) == ["b.bin", "link"]
        assert server.readdir_calls == calls
        # The host directory's is not: it is read again on every open.
        assert sorted(os.listdir(mnt / "h")) == ["a"]
        assert server.readdir_calls > calls
        (host / "b").write_text("bee\n")
        (host / "a").unlink()
        time.sleep(ttl + 0.2)
        assert sorted(os.listdir(mnt / "h")) == ["b"]
        assert (mnt / "h" / "b").read_text() == "bee\n"
        assert not (mnt / "h" / "a").exists()
        # A file swapped for a directory of the same name is seen as one.
        (host / "b").unlink()
        (host / "b").mkdir()
        (host / "b" / "inner").write_text("in\n")
        time.sleep(ttl + 0.2)
        assert (mnt / "h" / "b").is_dir()
        assert (mnt / "h" / "b" / "inner").read_text() == "in\n"


def test_bad_block_is_eio_and_the_mount_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    victim = rng.randbytes(400_000)  # incompressible: stored as is, easy to find
    files = {"data/victim.bin": victim, "data/other.txt": b"fine\n" * 1000}
    image = pack_app(tmp_path, files)
    raw = bytearray(image.read_bytes())
    where = raw.find(victim[200_000:200_064])
    assert where > 0
    raw[where + 10] ^= 0xFF
    image.write_bytes(bytes(raw))
    mnt = tmp_path / "mnt"
    with served(image, mnt, monkeypatch) as server:
        with pytest.raises(OSError) as caught:
            (mnt / "data" / "victim.bin").read_bytes()
        assert caught.value.errno == errno.EIO
        with open(mnt / "data" / "victim.bin", "rb") as handle:
            assert handle.read(131072) == victim[:131072]
        assert (mnt / "data" / "other.txt").read_bytes() == b"fine\n" * 1000
        assert server.failures >= 1


def test_high_level_fallback_serves_the_same_tree(tmp_path: Path, root_env: dict[str, str]) -> None:
    files = {"a/b/c.txt": b"c\n", "a/big.bin": random.Random(3).randbytes(300_000)}
    image = pack_app(tmp_path, files, symlinks={"a/link": "b/c.txt"})
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    low = Path(appimg("mount", "--allow-unsigned", "--backend", "fuse", image,
                      tmp_path / "low", env=root_env).stdout.strip())  # fmt: skip
    env = {**root_env, "APPIMG_FUSE_API": frontend.HIGHLEVEL}
    high = Path(appimg("mount", "--allow-unsigned", "--backend", "fuse", image,
                       tmp_path / "high", env=env).stdout.strip())  # fmt: skip
    try:
        assert snapshot(high) == snapshot(low)
        assert (high / "a" / "link").read_text() == "c\n"
    finally:
        appimg("umount", low, env=root_env)
        appimg("umount", high, env=root_env)


def test_node_ids_live_as_long_as_the_kernel_holds_them() -> None:
    from appimg.services.view import Node

    def node(kind: str) -> Node:
        n = Node()
        n.kind = kind
        return n

    root = node("dir")
    inodes = Inodes(root)
    a = inodes.ref("/a", node("file"))
    assert inodes.ref("/a", node("file")) == a  # the same path keeps its id
    b = inodes.ref("/b", node("dir"))
    assert len({1, a, b}) == 3 and len(inodes) == 3
    inodes.forget(a, 1)
    assert inodes.get(a)[0] == "/a"  # one lookup left
    inodes.forget(a, 1)
    with pytest.raises(OSError) as caught:
        inodes.get(a)
    assert caught.value.errno == errno.ESTALE
    assert inodes.ref("/a", node("file")) not in (a, b)  # ids are never reused
    # A path whose type changed is a new inode for the kernel.
    assert inodes.ref("/b", node("symlink")) != b
    inodes.forget(b, 1)
    assert inodes.path_of(b) == f"<node {b}>"
    inodes.forget(1, 5)
    assert inodes.get(1)[0] == "/"  # the root stays
