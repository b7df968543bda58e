"""appimg mount with FUSE: real mounts, as root and as a normal user (spec/overlay-rules.md §7-§9).

Every test unmounts what it mounted (``fusermount3 -u -z`` in a finalizer),
also when it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.errors import PolicyError, ToolError
from appimg.host.dirs import UserDirs
from appimg.services.mount import daemon, manager, state, table

from ..helpers import appimg, assert_one_line_error, make_rich_tree, relax_readonly
from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    run_as,
    user_env,
    user_tmpdir,
)

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")
pytestmark = pytest.mark.skipif(
    FUSERMOUNT is None or not os.path.exists("/dev/fuse"), reason="needs FUSE (fuse3)"
)

# -- helpers shared with test_mount_kernel ------------------------------------------------

#: Runs as whoever must see the tree: one JSON line per entry, symlinks not followed.
SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        st = os.lstat(path)
        row = {"type": stat.S_IFMT(st.st_mode), "nlink": st.st_nlink}
        if stat.S_ISLNK(st.st_mode):
            row["target"] = os.readlink(path)
        else:
            row["mode"] = stat.S_IMODE(st.st_mode)
            row["mtime"] = int(st.st_mtime)
        if stat.S_ISREG(st.st_mode):
            row["size"] = st.st_size
            try:
                with open(path, "rb") as handle:
                    row["sha256"] = hashlib.sha256(handle.read()).hexdigest()
            except OSError as exc:
                row["error"] = exc.errno
        out[rel] = row
print(json.dumps(out))
"""


def snapshot(root: Path, user: object = None, env: dict | None = None) -> dict:
    argv = [sys.executable, "-c", SNAPSHOT, str(root)]
    if user is None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        return json.loads(proc.stdout)
    proc = run_as(user, argv, env or {}, timeout=120)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def mounted_under(root: Path) -> list[str]:
    return [m for m in table.mount_table() if m.startswith(str(root))]


def force_unmount(runtime: Path) -> None:
    """Finalizer: nothing this test mounted may outlive it."""
    records = runtime / "appimg" / "mounts"
    pids = []
    for record in records.glob("*.json") if records.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            pids.append(json.loads(record.read_text()).get("pid"))
    for mountpoint in sorted(mounted_under(runtime), reverse=True):
        subprocess.run([FUSERMOUNT or "fusermount3", "-u", "-z", mountpoint], capture_output=True)
        if mountpoint in table.mount_table():
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    for pid in pids:
        if isinstance(pid, int) and pid > 1:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]


def trust(env: dict[str, str], public_key: Path, owner: object = None) -> None:
    folder = Path(env["XDG_CONFIG_HOME"]) / "appimg" / "trusted-keys"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(public_key, folder / "release.pub")
    if owner is not None:
        for path in (Path(env["XDG_CONFIG_HOME"]), folder.parent, folder, folder / "release.pub"):
            os.chown(path, owner.pw_uid, owner.pw_gid)  # type: ignore[attr-defined]


def out(proc: subprocess.CompletedProcess) -> tuple[str, str]:
    def text(value: object) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    return text(proc.stdout), text(proc.stderr)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rich_image(keypair: tuple[Path, Path]) -> Iterator[Path]:
    # Outside root's private pytest directories, so that the test user can open it.
    root = Path(tempfile.mkdtemp(prefix="appimg-rich-", dir="/tmp"))
    root.chmod(0o755)
    tree = make_rich_tree(root / "app")
    image = root / "Rich.appimg"
    appimg("pack", tree, "-o", image, "--sign", keypair[0])
    relax_readonly(tree)
    image.chmod(0o644)
    yield image
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def root_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Root's mounts in a private runtime dir, with their own config dir."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    config = tmp_path / "config"
    config.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(config)}
    yield env
    force_unmount(runtime)


