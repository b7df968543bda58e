"""``appimg run`` where FUSE is not usable, and ``--no-fuse``: the verified extraction
cache (spec/run.md, "Without FUSE").

The tests run the CLI as a normal user in a mount namespace of its own where
``/dev/fuse`` is covered by a root-only file: the user cannot open it, as on a
host without FUSE, while other programs on the machine keep theirs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appimg.format.container.partitions import PAYLOAD
from appimg.format.image import Image

from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    user_env,
    user_python,
    user_tmpdir,
)
from .test_install_store import pack
from .test_run import BUSYBOX, make_busybox_app

pytestmark = [
    pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.root,
]
APP_ID = "org.example.Box"
NOTICE = "FUSE is not available here"


class Setup:
    def __init__(self, user: pwd.struct_passwd, env: dict[str, str], blocker: Path) -> None:
        self.user, self.env, self.blocker = user, env, blocker

    @property
    def cache(self) -> Path:
        return Path(self.env["HOME"]) / ".cache" / "appimg" / "extracted"

    def argv(self, *args: object) -> list[str]:
        """``appimg ARGS`` as the user, with /dev/fuse out of its reach."""
        return [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /dev/fuse && exec "$@"', str(self.blocker),
            "setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
            "--init-groups", "--", *user_python(self.user), "-m", "appimg", *map(str, args),
        ]  # fmt: skip

    def run(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    def install(self, image: Path) -> None:
        result = appimg_as(self.user, self.env, "install", "--allow-unsigned", image, text=True)
        assert result.returncode == 0, result.stderr


def root_hash(image: Path) -> str:
    with Image.open(image) as opened:
        return opened.verity.root_hash.hex()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    user = ensure_user()
    allow_fuse_for_users()
    env = user_env(user, user_tmpdir(user, "appimg-home-"))
    blocker = tmp_path / "no-fuse"
    blocker.write_bytes(b"")
    blocker.chmod(0o600)  # root's: the user cannot open what covers /dev/fuse
    return Setup(user, env, blocker)


def box_image(tmp_path: Path, setup: Setup, profile: str = "none", big: int = 0) -> Path:
    tree = make_busybox_app(tmp_path / "tree", profile=profile)
    if big:
        (tree / "data").write_bytes(os.urandom(big))  # incompressible: a long extraction
    image = pack(tree, user_tmpdir(setup.user) / "box.appimg")
    image.chmod(0o644)
    return image


def test_run_without_fuse_uses_a_verified_copy_and_says_so_once(
    tmp_path: Path, setup: Setup
) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    root = root_hash(image)
    first = setup.run("run", APP_ID)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "hello from the sandbox\n"
    assert first.stderr.count(NOTICE) == 1, first.stderr
    assert f"running from a verified copy in {setup.cache / root / 'tree'}" in first.stderr
    marker = json.loads((setup.cache / root / "complete").read_text())
    assert marker["root_hash"] == root
    tree_ino = (setup.cache / root / "tree").stat().st_ino
    again = setup.run("run", APP_ID, "args", "a b")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "[a b]\n"
    assert again.stderr.count(NOTICE) == 1
    assert (setup.cache / root / "tree").stat().st_ino == tree_ino  # reused, not redone
    assert sorted(os.listdir(setup.cache)) == sorted([root, f".{root}.use", f".{root}.fill"])


def test_no_fuse_forces_the_copy_where_fuse_works(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    result = appimg_as(setup.user, setup.env, "run", "--no-fuse", APP_ID, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert result.stderr.count("FUSE is not used (--no-fuse)") == 1, result.stderr
    assert (setup.cache / root_hash(image) / "complete").is_file()
    plain = appimg_as(setup.user, setup.env, "run", APP_ID, text=True)
    assert plain.returncode == 0 and "verified copy" not in plain.stderr  # FUSE, as before


def test_a_changed_copy_is_extracted_again(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    assert setup.run("run", APP_ID).returncode == 0
    app = setup.cache / root_hash(image) / "tree" / "bin" / "app"
    original = app.read_bytes()
    app.chmod(0o755 | 0o200)
    app.write_text('#!/bin/sh\necho "changed"\n')  # same user, same size does not matter
    result = setup.run("run", APP_ID)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert app.read_bytes() == original


def test_a_tampered_image_is_refused_and_leaves_no_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    store = Path(setup.env["HOME"]) / ".local" / "share" / "appimg"
    installed = next(store.glob("images/**/*.appimg"))
    with Image.open(installed) as opened:
        offset = opened.partition(PAYLOAD).offset + 64 * 1024  # inside busybox's data
    with open(installed, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = setup.run("run", APP_ID)
    assert result.returncode == 4, result.stderr  # IntegrityError
    assert "hello" not in result.stdout
    root = root_hash(image)
    assert not (setup.cache / root).exists()
    assert not (setup.cache / f".{root}.tmp").exists()


def test_uninstall_removes_the_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup)
    setup.install(image)
    assert setup.run("run", APP_ID).returncode == 0
    assert (setup.cache / root_hash(image)).is_dir()
    result = appimg_as(setup.user, setup.env, "uninstall", APP_ID, text=True)
    assert result.returncode == 0, result.stderr
    assert not setup.cache.exists()


HELLO = Path(__file__).resolve().parents[1] / "fixtures" / "hello"
HOST_APP = r"""#!/app/bin/busybox sh
# Lists what the merged view shows, the same way with and without FUSE.
B=/app/bin/busybox
case "$1" in
  list)
    for d in / /etc /run /run/host /run/host/fonts /usr; do echo "== $d"; $B ls -1A "$d"; done
    for l in /lib64 /sbin /lib; do echo "== $l"; $B readlink "$l"; done ;;
  cat) shift; for f in "$@"; do echo "== $f"; $B cat "$f"; done ;;
  look) shift; for p in "$@"; do [ -e "$p" ] && echo "sees $p" || echo "no $p"; done ;;
