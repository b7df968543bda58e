"""What an app's permissions open at run time, as a normal user, in both backends
(spec/run.md §Permissions).

An image of busybox and a static probe asks for devices, the network or host
folders in its ``[permissions]``; the probe opens /dev/kvm, connects to a TCP
server and an abstract unix socket the test runs on the host, and shell snippets
read and write the user's folders. Without a permission, none of it is reachable.
With ``home``, the paths that are never shown stay hidden, and an app that
tries to rename them away or plant symlinks for its next run fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import appimg, compile_static
from ..users import allow_fuse_for_users, appimg_as, ensure_user, user_env, user_tmpdir
from .test_sandbox_hardening import BACKENDS, NEEDS_PROBE_TOOLS, backend_env

pytestmark = [*NEEDS_PROBE_TOOLS, pytest.mark.root]

PROBE_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void report(const char *what, int r) {
    if (r < 0) printf("%s %s\n", what, strerrorname_np(errno));
    else printf("%s ok\n", what);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "kvm")) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0) { report("kvm", -1); return 0; }
        printf("kvm %d\n", ioctl(fd, 0xAE00 /* KVM_GET_API_VERSION */, 0));
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "tcp")) {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        report("tcp", connect(s, (struct sockaddr *)&in, sizeof in));
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "abstract")) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        size_t n = strlen(argv[2]);
        memcpy(un.sun_path + 1, argv[2], n);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        report("abstract", connect(s, (struct sockaddr *)&un, sizeof(sa_family_t) + 1 + n));
        return 0;
    }
    return 2;
}
"""