@pytest.fixture
def user_setup() -> Iterator[tuple[object, dict[str, str], Path]]:
    """The unprivileged test user with a fresh HOME, config and runtime dir."""
    user = ensure_user()
    allow_fuse_for_users()
    home = user_tmpdir(user, "appimg-mount-home-")
    runtime = user_tmpdir(user, "appimg-mount-run-")
    runtime.chmod(0o700)
    env = user_env(user, home, XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(home / ".config"))
    (home / ".config").mkdir()
    os.chown(home / ".config", user.pw_uid, user.pw_gid)
    yield user, env, home
    force_unmount(runtime)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)


def pack_app(root: Path, files: dict[str, bytes], toml_extra: str = "", *, key: Path | None = None,
             symlinks: dict[str, str] | None = None, name: str = "Fix") -> Path:  # fmt: skip
    app = root / f"{name}-app"
    (app / "bin").mkdir(parents=True)
    (app / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    (app / "bin" / "app").chmod(0o755)
    (app / "appimg.toml").write_text(
        f'id = "org.example.{name}"\nname = "{name}"\nversion = "1"\nentrypoint = "bin/app"\n'
        + toml_extra
    )
    for rel, data in files.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(data)
    for rel, target in (symlinks or {}).items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, app / rel)
    image = root / f"{name}.appimg"
    args = ["pack", app, "-o", image] + (["--sign", key] if key else [])
    appimg(*args)
    image.chmod(0o644)
    return image


# -- 1. a normal user mounts, reads and unmounts a signed image ----------------------------


@pytest.mark.root
def test_user_mount_matches_the_extracted_tree(
    rich_image: Path, keypair: tuple[Path, Path], user_setup: tuple
) -> None:
    user, env, home = user_setup
    trust(env, keypair[1], owner=user)
    mounted = appimg_as(user, env, "mount", "--allow-unsigned", rich_image)
    stdout, stderr = out(mounted)
    assert mounted.returncode == 0, stderr
    assert "warning" not in stderr  # signed by a trusted key: nothing to warn about
    mountpoint = Path(stdout.strip())
    assert mountpoint.parent == Path(env["XDG_RUNTIME_DIR"]) / "appimg"
    assert str(mountpoint) in table.mount_table()

    extracted = home / "extracted"
    done = appimg_as(user, env, "extract", rich_image, extracted)
    assert done.returncode == 0, out(done)[1]
    view = snapshot(mountpoint, user, env)
    tree = snapshot(extracted, user, env)
    # A directory's link count is the image's own (tar2sqfs writes 2 + entries, as the
    # kernel's squashfs also shows); the extracted copy has its file system's.
    listing = json.loads(out(appimg_as(user, env, "ls", "-R", "--json", rich_image))[0])
    dir_links = {row["path"].lstrip("/"): row["nlink"] for row in listing if row["type"] == "dir"}
    assert set(view) == set(tree)
    for rel, row in tree.items():
        mine = dict(view[rel])
        if stat.S_ISDIR(row["type"]):
            assert mine.pop("nlink") == dir_links[rel], rel
            row = {k: v for k, v in row.items() if k != "nlink"}
        if rel == "data/setuid-like":  # the mount shows the image's mode, extract drops setuid
            mine["mode"] &= ~0o6000
        assert mine == row, rel  # type, mode, mtime, nlink; size and content or target
    assert view["data/link-escape"]["target"] == "../../../../etc"  # stays a symlink

    listed = appimg_as(user, env, "mounts", "--json")
    rows = json.loads(out(listed)[0])
    assert [r["mountpoint"] for r in rows] == [str(mountpoint)]
    assert rows[0]["backend"] == "fuse" and rows[0]["status"] == "mounted"

    gone = appimg_as(user, env, "umount", mountpoint)
    assert gone.returncode == 0, out(gone)[1]
    assert str(mountpoint) not in table.mount_table()
    assert json.loads(out(appimg_as(user, env, "mounts", "--json"))[0]) == []


# -- 2. and 3. the overlay rules, refusals and no escape ----------------------------------