esac
"""


def host_app_image(tmp_path: Path, setup: Setup, extra: dict[str, str] | None = None,
                   links: dict[str, str] | None = None) -> Path:  # fmt: skip
    """A ``host``-profile app whose tools are its own static busybox (under /app/bin, out
    of the host's /bin and /usr); ``extra`` files and ``links`` are laid in its tree."""
    tree = tmp_path / "host-tree"
    (tree / "app" / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, tree / "app" / "bin" / "busybox")  # type: ignore[arg-type]
    (tree / "app" / "bin" / "app").write_text(HOST_APP)
    (tree / "app" / "bin" / "app").chmod(0o755)
    for rel, text in (extra or {}).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
        (tree / rel).chmod(0o755)
    for rel, target in (links or {}).items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, tree / rel)
    (tree / "appimg.toml").write_text(
        f'id = "{APP_ID}"\nname = "Box"\nversion = "1"\nentrypoint = "app/bin/app"\n'
        'profile = "host"\n'
    )
    image = pack(tree, user_tmpdir(setup.user) / "host.appimg")
    image.chmod(0o644)
    return image


def test_the_bundled_hello_app_runs_without_fuse_as_with_it(tmp_path: Path, setup: Setup) -> None:
    image = pack(HELLO, user_tmpdir(setup.user) / "hello.appimg")
    image.chmod(0o644)
    setup.install(image)
    with_fuse = appimg_as(setup.user, setup.env, "run", "org.example.Hello", "a", text=True)
    assert with_fuse.returncode == 0, with_fuse.stderr
    without = setup.run("run", "org.example.Hello", "a")
    assert without.returncode == 0, without.stderr
    assert without.stderr.count(NOTICE) == 1, without.stderr
    assert without.stdout == with_fuse.stdout == "Hello from demo appimg! args: a\n"


