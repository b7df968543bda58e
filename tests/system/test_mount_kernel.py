"""The kernel backend (root: loop devices, squashfs, dm-verity if present, overlayfs).

It must show exactly the FUSE backend's view, refuse views it cannot show,
and leave no loop device, dm map or mount behind (spec/overlay-rules.md §7).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.host.dirs import UserDirs
from appimg.services.mount import kernel, manager, table
from appimg.services.mount.kernel import Unsupported

from ..helpers import appimg, assert_one_line_error, compile_static
from .test_mount_fuse import (
    allow,
    force_unmount,
    make_host,
    pack_app,
    rules_toml,
    snapshot,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        kernel.unavailable() is not None, reason=f"kernel backend: {kernel.unavailable()}"
    ),
]


def loops_of(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    (tmp_path / "config").mkdir()
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    yield env
    for info in manager.list_mounts(UserDirs.from_env(env)):
        if info.backend == "kernel":
            kernel.unmount(info.kernel, info.mountpoint, lazy=True)
    force_unmount(runtime)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="appimg-kernel-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def both(image: Path, env: dict[str, str], base: Path) -> tuple[Path, Path, str]:
    """The image mounted with each backend, at its own mount point; the kernel's stderr."""
    fuse_at, kernel_at = base / "fuse", base / "kernel"
    fuse_at.mkdir()
    kernel_at.mkdir()
    appimg("mount", "--allow-unsigned", "--backend", "fuse", image, fuse_at, env=env)
    made = appimg("mount", "--allow-unsigned", "--backend", "kernel", image, kernel_at, env=env)
    return fuse_at, kernel_at, made.stderr


def same_view(fuse_at: Path, kernel_at: Path) -> None:
    a, b = snapshot(fuse_at), snapshot(kernel_at)
    assert set(a) == set(b)
    for rel in a:
        left, right = dict(a[rel]), dict(b[rel])
        if stat.S_ISDIR(left["type"]):
            # A merged directory's link count is not defined by either backend.
            left.pop("nlink")
            right.pop("nlink")
        assert left == right, rel


def test_kernel_backend_shows_the_same_tree(env: dict, base: Path) -> None:
    from ..helpers import make_rich_tree

    tree = make_rich_tree(base / "app")
    image = base / "Rich.appimg"
    appimg("pack", tree, "-o", image)
    fuse_at, kernel_at, stderr = both(image, env, base)
    assert snapshot(fuse_at) == snapshot(kernel_at)  # every field, nlink included
    info = next(m for m in manager.list_mounts(UserDirs.from_env(env)) if m.backend == "kernel")
    if kernel.dm_verity_available():
        assert "dm-verity" in info.verity
    else:
        assert "not enforced by the kernel" in stderr and "device-mapper" in stderr
        assert "device-mapper is unavailable" in appimg("mounts", env=env).stdout
    appimg("umount", kernel_at, env=env)
    appimg("umount", fuse_at, env=env)
    assert str(kernel_at) not in table.mount_table()
    assert wait_until(lambda: loops_of(image) == "", 5), loops_of(image)


def test_kernel_backend_with_host_rules(env: dict, base: Path) -> None:
    host = make_host(base)
    rules = rules_toml(
        [
            (host / "replace", "/replace", "replace"),
            (host / "under", "/under", "under"),
            (host / "over", "/over", "over"),
            (host / "replace", "/deep/er/place", "replace"),
            (host / "replace" / "r1", "/etc/r1", "over"),
            (host / "via", "/via", "replace"),
        ]
    )
    image = pack_app(
        base,
        {"replace/app-only": b"hidden", "under/clash": b"app clash", "under/shared/a": b"a",
         "over/clash": b"app clash", "over/shared/a": b"a", "etc/keep": b"app etc"},
        rules, symlinks={"up": "../../../etc"}, name="KOverlay",
    )  # fmt: skip
    folder = Path(env["XDG_CONFIG_HOME"]) / "appimg" / "host-paths.d"
    folder.mkdir(parents=True)
    paths = [str(host / p) for p in ("replace", "under", "over", "via")]
    (folder / "t.toml").write_text(f"allow = {paths!r}\n".replace("'", '"'))
    fuse_at, kernel_at, _ = both(image, env, base)
    same_view(fuse_at, kernel_at)
    assert os.readlink(kernel_at / "via") == "replace"  # a host symlink shown as one
    assert (kernel_at / "over" / "clash").read_bytes() == b"host clash"
    assert (kernel_at / "under" / "clash").read_bytes() == b"app clash"
    assert (kernel_at / "etc" / "r1").read_bytes() == b"host r1"
    with pytest.raises(OSError):
        (kernel_at / "under" / "new").write_bytes(b"x")  # read-only all the way down
    appimg("umount", kernel_at, env=env)
    appimg("umount", fuse_at, env=env)
    assert not [m for m in table.mount_table() if m.startswith(str(base))]
    assert wait_until(lambda: loops_of(image) == "", 5)