def make_host(base: Path) -> Path:
    host = base / "host"
    for rel, data in {
        "replace/r1": b"host r1",
        "replace/sub/r2": b"host r2",
        "under/clash": b"host clash",
        "under/u-host": b"host only",
        "under/shared/h-inner": b"host inner",
        "under/hidden/secret": b"never shown",
        "over/clash": b"host clash",
        "over/o-host": b"host only",
        "over/shared/h-inner": b"host inner",
        "denied/secret": b"never shown",
    }.items():
        (host / rel).parent.mkdir(parents=True, exist_ok=True)
        (host / rel).write_bytes(data)
    os.symlink("/etc", host / "under" / "escape")
    os.symlink("../../../..", host / "under" / "up")
    os.symlink("replace", host / "via")
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return host


def rules_toml(rules: list[tuple[Path, str, str]]) -> str:
    """``[[host]]`` tables for (host path, at, mode) triples."""
    return "".join(
        f'[[host]]\npath = "{path}"\nat = "{at}"\nmode = "{mode}"\n' for path, at, mode in rules
    )


def overlay_image(base: Path, host: Path) -> Path:
    rules = rules_toml(
        [
            (host / "replace", "/replace", "replace"),
            (host / "under", "/under", "under"),
            (host / "over", "/over", "over"),
            (host / "replace", "/deep/er/place", "replace"),
            (host / "denied", "/denied", "replace"),
            (host / "via" / "r1", "/via", "replace"),
        ]
    )
    return pack_app(
        base,
        {
            "replace/app-only": b"hidden by replace",
            "under/clash": b"app clash",
            "under/u-app": b"app only",
            "under/shared/a-inner": b"app inner",
            "over/clash": b"app clash",
            "over/o-app": b"app only",
            "over/shared/a-inner": b"app inner",
        },
        rules,
        symlinks={"up": "../../../etc"},
        name="Overlay",
    )


def allow(env: dict[str, str], host: Path, owner: object = None) -> None:
    folder = Path(env["XDG_CONFIG_HOME"]) / "appimg" / "host-paths.d"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(host / p) for p in ("replace", "under", "over", "via")]
    (folder / "test.toml").write_text(
        f"allow = {json.dumps(paths)}\ndeny = {json.dumps([str(host / 'under' / 'hidden')])}\n"
    )
    if owner is not None:
        for path in (folder.parent, folder, folder / "test.toml"):
            os.chown(path, owner.pw_uid, owner.pw_gid)  # type: ignore[attr-defined]