ENTRY = """#!/bin/sh
case "$1" in
  probe) shift; exec /bin/probe "$@" ;;
  sh) shift; exec /bin/sh -c "$1" ;;
esac
"""
TOOLS = ("sh", "cat", "echo", "ls", "mv", "ln", "mkdir", "rm", "touch", "test", "[")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_static(PROBE_C, tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture(scope="module")
def user():
    allow_fuse_for_users()
    return ensure_user()


@pytest.fixture(scope="module")
def make_image(tmp_path_factory: pytest.TempPathFactory, probe: Path, user):
    """Pack an image with the given ``[permissions]`` lines; return its path (user-readable)."""
    images = user_tmpdir(user)
    made: dict[str, Path] = {}

    def make(name: str, permissions: str = "", app_id: str = "") -> Path:
        if name in made:
            return made[name]
        root = tmp_path_factory.mktemp(name) / "tree"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(shutil.which("busybox"), root / "bin" / "busybox")
        for tool in TOOLS:
            os.symlink("busybox", root / "bin" / tool)
        shutil.copy2(probe, root / "bin" / "probe")
        (root / "bin" / "app").write_text(ENTRY)
        (root / "bin" / "app").chmod(0o755)
        (root / "appimg.toml").write_text(
            f'id = "{app_id or "org.example." + name}"\nname = "{name}"\nversion = "1"\n'
            f'entrypoint = "bin/app"\n\n[permissions]\n{permissions}\n'
        )
        image = images / f"{name}.appimg"
        appimg("pack", root, "-o", image)
        made[name] = image
        return image

    return make


@pytest.fixture
def home(user) -> Iterator[Path]:
    """A fresh home for the user under /home, with folders, secrets and another app's data."""
    path = Path(tempfile.mkdtemp(prefix="appimg-perm-home-", dir="/home"))
    files = {
        "Downloads/file": "download", "Music/song": "music", "Documents/letter": "letter",
        ".ssh/id_ed25519": "KEY", ".config/appimg/trusted": "TRUST",
        ".local/share/appimg/store": "STORE", ".var/appimg/org.example.Other/data/x": "OTHER",
        "Private/secret": "PRIVATE",
    }  # fmt: skip
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    (path / ".config/user-dirs.dirs").write_text('XDG_DOWNLOAD_DIR="$HOME/Downloads"\n')
    os.symlink("Documents", path / "link")
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [".", *dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(user, home: Path, backend: str, image: Path, *args: str):
    env = user_env(user, home, **backend_env(backend))
    out = appimg_as(user, env, "run", "--allow-unsigned", image, "--", *args)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


def sh(user, home: Path, backend: str, image: Path, script: str) -> tuple[str, str]:
    status, out, err = run(user, home, backend, image, "sh", script)
    assert status == 0, err
    return out, err


# -- devices ---------------------------------------------------------------------------


@pytest.fixture
def kvm() -> Iterator[None]:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this machine")
    mode = stat.S_IMODE(os.stat("/dev/kvm").st_mode)
    os.chmod("/dev/kvm", 0o666)  # as a desktop's uaccess rule would for the seat's user
    yield
    os.chmod("/dev/kvm", mode)


def test_kvm_only_with_the_device(make_image, user, home: Path, kvm: None) -> None:
    with_kvm = make_image("Kvm", 'devices = ["kvm"]')
    plain = make_image("Plain")
    _, out, err = run(user, home, "bwrap", with_kvm, "probe", "kvm")
    assert out.strip() == "kvm 12", err
    _, out, err = run(user, home, "bwrap", plain, "probe", "kvm")
    assert out.strip() == "kvm ENOENT", err


# -- network ---------------------------------------------------------------------------


@pytest.fixture
def host_servers() -> Iterator[tuple[int, str]]:
    """A loopback TCP server and an abstract unix socket on the host: (port, name)."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    name = f"appimg-test-{os.getpid()}-{id(tcp)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + name)
    abstract.listen(8)
    stop = threading.Event()

    def accept(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in (tcp, abstract)]
    for thread in threads:
        thread.start()
    yield tcp.getsockname()[1], name
    stop.set()
    for thread in threads:
        thread.join()
    tcp.close()
    abstract.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_network_only_when_shared(
    make_image, user, home: Path, host_servers: tuple[int, str], backend: str
) -> None:
    port, name = host_servers
    shared = make_image("Net", 'share = ["network"]')
    plain = make_image("Plain")
    for image, expected in ((shared, "ok"), (plain, "ECONNREFUSED")):
        _, out, err = run(user, home, backend, image, "probe", "tcp", str(port))
        assert out.strip() == f"tcp {expected}", err
        _, out, err = run(user, home, backend, image, "probe", "abstract", name)
        assert out.strip() == f"abstract {expected}", err
    # Loopback is up in the app's own namespace: a server of its own is reachable.
    script = ("busybox nc -l -p 7777 127.0.0.1 >/dev/null & "
              "busybox sleep 0.3; echo hi | busybox nc 127.0.0.1 7777 && echo reached")  # fmt: skip
    out, err = sh(user, home, backend, plain, script)
    assert "reached" in out, err


# -- filesystems -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_user_folders(make_image, user, home: Path, backend: str) -> None:
    image = make_image("Folders", 'filesystems = ["xdg-download", "xdg-music:ro"]')
    out, err = sh(user, home, backend, image,
                  f"cat {home}/Downloads/file; echo new > {home}/Downloads/new && echo wrote;"
                  f"cat {home}/Music/song; touch {home}/Music/x || echo music-ro;"
                  f"ls {home}/Documents || echo no-documents; ls -a {home}")  # fmt: skip
    assert "download" in out and "wrote" in out, (out, err)
    assert "music" in out and "music-ro" in out
    assert "no-documents" in out and "letter" not in out
    assert (home / "Downloads/new").read_text() == "new\n"
    assert not (home / "Music/x").exists()
    listed = set(out.split("no-documents")[1].split())
    assert listed <= {".", "..", "Downloads", "Music", ".var"}, out


def test_no_permissions_no_host_files(make_image, user, home: Path) -> None:
    out, _ = sh(user, home, "bwrap", make_image("Plain"),
                  f"cat {home}/Downloads/file || echo nothing")  # fmt: skip
    assert "nothing" in out and "download" not in out


HOME_SCRIPT = """
cat $H/.ssh/id_ed25519 || echo no-key
cat $H/.config/appimg/trusted || echo no-trust
cat $H/.local/share/appimg/store || echo no-store
cat $H/.var/appimg/org.example.Other/data/x || echo no-other
cat $H/Private/secret || echo no-private
echo own > $HOME/data/own && echo own-data
mv $H/.config $H/.config-moved || echo keep-config
mkdir -p $H/.config/appimg/host-paths.d || echo keep-policy
mv $H/.var $H/.var-moved || echo keep-var
mv $H/.ssh $H/.ssh-moved || echo keep-ssh
rm -rf $H/.ssh 2>/dev/null; rm -rf $H/.local/share/appimg 2>/dev/null; echo removed
cat $H/Documents/letter
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_home_hides_secrets_and_resists_replacing_them(
    make_image, user, home: Path, backend: str
) -> None:
    policy = home / ".config/appimg/host-paths.d"
    policy.mkdir(parents=True)
    (policy / "private.toml").write_text(f'deny = ["{home}/Private"]\n')
    image = make_image("Home", 'filesystems = ["home"]')
    out, err = sh(user, home, backend, image, f"H={home}\n{HOME_SCRIPT}")
    for word in ("no-key", "no-trust", "no-store", "no-other", "no-private", "own-data",
                 "keep-config", "keep-policy", "keep-var", "keep-ssh", "letter"):  # fmt: skip
        assert word in out, (word, out, err)
    for secret in ("KEY", "TRUST", "STORE", "OTHER", "PRIVATE"):
        assert secret not in out
    # Nothing changed on the host.
    assert (home / ".ssh/id_ed25519").read_text() == "KEY"
    assert (home / ".local/share/appimg/store").read_text() == "STORE"
    assert not (home / ".config-moved").exists() and not (home / ".ssh-moved").exists()
    assert not (home / ".config/appimg/host-paths.d").joinpath("x").exists()
    (data,) = (home / ".var/appimg").glob("org.example.Home@*")
    assert (data / "data/own").read_text() == "own\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repointed_secret_symlink_shows_nothing_next_run(
    make_image, user, home: Path, backend: str
) -> None:
    """~/.ssh as a symlink (dotfiles): the app may repoint the link in home, but the
    place it pointed to stays hidden on every later run (spec/run.md, "Paths never
    shown")."""
    shutil.rmtree(home / ".ssh")
    (home / "dotfiles-ssh").mkdir()
    (home / "dotfiles-ssh/id_ed25519").write_text("KEY")
    os.symlink("dotfiles-ssh", home / ".ssh")
    (home / "decoy").mkdir()
    for path in (home / "dotfiles-ssh", home / "dotfiles-ssh/id_ed25519", home / "decoy"):
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chown(home / ".ssh", user.pw_uid, user.pw_gid, follow_symlinks=False)
    image = make_image("Home", 'filesystems = ["home"]')
    read = f"cat {home}/.ssh/id_ed25519 {home}/dotfiles-ssh/id_ed25519 2>/dev/null; echo done"
    out, _ = sh(user, home, backend, image, f"{read}; rm {home}/.ssh && ln -s decoy {home}/.ssh")
    assert "KEY" not in out and (home / ".ssh").readlink() == Path("decoy")  # repointed
    out, err = sh(user, home, backend, image, read)
    assert "KEY" not in out and "done" in out, err


@pytest.mark.parametrize("backend", BACKENDS)
def test_planted_symlinks_grant_nothing_next_run(
    make_image, user, home: Path, backend: str
) -> None:
    rw = make_image("Home", 'filesystems = ["home"]')
    folders = make_image("Folders", 'filesystems = ["xdg-download", "xdg-music:ro"]')
    # With home, the app replaces ~/Downloads by a symlink to ~/.ssh ...
    sh(user, home, backend, rw, f"mv {home}/Downloads {home}/D2 && ln -s .ssh {home}/Downloads")
    assert (home / "Downloads").is_symlink()
    _, out, err = run(user, home, backend, folders, "sh", f"cat {home}/Downloads/id_ed25519")
    assert "KEY" not in out
    assert "filesystem xdg-download not granted" in err and "symlink" in err, err
    # ... or points the Downloads folder at ~/.ssh in user-dirs.dirs.
    sh(user, home, backend, rw,
       f"echo 'XDG_DOWNLOAD_DIR=\"$HOME/.ssh\"' > {home}/.config/user-dirs.dirs")  # fmt: skip
    assert ".ssh" in (home / ".config/user-dirs.dirs").read_text()
    _, out, err = run(user, home, backend, folders, "sh", f"cat {home}/.ssh/id_ed25519")
    assert "KEY" not in out
    assert "never shown" in err, err


@pytest.mark.parametrize("backend", BACKENDS)
def test_symlinked_and_system_grants_are_refused(
    make_image, user, home: Path, backend: str
) -> None:
    image = make_image("Refused", 'filesystems = ["~/link", "/proc", "/tmp", "~/.ssh:ro"]')
    status, out, err = run(user, home, backend, image, "sh", f"cat {home}/Documents/letter")
    assert status != 0 and "letter" not in out
    assert "filesystem ~/link not granted" in err and "symlink" in err, err
    assert "filesystem /proc not granted" in err and "filesystem /tmp not granted" in err
    assert "filesystem ~/.ssh:ro not granted" in err


# -- the user's control reaches the sandbox --------------------------------------------


def test_override_and_run_flags_change_what_the_next_run_gets(
    make_image, user, home: Path, host_servers: tuple[int, str]
) -> None:
    """`appimg override` is stored and applies to every later run of the installed
    app until `--reset`; `appimg run --share=...` applies to that run only; a
    revocation wins over the manifest (spec/permissions.md)."""
    port, _ = host_servers
    env = user_env(user, home)
    for image in (make_image("Plain"), make_image("Net", 'share = ["network"]')):
        done = appimg_as(user, env, "install", "--allow-unsigned", image)
        assert done.returncode == 0, done.stderr.decode()

    def tcp(app_id: str, *flags: str) -> str:
        out = appimg_as(user, env, "run", *flags, app_id, "--", "probe", "tcp", str(port))
        return out.stdout.decode().strip()

    plain, shared = "org.example.Plain", "org.example.Net"
    assert tcp(plain) == "tcp ECONNREFUSED"
    assert tcp(plain, "--share=network") == "tcp ok"  # this run only
    assert tcp(plain) == "tcp ECONNREFUSED"
    changed = appimg_as(user, env, "override", plain, "--share=network")
    assert changed.returncode == 0, changed.stderr.decode()
    assert tcp(plain) == "tcp ok"
    reset = appimg_as(user, env, "override", plain, "--reset")
    assert reset.returncode == 0, reset.stderr.decode()
    assert tcp(plain) == "tcp ECONNREFUSED"
    # The user revokes what the manifest asks for; the run's flag overrides both.
    assert tcp(shared) == "tcp ok"
    appimg_as(user, env, "override", shared, "--unshare=network")
    assert tcp(shared) == "tcp ECONNREFUSED"
    assert tcp(shared, "--share=network") == "tcp ok"


def test_the_stored_override_is_the_installed_apps_only(
    make_image, user, home: Path, host_servers: tuple[int, str]
) -> None:
    """An override the user gave the installed app does not reach another image
    claiming its id: an unsigned file packed under the same id runs without it."""
    port, _ = host_servers
    installed = make_image("Claimed")
    env = user_env(user, home)
    done = appimg_as(user, env, "install", "--allow-unsigned", installed)
    assert done.returncode == 0, done.stderr.decode()
    appimg_as(user, env, "override", "org.example.Claimed", "--share=network")
    probe = ("--", "probe", "tcp", str(port))
    by_id = appimg_as(user, env, "run", "org.example.Claimed", *probe)
    assert by_id.stdout.decode().strip() == "tcp ok", by_id.stderr.decode()
    # Another unsigned image claiming the same id, run as a file.
    other = make_image("ClaimedCopy", app_id="org.example.Claimed")
    as_file = appimg_as(user, env, "run", "--allow-unsigned", other, *probe)
    assert as_file.stdout.decode().strip() == "tcp ECONNREFUSED", as_file.stderr.decode()
    shown = appimg_as(user, env, "permissions", "--json", other)
    report = json.loads(shown.stdout)
    assert report["installed"] is False and report["granted"]["share"] == []
    shown = appimg_as(user, env, "permissions", "--json", "org.example.Claimed")
    assert json.loads(shown.stdout)["granted"]["share"] == ["network"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_only_grant_is_read_only_in_its_submounts(
    make_image, user, home: Path, backend: str
) -> None:
    """A folder granted :ro with a file system mounted inside it (a USB stick below
    /media, a tmpfs below ~/Music) is read-only all the way down."""
    stick = home / "Music/stick"
    stick.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=0777,uid={user.pw_uid}", "stick",
                    stick], check=True)  # fmt: skip
    try:
        (stick / "song").write_text("on the stick")
        image = make_image("Folders", 'filesystems = ["xdg-download", "xdg-music:ro"]')
        out, err = sh(user, home, backend, image,
                      f"cat {stick}/song; echo x > {stick}/planted || echo stick-ro")  # fmt: skip
        assert "on the stick" in out and "stick-ro" in out, (out, err)
        assert not (stick / "planted").exists()
    finally:
        subprocess.run(["umount", "-l", stick], check=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_home_hides_appimgs_caches(make_image, user, home: Path, backend: str) -> None:
    """appimg's caches are appimg's state: the verified extractions other apps run
    from without FUSE, and the parsed host profiles every launch reads. With their
    digests beside them in the same directory, an app that could write them could
    change another app's code or rules for its next run."""
    cache = home / ".cache/appimg"
    for rel in ("extracted/ROOT/tree/bin/app", "profiles/HASH.json"):
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_text("CACHED")
    for dirpath, dirnames, filenames in os.walk(home / ".cache"):
        for name in [".", *dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)
    image = make_image("Home", 'filesystems = ["home"]')
    out, err = sh(user, home, backend, image,
                  f"cat {cache}/extracted/ROOT/tree/bin/app || echo no-extracted;"
                  f"echo evil > {cache}/profiles/HASH.json || echo no-profiles;"
                  f"mv {home}/.cache {home}/.cache-moved || echo keep-cache")  # fmt: skip
    assert "CACHED" not in out, (out, err)
    assert "no-extracted" in out and "no-profiles" in out and "keep-cache" in out, (out, err)
    assert (cache / "profiles/HASH.json").read_text() == "CACHED"