def test_kernel_backend_refuses_what_it_cannot_show(env: dict, base: Path) -> None:
    host = make_host(base)
    allow(env, host)  # denies under/hidden: a hole overlayfs cannot make
    image = pack_app(base, {"a": b"a"}, f'[[host]]\npath = "{host}/under"\nat = "/u"\n',
                     name="Holes")  # fmt: skip
    refused = appimg(
        "mount", "--allow-unsigned", "--backend", "kernel", image, env=env, check=False
    )
    assert_one_line_error(refused)
    assert "cannot show this view" in refused.stderr and "hidden" in refused.stderr
    assert loops_of(image) == ""
    auto = appimg("mount", "--allow-unsigned", "--json", image, env=env)
    assert '"backend": "fuse"' in auto.stdout
    appimg("umount", image, env=env)


def test_whiteout_lookalikes_are_refused() -> None:
    """overlayfs would hide a 0:0 device node that the FUSE view shows."""

    class Reader:
        class superblock:
            xattr_id_table_start = (1 << 64) - 1

        def walk(self) -> Iterator[tuple[str, object]]:
            yield "/", type("Root", (), {"kind": "dir", "rdev": 0})()
            yield "/dev0", type("Dev", (), {"kind": "char", "rdev": 0})()

    with pytest.raises(Unsupported, match="whiteout"):
        kernel._check_no_whiteouts(Reader())


def test_reference_counted_kernel_mount(env: dict, base: Path) -> None:
    image = pack_app(base, {"a": b"kernel"}, name="KRefs")
    info = manager.mount_image(image, UserDirs.from_env(env), backend="kernel", allow_unsigned=True)
    try:
        assert info.backend == "kernel"
        assert (Path(info.mountpoint) / "a").read_bytes() == b"kernel"
    finally:
        manager.release(info)
    assert wait_until(lambda: info.mountpoint not in table.mount_table(), 5)
    assert wait_until(lambda: manager.list_mounts(UserDirs.from_env(env)) == [], 3)
    assert wait_until(lambda: loops_of(image) == "", 5)
    time.sleep(0.1)


EUID_PROGRAM = """#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d\\n", (int)geteuid()); return 0; }
"""


def test_every_kernel_mount_is_nosuid_nodev(env: dict, base: Path) -> None:
    """A signed but hostile payload with a setuid-root program: mounted by root with the
    kernel backend, it must not make another user root (overlayfs and bind mounts do
    not inherit nosuid/nodev from the squashfs below them)."""
    from ..users import ensure_user, run_as

    program = compile_static(EUID_PROGRAM, base / "euid")
    host = make_host(base)
    image = pack_app(base, {"bin/euid": program.read_bytes()},
                     rules_toml([(host / "over", "/over", "over")]), name="Suid")  # fmt: skip
    # The packer keeps the mode bits: make the payload's program setuid root.
    tree = base / "Suid-app"
    (tree / "bin" / "euid").chmod(0o4755)
    appimg("pack", tree, "-o", image)
    allow(env, host)
    at = base / "mnt"
    at.mkdir()
    appimg("mount", "--allow-unsigned", "--backend", "kernel", image, at, env=env)
    try:
        assert (at / "bin" / "euid").stat().st_mode & stat.S_ISUID  # shown as it is...
        mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        ours = [m for m in mounts if m[4] == str(at) or m[4].startswith(f"{at}/")]
        assert len(ours) >= 2  # the merged root and the host rule's overlay
        for fields in ours:
            options = fields[5].split(",")
            assert "nosuid" in options and "nodev" in options, fields
        user = ensure_user()
        out = run_as(user, [str(at / "bin" / "euid")], {"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().strip() == str(user.pw_uid)  # ...but gives no root
    finally:
        appimg("umount", at, env=env)