def read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.root
def test_overlay_rules_as_a_user(tmp_path: Path, user_setup: tuple) -> None:
    user, env, _home = user_setup
    base = user_tmpdir(user, "appimg-overlay-")
    try:
        host = make_host(base)
        image = overlay_image(base, host)
        allow(env, host, owner=user)

        strict = appimg_as(user, env, "mount", "--allow-unsigned", "--strict", image)
        assert strict.returncode == PolicyError.exit_code
        lines = out(strict)[1].strip().splitlines()
        assert len(lines) == 1 and "denied" in lines[0] and f"{host}/denied" in lines[0]

        inspect = appimg_as(user, env, "inspect", "--json", image)
        rules = {r["at"]: r for r in json.loads(out(inspect)[0])["host_rules"]["rules"]}
        assert rules["/denied"]["status"] == "denied"
        assert "no host-paths.d file allows it" in rules["/denied"]["reason"]
        assert rules["/via"]["status"] == "unavailable"  # its path goes through a symlink
        assert rules["/under"]["status"] == "granted"

        mounted = appimg_as(user, env, "mount", "--allow-unsigned", image)
        stdout, stderr = out(mounted)
        assert mounted.returncode == 0, stderr
        assert f"{host}/denied -> /denied" in stderr and "denied" in stderr
        mnt = Path(stdout.strip())
        view = snapshot(mnt, user, env)

        def names(rel: str) -> set[str]:
            return {k[len(rel) + 1 :] for k in view if k.startswith(rel + "/") and
                    "/" not in k[len(rel) + 1 :]}  # fmt: skip

        def content(rel: str) -> str:
            return view[rel]["sha256"]

        def sha(data: bytes) -> str:
            return hashlib.sha256(data).hexdigest()

        assert names("replace") == {"r1", "sub"}
        assert content("replace/r1") == sha(b"host r1")
        assert names("under") == {"clash", "u-host", "u-app", "shared", "escape", "up"}
        assert content("under/clash") == sha(b"app clash")  # under: the app wins
        assert names("under/shared") == {"a-inner", "h-inner"}
        assert names("over") == {"clash", "o-host", "o-app", "shared"}
        assert content("over/clash") == sha(b"host clash")  # over: the host wins
        assert names("over/shared") == {"a-inner", "h-inner"}
        assert names("deep/er/place") == {"r1", "sub"}  # parents synthesized
        assert "denied" not in view and "via" not in view
        assert not any("secret" in rel for rel in view)  # hidden and denied stay unseen
        # 3. No escape: symlinks stay symlinks, nothing outside the granted paths shows.
        assert view["under/escape"] == {"type": stat.S_IFLNK, "nlink": 1, "target": "/etc"}
        assert view["under/up"]["target"] == "../../../.."
        assert view["up"]["target"] == "../../../etc"
        assert set(view) == {
            "appimg.toml", "bin", "bin/app", "up",
            "replace", "replace/r1", "replace/sub", "replace/sub/r2",
            "under", "under/clash", "under/u-host", "under/u-app", "under/escape", "under/up",
            "under/shared", "under/shared/a-inner", "under/shared/h-inner",
            "over", "over/clash", "over/o-host", "over/o-app",
            "over/shared", "over/shared/a-inner", "over/shared/h-inner",
            "deep", "deep/er", "deep/er/place", "deep/er/place/r1", "deep/er/place/sub",
            "deep/er/place/sub/r2",
        }  # fmt: skip

        # A granted directory swapped for a symlink to /etc: shown as that symlink.
        os.rename(host / "over" / "shared", host / "over" / "shared-old")
        os.symlink("/etc", host / "over" / "shared")
        time.sleep(daemon.HOST_TTL + 0.2)
        probe = run_as(user, [sys.executable, "-c", (
            "import os, sys; p = sys.argv[1]; st = os.lstat(p); "
            "print(oct(st.st_mode), os.readlink(p))"
        ), str(mnt / "over" / "shared")], env)  # fmt: skip
        assert out(probe)[0].split() == [oct(stat.S_IFLNK | 0o777), "/etc"]

        listed = json.loads(out(appimg_as(user, env, "mounts", "--json"))[0])
        statuses = {r["at"]: r["status"] for r in listed[0]["rules"]}
        assert statuses["/denied"] == "denied" and statuses["/over"] == "granted"
        assert appimg_as(user, env, "umount", mnt).returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 4. a tampered payload block ------------------------------------------------------------


