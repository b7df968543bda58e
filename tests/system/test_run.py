"""appimg run: the app runs in its merged view, without root (spec/run.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appimg.format.image import Image

from ..forge import forge, payload_of
from ..helpers import appimg, assert_one_line_error
from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    run_as,
    user_env,
    user_python,
    user_tmpdir,
)

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)")

ENTRY = r"""#!/bin/sh
# The test app: a shell script run by the static busybox shipped in the image.
case "$1" in
  args) shift; for a in "$@"; do echo "[$a]"; done ;;
  exit) exit "$2" ;;
  count) n=$(cat "$XDG_DATA_HOME/count" 2>/dev/null || echo 0); n=$((n+1));
         echo "$n" > "$XDG_DATA_HOME/count"; echo "count=$n" ;;
  look) shift; for p in "$@"; do [ -e "$p" ] && echo "sees $p" || echo "no $p"; done ;;
  env) echo "mode=$HELLO_MODE home=$HOME id=$APPIMG_ID" ;;
  trap) trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done ;;
  sleep) echo ready; sleep "$2" ;;
  *) echo "hello from the sandbox" ;;
esac
"""


def make_busybox_app(root: Path, app_id: str = "org.example.Box", profile: str = "none") -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "cat", "echo", "sleep", "ls"):
        os.symlink("busybox", root / "bin" / tool)
    (root / "bin" / "app").write_text(ENTRY)
    (root / "bin" / "app").chmod(0o755)
    (root / "bin" / "not-exec").write_text("#!/bin/sh\n")
    (root / "appimg.toml").write_text(
        f'id = "{app_id}"\nname = "Box"\nversion = "1"\nentrypoint = "bin/app"\n'
        f'profile = "{profile}"\n[commands]\nlist = "bin/ls"\n[env]\nHELLO_MODE = "demo"\n'
    )
    return root


@pytest.fixture(scope="module")
def box_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("box")
    image = base / "box.appimg"
    appimg("pack", make_busybox_app(base / "tree"), "-o", image)
    return image


@pytest.fixture(autouse=True)
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own $XDG_RUNTIME_DIR: its mounts are its own, whatever else runs."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime


def _fuse_mounts(runtime: str | None = None) -> list[str]:
    """appimg's FUSE mounts below ``runtime`` (default: this test's runtime directory).
    Only those: other suites on the machine may be mounting images of their own."""
    below = (runtime or os.environ["XDG_RUNTIME_DIR"]).rstrip("/") + "/"
    with open("/proc/mounts") as handle:
        return [
            line for line in handle
            if "fuse.appimg" in line and line.split()[1].replace("\\040", " ").startswith(below)
        ]  # fmt: skip


def test_run_as_root_passes_args_and_status(box_image: Path) -> None:
    out = appimg(
        "run", "--allow-unsigned", box_image, "--", "args", "two words", "", "quote'd", check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[two words]", "[]", "[quote'd]"]
    assert (
        appimg("run", "--allow-unsigned", box_image, "--", "exit", "42", check=False).returncode
        == 42
    )
    assert "mode=demo" in appimg("run", "--allow-unsigned", box_image, "--", "env").stdout
    assert _wait_no_mounts()


def test_sees_only_granted_host_paths(box_image: Path, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home")}
    out = appimg("run", "--allow-unsigned", box_image, "--", "look", "/etc/passwd", "/root",
                 "/usr", "/bin/busybox",
                 "/proc/self", "/dev/null", "/tmp", env=env).stdout  # fmt: skip
    assert "no /etc/passwd" in out and "no /root" in out and "no /usr" in out
    assert "sees /bin/busybox" in out and "sees /proc/self" in out and "sees /dev/null" in out


def test_the_program_is_looked_up_as_the_sandbox_sees_it(tmp_path: Path) -> None:
    """Symlinks resolve inside the app's view, absolute ones too: a link to the app's
    own /bin/app runs, one to a path the view lacks is refused before the sandbox."""
    tree = make_busybox_app(tmp_path / "tree")
    os.symlink("/bin/app", tree / "bin" / "via-root")
    os.symlink("/nowhere/app", tree / "bin" / "dangling")
    os.symlink("loop", tree / "bin" / "loop")
    packed = tmp_path / "links.appimg"
    appimg("pack", tree, "-o", packed)
    with Image.open(packed) as image:
        manifest = dict(image.manifest)
    manifest["commands"] = {"via-root": "bin/via-root", "dangling": "bin/dangling",
                            "loop": "bin/loop", "dir": "bin"}  # fmt: skip
    forged = forge(tmp_path / "forged.appimg", payload=payload_of(packed), manifest=manifest)
    ran = appimg("run", "--allow-unsigned", forged, "--command", "via-root", "--", "args", "x")
    assert ran.stdout.splitlines() == ["[x]"]
    for command, why in (("dangling", "dangling symlink"), ("loop", "symlink loop"),
                         ("dir", "not a regular file")):  # fmt: skip
        refused = appimg("run", "--allow-unsigned", forged, "--command", command, check=False)
        assert_one_line_error(refused)
        assert why in refused.stderr, refused.stderr
    assert _wait_no_mounts()


def test_bad_input(box_image: Path, tmp_path: Path, keypair) -> None:
    assert_one_line_error(
        appimg("run", "--allow-unsigned", box_image, "--command", "nope", check=False)
    )
    # The packer refuses such manifests, so forge an image whose commands are broken.
    with Image.open(box_image) as image:
        manifest = dict(image.manifest)
    manifest["commands"] = {"broken": "bin/not-exec", "missing": "bin/nothing"}
    forged = forge(tmp_path / "forged.appimg", payload=payload_of(box_image), manifest=manifest)
    missing = appimg("run", "--allow-unsigned", forged, "--command", "missing", check=False)
    assert_one_line_error(missing)
    assert "missing" in missing.stderr
    broken = appimg("run", "--allow-unsigned", forged, "--command", "broken", check=False)
    assert_one_line_error(broken)
    assert "not executable" in broken.stderr
    assert_one_line_error(appimg("run", tmp_path / "nothing.appimg", check=False))
    # Signed by a key that is not trusted: refused unless --allow-untrusted.
    signed = tmp_path / "signed.appimg"
    shutil.copyfile(box_image, signed)
    appimg("sign", signed, "--key", keypair[0])
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    untrusted = appimg("run", signed, env=env, check=False)
    assert_one_line_error(untrusted)
    assert "trust" in untrusted.stderr.lower()
    assert appimg("run", signed, "--allow-untrusted", env=env, check=False).returncode == 0


def test_denied_rule_is_reported_and_strict_fails(tmp_path: Path) -> None:
    tree = make_busybox_app(tmp_path / "tree", "org.example.Denied")
    with (tree / "appimg.toml").open("a") as f:
        f.write('[[host]]\npath = "/root"\nat = "/run/host/root"\nmode = "replace"\n')
    image = tmp_path / "denied.appimg"
    appimg("pack", tree, "-o", image)
    lenient = appimg("run", "--allow-unsigned", image, check=False)
    assert lenient.returncode == 0
    assert "/root" in lenient.stderr
    strict = appimg("run", "--allow-unsigned", "--strict", image, check=False)
    assert_one_line_error(strict)


def test_sigterm_reaches_the_app(box_image: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "appimg", "run", "--allow-unsigned",
                             str(box_image), "--", "trap"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert "got-term" in proc.stdout.read()


def _wait_no_mounts(timeout: float = 2.0, runtime: str | None = None) -> bool:
    """True once no mount is left below ``runtime``: spec/run.md releases a mount within
    two seconds of its last reference (its server polls for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _fuse_mounts(runtime):
            return True
        time.sleep(0.05)
    return not _fuse_mounts(runtime)


def test_concurrent_runs_share_one_mount_and_sigkill_cleans_up(box_image: Path) -> None:
    start = [
        sys.executable,
        "-m",
        "appimg",
        "run",
        "--allow-unsigned",
        str(box_image),
        "--",
        "sleep",
        "3",
    ]
    first = subprocess.Popen(start, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen(start, stdout=subprocess.PIPE, text=True)
    assert first.stdout and second.stdout
    assert first.stdout.readline().strip() == "ready"
    assert second.stdout.readline().strip() == "ready"
    assert len(_fuse_mounts()) == 1
    assert first.wait(timeout=20) == 0 and second.wait(timeout=20) == 0
    assert _wait_no_mounts(2.0)
    assert not _mount_dirs(), "a mount point directory was left behind"
    # SIGKILL of the app (inside the sandbox): the mount goes within 2 s.
    victim = subprocess.Popen([*start[:-1], "30"], stdout=subprocess.PIPE, text=True)
    assert victim.stdout and victim.stdout.readline().strip() == "ready"
    for pid in _descendants(victim.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
        if cmdline.startswith(b"/bin/sh\0/bin/app"):  # the app's process in the sandbox
            os.kill(pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert _wait_no_mounts(2.0)
    # SIGKILL of `appimg run` itself: the mount still goes within 2 s.
    victim = subprocess.Popen([*start[:-1], "30"], stdout=subprocess.PIPE, text=True)
    assert victim.stdout and victim.stdout.readline().strip() == "ready"
    victim.kill()
    victim.wait()
    assert _wait_no_mounts(2.5)
    deadline = time.monotonic() + 2.0
    while _mount_dirs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _mount_dirs(), "a mount point directory was left behind"


def _mount_dirs() -> list[str]:
    """Default mount points of the test image left in the runtime directory."""
    from appimg.host.dirs import UserDirs
    from appimg.services.mount.table import mount_root

    return [p.name for p in mount_root(UserDirs.from_env(os.environ)).glob("org.example.Box-*")]


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                children = [int(p) for p in handle.read().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


@pytest.mark.root
def test_non_root_user_runs_the_app_and_the_stub(
    box_image: Path, keypair: tuple[Path, Path]
) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home)
    image = user_tmpdir(user) / "box.appimg"
    shutil.copyfile(box_image, image)
    os.chown(image, user.pw_uid, user.pw_gid)
    image.chmod(0o755)
    out = appimg_as(user, env, "run", "--allow-unsigned", image, "--", "args", "a b", "c")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["[a b]", "[c]"]
    assert (
        appimg_as(user, env, "run", "--allow-unsigned", image, "--", "exit", "42").returncode == 42
    )
    # The data directory persists between runs.
    assert (
        b"count=1" in appimg_as(user, env, "run", "--allow-unsigned", image, "--", "count").stdout
    )
    assert (
        b"count=2" in appimg_as(user, env, "run", "--allow-unsigned", image, "--", "count").stdout
    )
    # Unsigned and not installed: a directory of its own image, never the app id's.
    with Image.open(image) as opened:
        root = opened.verity.root_hash.hex()
    count = home / f".var/appimg/org.example.Box@unsigned-{root[:16]}/data/count"
    assert count.read_text().strip() == "2"
    assert not (home / ".var/appimg/org.example.Box").exists()
    # ./image runs through the sh stub, with appimg found on PATH.
    launcher = Path(user_tmpdir(user)) / "bin"
    launcher.mkdir()
    (launcher / "appimg").write_text(
        "#!/bin/sh\nexec " + " ".join(user_python(user)) + ' -m appimg "$@"\n'
    )
    (launcher / "appimg").chmod(0o755)
    env_stub = {**env, "PATH": f"{launcher}:{env['PATH']}"}
    # The stub passes no trust flag: an unsigned image is refused like by `appimg run`.
    refused = run_as(user, [str(image), "args", "x y"], env_stub)
    assert refused.returncode == 6 and b"--allow-unsigned" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    appimg("sign", image, "--key", keypair[0])
    public = image.parent / "key.pub"
    shutil.copyfile(keypair[1], public)
    public.chmod(0o644)
    assert appimg_as(user, env, "trust", "add", public).returncode == 0
    stub = run_as(user, [str(image), "args", "x y"], env_stub)
    assert stub.returncode == 0, stub.stderr
    assert stub.stdout.decode().splitlines() == ["[x y]"]
    assert run_as(user, [str(image), "exit", "3"], env_stub).returncode == 3
    # Without appimg on PATH the stub explains and exits 127.
    bare = run_as(user, [str(image)], {**env, "PATH": "/usr/bin:/bin"})
    assert bare.returncode == 127
    assert b"appimg" in bare.stderr
    assert _wait_no_mounts(runtime=env["XDG_RUNTIME_DIR"])


def test_host_profile_runs_a_python_script_with_the_hosts_python(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello.py").write_text(
        "#!/usr/bin/python3\nimport os, sys\n"
        "print('python', sys.version_info[0], os.environ['APPIMG_ID'], sys.argv[1:])\n"
    )
    (tree / "bin" / "hello.py").chmod(0o755)
    (tree / "appimg.toml").write_text(
        'id = "org.example.PyHello"\nname = "PyHello"\nversion = "1"\n'
        'entrypoint = "bin/hello.py"\nprofile = "host"\n'
    )
    image = tmp_path / "py.appimg"
    appimg("pack", tree, "-o", image)
    out = appimg(
        "run", "--allow-unsigned", image, "--", "a b", env={"HOME": str(tmp_path / "home")}
    )
    assert out.stdout.strip() == "python 3 org.example.PyHello ['a b']"


def test_host_profile_app_with_its_own_bin_still_sees_the_hosts_bin(tmp_path: Path) -> None:
    """The app's bin/ merges with the host's /bin -> usr/bin: #!/bin/sh scripts work,
    the same with both mount backends (overlay-rules.md §6)."""
    if not os.path.islink("/bin"):
        pytest.skip("needs a merged-/usr host (/bin -> usr/bin)")
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_text('#!/bin/sh\necho "hello $1"; ls /bin/hello /bin/sh\n')
    (tree / "bin" / "hello").chmod(0o755)
    (tree / "appimg.toml").write_text(
        'id = "org.example.ShHello"\nname = "ShHello"\nversion = "1"\n'
        'entrypoint = "bin/hello"\nprofile = "host"\n'
    )
    image = tmp_path / "sh.appimg"
    appimg("pack", tree, "-o", image)
    env = {"HOME": str(tmp_path / "home")}
    out = appimg("run", "--allow-unsigned", image, "--", "there", env=env)
    assert out.stdout.split() == ["hello", "there", "/bin/hello", "/bin/sh"]
    # The kernel backend cannot show the whole profile (hidden paths in /etc/ssl):
    # the same two rules from the manifest compare both backends.
    (tree / "appimg.toml").write_text(
        'id = "org.example.ShHello"\nname = "ShHello"\nversion = "1"\n'
        'entrypoint = "bin/hello"\n[[host]]\npath = "/usr"\nmode = "under"\n'
        '[[host]]\npath = "/bin"\nmode = "under"\n'
    )
    appimg("pack", tree, "-o", image)
    backends = ["fuse", "kernel"] if os.geteuid() == 0 else ["fuse"]
    for backend in backends:
        where = tmp_path / f"mnt-{backend}"
        where.mkdir()
        appimg("mount", "--allow-unsigned", "--backend", backend, image, where, env=env)
        try:
            names = set(os.listdir(where / "bin"))
            assert {"hello", "sh", "ls"} <= names, backend
            assert os.path.isdir(where / "bin") and not os.path.islink(where / "bin")
        finally:
            appimg("umount", where, env=env)


@pytest.mark.root
def test_without_bwrap_the_kernel_calls_make_the_same_sandbox(box_image: Path) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home, APPIMG_NO_BWRAP="1")
    image = user_tmpdir(user) / "box.appimg"
    shutil.copyfile(box_image, image)
    image.chmod(0o644)
    out = appimg_as(user, env, "run", "--allow-unsigned", image, "--", "args", "a b", "c")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["[a b]", "[c]"]
    look = appimg_as(
        user,
        env,
        "run",
        "--allow-unsigned",
        image,
        "--",
        "look",
        "/etc/passwd",
        "/bin/busybox",
        "/tmp",
    )
    assert look.stdout.decode().splitlines() == ["no /etc/passwd", "sees /bin/busybox", "sees /tmp"]
    assert (
        appimg_as(user, env, "run", "--allow-unsigned", image, "--", "exit", "42").returncode == 42
    )
    assert _wait_no_mounts(runtime=env["XDG_RUNTIME_DIR"])


PROBE_DEV = """#!/usr/bin/python3
import os
print(sorted(os.listdir("/dev")), sorted(os.listdir("/dev/pts")))
main, sub = os.openpty()  # through /dev/ptmx: what a terminal app does first
print("pty", os.ttyname(sub).startswith("/dev/pts/"))
with open("/dev/shm/probe", "w") as f:
    print("shm", f.write("x"))
print(os.readlink("/dev/ptmx"), os.readlink("/dev/core"))
"""


def test_both_backends_give_the_same_dev(tmp_path: Path) -> None:
    """bwrap's --dev and the direct backend's /dev hold the same (spec/run.md): a pty
    can be opened and /dev/shm written; the fallback says once that it is in use."""
    if shutil.which("bwrap") is None:
        pytest.skip("needs bwrap to compare with")
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "probe").write_text(PROBE_DEV)
    (tree / "bin" / "probe").chmod(0o755)
    (tree / "appimg.toml").write_text(
        'id = "org.example.DevProbe"\nname = "DevProbe"\nversion = "1"\n'
        'entrypoint = "bin/probe"\nprofile = "host"\n'
    )
    image = tmp_path / "probe.appimg"
    appimg("pack", tree, "-o", image)
    outputs = {}
    for backend in ("bwrap", "direct"):
        env = {
            "HOME": str(tmp_path / "home"),
            "APPIMG_NO_BWRAP": "1" if backend == "direct" else "",
        }
        out = appimg("run", "--allow-unsigned", image, env=env)
        outputs[backend] = out.stdout
        notes = [line for line in out.stderr.splitlines() if "kernel calls directly" in line]
        assert len(notes) == (1 if backend == "direct" else 0), out.stderr
    assert outputs["bwrap"] == outputs["direct"]
    lines = outputs["direct"].splitlines()
    for name in ("pts", "ptmx", "shm", "core", "fd", "null", "tty"):
        assert f"'{name}'" in lines[0]
    assert lines[1:] == ["pty True", "shm 1", "pts/ptmx /proc/kcore"]


@pytest.mark.parametrize("backend", ["bwrap", "direct"])
def test_the_callers_inheritable_descriptors_do_not_reach_the_app(
    box_image: Path, tmp_path: Path, backend: str
) -> None:
    """A descriptor the caller left open (not close-on-exec) names a host file the
    sandbox does not show: the app gets only stdin, stdout and stderr."""
    secret = tmp_path / "secret"
    secret.write_text("host file\n")
    fd = os.open(secret, os.O_RDONLY)
    os.set_inheritable(fd, True)
    env = {**os.environ, **({"APPIMG_NO_BWRAP": "1"} if backend == "direct" else {})}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "appimg", "run", "--allow-unsigned", str(box_image),
             "--command", "list", "--", "-1", "/proc/self/fd"],
            env=env, capture_output=True, pass_fds=(fd,), timeout=60,
        )  # fmt: skip
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr.decode()
    # ls itself opens one descriptor for the directory it lists.
    listed = {int(n) for n in result.stdout.decode().split()}
    assert fd not in listed
    assert {0, 1, 2} <= listed and len(listed) <= 4, listed