def test_the_merged_root_shows_what_the_fuse_view_shows(tmp_path: Path, setup: Setup) -> None:
    image = host_app_image(tmp_path, setup, {"etc/resolv.conf": "nameserver 192.0.2.66\n",
                                             "etc/app.conf": "the app's\n"})  # fmt: skip
    setup.install(image)
    args = ("run", APP_ID, "list")
    with_fuse = appimg_as(setup.user, setup.env, *args, text=True)
    assert with_fuse.returncode == 0, with_fuse.stderr
    without = setup.run(*args)
    assert without.returncode == 0, without.stderr
    assert without.stdout == with_fuse.stdout
    assert "== /etc\napp.conf\n" in without.stdout and "\npasswd\n" in without.stdout


def test_over_rules_show_the_hosts_file_and_under_rules_the_apps(
    tmp_path: Path, setup: Setup
) -> None:
    image = host_app_image(tmp_path, setup, {
        "usr/bin/x": "#!/bin/sh\necho the image's x\n",
        "etc/resolv.conf": "nameserver 192.0.2.66\n",
        "etc/passwd": "root:x:0:0:forged:/:/bin/sh\n",
    })  # fmt: skip
    setup.install(image)
    result = setup.run("run", APP_ID, "cat", "/usr/bin/x", "/etc/resolv.conf", "/etc/passwd")
    assert result.returncode == 0, result.stderr
    host_resolv = Path("/etc/resolv.conf").read_text()
    assert result.stdout == (
        "== /usr/bin/x\n#!/bin/sh\necho the image's x\n"
        f"== /etc/resolv.conf\n{host_resolv}== /etc/passwd\n{Path('/etc/passwd').read_text()}"
    )
    seen = setup.run("run", APP_ID, "look", "/usr/bin/env", "/usr/lib/os-release")
    assert seen.stdout == "sees /usr/bin/env\nsees /usr/lib/os-release\n", seen.stderr


def test_a_users_deny_entry_inside_usr_stays_hidden(tmp_path: Path, setup: Setup) -> None:
    image = host_app_image(tmp_path, setup)
    setup.install(image)
    home = Path(setup.env["HOME"])
    config = Path(setup.env.get("XDG_CONFIG_HOME", home / ".config"))
    policy = config / "appimg" / "host-paths.d"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "private.toml").write_text('deny = ["/usr/share/doc", "/usr/bin/env"]\n')
    for path in (config, config / "appimg", policy, policy / "private.toml"):
        os.chown(path, setup.user.pw_uid, setup.user.pw_gid)
    assert any(Path("/usr/share/doc").iterdir()) and Path("/usr/bin/env").exists()
    result = setup.run("run", APP_ID, "look", "/usr/share/doc/adduser", "/usr/bin/cat")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no /usr/share/doc/adduser\nsees /usr/bin/cat\n"
    # A hidden file is covered by /dev/null, as the sandbox's other hidden paths are.
    covered = setup.run("run", APP_ID, "cat", "/usr/bin/env")
    assert covered.returncode == 0, covered.stderr
    assert covered.stdout == "== /usr/bin/env\n"


def test_an_image_symlink_where_a_mount_point_goes_does_not_steer_it(
    tmp_path: Path, setup: Setup
) -> None:
    victim = user_tmpdir(setup.user, "victim-")
    image = host_app_image(tmp_path, setup, links={"etc": str(victim), "run": str(victim)})
    setup.install(image)
    result = setup.run("run", APP_ID, "cat", "/etc/passwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"== /etc/passwd\n{Path('/etc/passwd').read_text()}"
    assert list(victim.iterdir()) == []  # nothing made or mounted through the image's links


def test_kill_9_mid_extraction_leaves_no_usable_half_copy(tmp_path: Path, setup: Setup) -> None:
    image = box_image(tmp_path, setup, big=48 << 20)
    setup.install(image)
    root = root_hash(image)
    staging = setup.cache / f".{root}.tmp"
    proc = subprocess.Popen(setup.argv("run", APP_ID), env=setup.env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (staging / "tree" / "data").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (staging / "tree" / "data").exists(), "the extraction never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (setup.cache / root).exists()  # the half copy is not where a run looks
    result = setup.run("run", APP_ID)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the sandbox\n"
    assert not staging.exists()
    assert (setup.cache / root / "tree" / "data").stat().st_size == 48 << 20