def test_tampered_block_is_eio_and_the_mount_survives(
    tmp_path: Path, keypair: tuple[Path, Path], root_env: dict[str, str]
) -> None:
    rng = random.Random(7)
    victim = rng.randbytes(400_000)  # incompressible: stored as is, easy to find
    files = {"data/victim.bin": victim, "data/other.txt": b"fine\n" * 1000,
             "data/big.bin": rng.randbytes(300_000)}  # fmt: skip
    image = pack_app(tmp_path, files, key=keypair[0])
    raw = bytearray(image.read_bytes())
    where = raw.find(victim[200_000:200_064])
    assert where > 0
    raw[where + 10] ^= 0xFF
    image.write_bytes(bytes(raw))
    trust(root_env, keypair[1])
    mounted = appimg("mount", "--allow-unsigned", image, env=root_env)
    assert "warning" not in mounted.stderr  # the signature still verifies: the tree root does
    mnt = Path(mounted.stdout.strip())
    probe = subprocess.run(
        [sys.executable, "-c", (
            "import sys\n"
            "try:\n    open(sys.argv[1], 'rb').read()\n"
            "except OSError as e:\n    print('errno', e.errno)\n"
            "else:\n    print('read')\n"
        ), str(mnt / "data" / "victim.bin")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.stdout.split() == ["errno", "5"], probe.stderr
    # The rest of the victim and every other file still read fine.
    with open(mnt / "data" / "victim.bin", "rb") as handle:
        assert handle.read(131072) == victim[:131072]
    assert (mnt / "data" / "other.txt").read_bytes() == b"fine\n" * 1000
    assert len((mnt / "data" / "big.bin").read_bytes()) == 300_000
    records = manager.list_mounts(UserDirs.from_env(root_env))
    assert len(records) == 1 and records[0].status == "mounted"
    log = Path(root_env["XDG_RUNTIME_DIR"]) / "appimg" / "mounts" / f"{records[0].name}.log"
    assert "EIO on read /data/victim.bin" in log.read_text()
    appimg("umount", mnt, env=root_env)


# -- 5. under load; busy and lazy unmount -----------------------------------------------------

READER = r"""
import hashlib, json, os, random, sys, time
root, expected_file, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
expected = json.load(open(expected_file))
names = sorted(expected)
rng = random.Random(seed)
deadline = time.monotonic() + seconds
count = 0
while time.monotonic() < deadline:
    rel = rng.choice(names)
    with open(os.path.join(root, rel), "rb") as handle:
        chunks = []
        while True:
            chunk = handle.read(rng.choice([4096, 65536, 1 << 20]))
            if not chunk:
                break
            chunks.append(chunk)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    if digest != expected[rel]:
        print("MISMATCH", rel, flush=True)
        sys.exit(1)
    count += 1
print(count, flush=True)
"""

SLOW_READER = r"""
import sys, time
with open(sys.argv[1], "rb") as handle:
    print("open", flush=True)
    while handle.read(4096):
        time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def load_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("load")
    rng = random.Random(3)
    files = {
        f"small/{i:03}.txt": (f"file {i}\n" * rng.randint(1, 400)).encode() for i in range(300)
    }
    files.update(
        {f"big/{i}.bin": rng.randbytes(rng.randint(200_000, 2_500_000)) for i in range(12)}
    )
    image = pack_app(root, files, name="Load")
    return image, {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


@pytest.mark.parametrize(
    "seconds", [10.0, pytest.param(60.0, marks=pytest.mark.slow)], ids=["bounded", "soak"]
)
def test_concurrent_readers_and_a_killed_one(
    load_image: tuple[Path, dict[str, str]],
    root_env: dict[str, str],
    tmp_path: Path,
    seconds: float,
) -> None:
    image, expected = load_image
    mnt = Path(appimg("mount", "--allow-unsigned", image, env=root_env).stdout.strip())
    expected_file = tmp_path / "expected.json"
    expected_file.write_text(json.dumps(expected))
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(mnt), str(expected_file),
                          str(seconds), str(seed)], stdout=subprocess.PIPE, text=True)
        for seed in range(8)
    ]  # fmt: skip
    time.sleep(1.0)
    victim = subprocess.Popen([sys.executable, "-c", SLOW_READER, str(mnt / "big" / "0.bin")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert victim.stdout is not None and victim.stdout.readline().strip() == "open"
    time.sleep(0.3)
    victim.kill()  # mid-read
    victim.wait()
    results = [r.communicate(timeout=seconds + 60)[0] for r in readers]
    assert all(r.returncode == 0 for r in readers), results
    counts = [int(r.strip()) for r in results]
    assert all(c > 0 for c in counts), counts
    info = manager.list_mounts(UserDirs.from_env(root_env))[0]
    assert info.status == "mounted"
    assert (mnt / "small" / "000.txt").read_bytes().startswith(b"file 0\n")
    appimg("umount", mnt, env=root_env)


def test_busy_umount_is_refused_and_lazy_works(
    load_image: tuple[Path, dict[str, str]], root_env: dict[str, str]
) -> None:
    image, expected = load_image
    mnt = Path(appimg("mount", "--allow-unsigned", image, env=root_env).stdout.strip())
    info = manager.list_mounts(UserDirs.from_env(root_env))[0]
    handle = open(mnt / "big" / "1.bin", "rb")  # noqa: SIM115 - held open across the checks
    try:
        busy = appimg("umount", mnt, env=root_env, check=False)
        assert_one_line_error(busy)
        assert "busy" in busy.stderr and "--lazy" in busy.stderr
        assert str(mnt) in table.mount_table()
        lazy = appimg("umount", "--lazy", mnt, env=root_env)
        assert lazy.returncode == 0
        assert str(mnt) not in table.mount_table()
        # The open file keeps working until it is closed.
        assert hashlib.sha256(handle.read()).hexdigest() == expected["big/1.bin"]
        assert state.alive(info.pid, info.pid_start)
    finally:
        handle.close()
    assert wait_until(lambda: not state.alive(info.pid, info.pid_start), 10)
    assert manager.list_mounts(UserDirs.from_env(root_env)) == []


# -- trust, references, foreground, the commands --------------------------------------------


def test_trust_decides(
    tmp_path: Path, keypair: tuple[Path, Path], root_env: dict[str, str]
) -> None:
    unsigned = pack_app(tmp_path, {"a": b"a"}, name="Unsigned")
    signed = pack_app(tmp_path, {"a": b"a"}, key=keypair[0], name="Signed")
    # Unsigned is never easier than signed by an unknown key: refused unless allowed.
    bare = appimg("mount", unsigned, env=root_env, check=False)
    assert_one_line_error(bare)
    assert "--allow-unsigned" in bare.stderr and bare.returncode == PolicyError.exit_code
    warned = appimg("mount", "--allow-unsigned", unsigned, env=root_env)
    assert "warning" in warned.stderr and "unsigned" in warned.stderr
    refused = appimg("mount", signed, env=root_env, check=False)
    assert_one_line_error(refused)
    assert "trust" in refused.stderr and refused.returncode == PolicyError.exit_code
    allowed = appimg("mount", "--allow-untrusted", signed, env=root_env)
    assert "warning" in allowed.stderr and "--allow-untrusted" in allowed.stderr
    trust(root_env, keypair[1])
    again = appimg("mount", signed, env=root_env)  # reused, now trusted: no warning
    assert "warning" not in again.stderr
    assert again.stdout == allowed.stdout
    for image in (unsigned, signed):
        appimg("umount", image, env=root_env)
    assert manager.list_mounts(UserDirs.from_env(root_env)) == []


def test_references_reuse_release_and_sigkill(tmp_path: Path, root_env: dict[str, str]) -> None:
    image = pack_app(tmp_path, {"a": b"a"}, name="Refs")
    dirs = UserDirs.from_env(root_env)
    first = manager.mount_image(image, dirs, allow_unsigned=True)
    second = manager.mount_image(image, dirs, allow_unsigned=True)
    try:
        assert not first.reused and second.reused and first.mountpoint == second.mountpoint
        assert manager.list_mounts(dirs)[0].references == 2
        manager.release(first)
        time.sleep(3 * daemon.WATCH_INTERVAL)
        assert first.mountpoint in table.mount_table()  # one reference left
    finally:
        manager.release(second)
    assert wait_until(lambda: first.mountpoint not in table.mount_table(), 3)
    assert wait_until(lambda: manager.list_mounts(dirs) == [], 3)

    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, sys, time\n"
            "from appimg.host.dirs import UserDirs\n"
            "from appimg.services.mount.manager import mount_image\n"
            "info = mount_image(sys.argv[1], UserDirs.from_env(os.environ), allow_unsigned=True)\n"
            "print(info.mountpoint, flush=True)\n"
            "time.sleep(60)\n"
        ), str(image)],
        stdout=subprocess.PIPE, text=True, env=root_env,
    )  # fmt: skip
    assert holder.stdout is not None
    where = holder.stdout.readline().strip()
    assert where in table.mount_table()
    holder.kill()
    holder.wait()
    assert wait_until(lambda: where not in table.mount_table(), 3)


def test_persistent_mount_outlives_references(tmp_path: Path, root_env: dict[str, str]) -> None:
    image = pack_app(tmp_path, {"a": b"a"}, name="Persist")
    with manager.mounted(image, UserDirs.from_env(root_env), allow_unsigned=True) as info:
        made = appimg("mount", "--allow-unsigned", "--json", image, env=root_env)
        assert json.loads(made.stdout)["reused"] is True
    time.sleep(4 * daemon.WATCH_INTERVAL)
    assert info.mountpoint in table.mount_table()
    appimg("umount", "org.example.Persist", env=root_env)
    assert info.mountpoint not in table.mount_table()


def test_foreground_and_explicit_mountpoint(tmp_path: Path, root_env: dict[str, str]) -> None:
    image = pack_app(tmp_path, {"a": b"hello"}, name="Front")
    where = tmp_path / "mnt"
    where.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "appimg", "mount", "--allow-unsigned", "--foreground",
         str(image), str(where)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=root_env,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == str(where)
        assert (where / "a").read_bytes() == b"hello"
        again = appimg("mount", "--allow-unsigned", image, where, env=root_env)  # the same: reused
        assert again.stdout.strip() == str(where)
        other = pack_app(tmp_path, {"b": b"other"}, name="Other")
        assert_one_line_error(
            appimg("mount", "--allow-unsigned", other, where, env=root_env, check=False)
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert str(where) not in table.mount_table()
    finally:
        if server.poll() is None:
            server.kill()


def test_command_errors(tmp_path: Path, root_env: dict[str, str]) -> None:
    assert_one_line_error(appimg("umount", "org.example.Nothing", env=root_env, check=False))
    assert_one_line_error(appimg("mount", tmp_path / "missing.appimg", env=root_env, check=False))
    image = pack_app(tmp_path, {"a": b"a"}, name="Errs")
    assert_one_line_error(
        appimg(
            "mount", "--allow-unsigned", image, tmp_path / "no-such-dir", env=root_env, check=False
        )
    )
    assert appimg("mounts", env=root_env).stdout.strip() == "no mounted images"


@pytest.mark.root
def test_a_refused_fuse_mount_says_what_to_do_and_leaves_nothing(
    tmp_path: Path, user_setup: tuple
) -> None:
    """fusermount3 refuses a mount point the user cannot write: one line with the fix,
    no class name, and no lock or log file left in the runtime directory."""
    user, env, home = user_setup
    image = pack_app(tmp_path, {"a": b"a"}, name="Refused")
    shutil.copyfile(image, home / "r.appimg")
    os.chown(home / "r.appimg", user.pw_uid, user.pw_gid)
    theirs = user_tmpdir(user, "appimg-not-yours-")
    os.chown(theirs, 0, 0)
    theirs.chmod(0o755)
    result = appimg_as(user, env, "mount", "--allow-unsigned", home / "r.appimg", theirs)
    _, stderr = out(result)
    assert result.returncode == ToolError.exit_code, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert "ToolError" not in stderr and "choose a mount point you own" in stderr
    mounts = Path(env["XDG_RUNTIME_DIR"]) / "appimg" / "mounts"
    assert not [p for p in os.listdir(mounts) if "Refused" in p]
    # Files a crashed mount left behind go when `appimg mounts` looks.
    for suffix in (".lock", ".log", ".create"):
        (mounts / f"org.example.Gone-123456789abc{suffix}").write_text("")
    listed = appimg_as(user, env, "mounts")
    assert listed.returncode == 0 and "no mounted images" in out(listed)[0]
    assert not [p for p in os.listdir(mounts) if "Gone" in p]
