"""A hostile app in the sandbox of `appimg run`, in both backends (spec/run.md §The sandbox,
§Syscall filter).

The app is a busybox shell script plus a small static C program compiled here
(``probe``) that tries what a hostile app would: type into the caller's
terminal with TIOCSTI, reach the kernel keyring, profile or trace, make a new
user namespace, mount, switch personality, or go through the 32-bit entry
point. Each must fail with EPERM (ENOSYS for clone3). Crafted images also put a
symlink where the sandbox binds the data directory: nothing may be created on
the host where it points.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import termios
import tty
from pathlib import Path

import pytest

from ..helpers import appimg, compile_static
from ..users import (
    allow_fuse_for_users,
    appimg_as,
    ensure_user,
    user_env,
    user_tmpdir,
)

BUSYBOX = shutil.which("busybox")
CC = shutil.which("cc")
#: What the hostile-app tests need: shared with test_sandbox_probes.
NEEDS_PROBE_TOOLS = [
    pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)"),
    pytest.mark.skipif(CC is None, reason="needs a C compiler for the probe"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (tools/setup)"),
]
pytestmark = NEEDS_PROBE_TOOLS

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long r) {
    if (r < 0) printf("%s %s\n", what, strerrorname_np(errno));
    else printf("%s ok\n", what);
    fflush(stdout);
}

static long child_done(long pid) {  /* clone/clone3 returned: reap, or leave as the child */
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}

static void tiocsti(const char *text) {
    long r = 0;
    for (const char *c = text; *c && r >= 0; c++) r = ioctl(0, TIOCSTI, c);
    report("tiocsti", r);
    /* The kernel reads the request as 32 bits: high bits must not slip past the filter. */
    r = syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), text);
    report("tiocsti-high-bits", r);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "tiocsti") == 0) {
        tiocsti(argc > 2 ? argv[2] : "echo INJECTED\n");
        int ctty = open("/dev/tty", O_RDWR);  /* fails without a controlling terminal */
        printf("terminal %s\n", ctty >= 0 ? "controlling" : "none");
        return 0;
    }
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    report("add_key", syscall(SYS_add_key, "user", "appimg-probe", "x", 1, -2));
    report("request_key", syscall(SYS_request_key, "user", "appimg-probe", NULL, -2));
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    report("ptrace", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    report("unshare", syscall(SYS_unshare, CLONE_NEWUSER));
    report("clone-newuser", child_done(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)));
    uint64_t args[8] = {0, 0, 0, 0, SIGCHLD, 0, 0, 0};  /* struct clone_args */
    report("clone3", child_done(syscall(SYS_clone3, args, sizeof args)));
    report("personality", personality(PER_LINUX | ADDR_NO_RANDOMIZE));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    report("socket-alg", socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0));
#if defined(__x86_64__)
    long r;  /* keyctl through the 32-bit entry point (i386 number 288) */
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(288), "b"(0), "c"(-3), "d"(0) : "memory");
    if (r < 0) { errno = -r; r = -1; }
    report("keyctl-i386", r);
#endif
    report("fork", child_done(fork()));
    report("socket-unix", socket(AF_UNIX, SOCK_STREAM, 0));
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status))
        if (!strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs:", 11)) fputs(line, stdout);
    return 0;
}
"""

ENTRY = """#!/bin/sh
case "$1" in
  probe) shift; exec /bin/probe "$@" ;;
  unshare) /bin/busybox unshare -U /bin/busybox true; echo "unshare=$?" ;;
  count) n=$(cat "$XDG_DATA_HOME/count" 2>/dev/null || echo 0); n=$((n+1));
         echo "$n" > "$XDG_DATA_HOME/count"; echo "count=$n" ;;
  *) echo "an ordinary app" ;;
esac
"""

#: What the probe must see inside the sandbox, in both backends.
REFUSED = {
    "keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM", "perf_event_open": "EPERM",
    "ptrace": "EPERM", "unshare": "EPERM", "clone-newuser": "EPERM", "clone3": "ENOSYS",
    "personality": "EPERM", "mount": "EPERM", "socket-alg": "EAFNOSUPPORT",
    "keyctl-i386": "EPERM", "fork": "ok", "socket-unix": "ok",
}  # fmt: skip
BACKENDS = ("bwrap", "direct")


def backend_env(backend: str) -> dict[str, str]:
    return {"APPIMG_NO_BWRAP": "1" if backend == "direct" else ""}


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_static(PROBE_C, tmp_path_factory.mktemp("probe") / "probe")


def make_tree(root: Path, probe: Path, app_id: str) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "cat", "echo"):
        os.symlink("busybox", root / "bin" / tool)
    shutil.copy2(probe, root / "bin" / "probe")
    (root / "bin" / "app").write_text(ENTRY)
    (root / "bin" / "app").chmod(0o755)
    (root / "appimg.toml").write_text(
        f'id = "{app_id}"\nname = "Hostile"\nversion = "1"\nentrypoint = "bin/app"\n'
    )
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, probe: Path) -> Path:
    base = tmp_path_factory.mktemp("hostile")
    image = base / "hostile.appimg"
    appimg("pack", make_tree(base / "tree", probe, "org.example.Hostile"), "-o", image)
    return image


def parse(out: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def assert_refused(out: str) -> None:
    seen = parse(out)
    assert {key: seen.get(key) for key in REFUSED} == REFUSED, out
    assert seen.get("Seccomp:") == "2" and seen.get("NoNewPrivs:") == "1", out


@pytest.mark.parametrize("backend", BACKENDS)
def test_syscall_filter_refuses_the_hostile_calls(hostile: Path, backend: str) -> None:
    env = backend_env(backend)
    assert appimg("run", "--allow-unsigned", hostile, env=env).stdout.strip() == "an ordinary app"
    out = appimg("run", "--allow-unsigned", hostile, "--", "probe", env=env)
    assert_refused(out.stdout)
    unshare = appimg("run", "--allow-unsigned", hostile, "--", "unshare", env=env)
    assert "unshare=0" not in unshare.stdout and "unshare=" in unshare.stdout
    assert "Operation not permitted" in unshare.stderr


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run ``argv`` with a fresh pty as its controlling terminal (stdin); return what
    was left waiting on the terminal's input afterwards."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # pushed bytes are readable at once, without echo

        def take_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.run(
            argv, stdin=slave, capture_output=True, text=True, timeout=60,
            env={**os.environ, **env}, start_new_session=True, preexec_fn=take_terminal,
        )  # fmt: skip
        os.set_blocking(slave, False)
        try:
            pending = os.read(slave, 4096)
        except BlockingIOError:
            pending = b""
    finally:
        os.close(master)
        os.close(slave)
    return proc, pending


def test_the_terminal_probe_really_injects_without_a_sandbox(probe: Path) -> None:
    proc, pending = on_terminal([str(probe), "tiocsti", "echo INJECTED\n"], {})
    assert "tiocsti ok" in proc.stdout, proc.stdout
    assert pending.startswith(b"echo INJECTED\n")


def test_the_filter_alone_refuses_tiocsti(probe: Path) -> None:
    """Loaded on the host, in a process that does own the terminal: only the filter stops it."""
    loader = (
        "import os, sys\nfrom appimg.services.run import seccomp\n"
        "seccomp.load(seccomp.build_filter())\nos.execv(sys.argv[1], sys.argv[1:])\n"
    )
    argv = [sys.executable, "-c", loader, str(probe), "tiocsti", "echo INJECTED\n"]
    proc, pending = on_terminal(argv, {})
    assert "tiocsti EPERM" in proc.stdout and "tiocsti-high-bits EPERM" in proc.stdout
    assert "terminal controlling" in proc.stdout  # the filter, not a missing terminal, refused it
    assert pending == b""


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiocsti_never_reaches_the_callers_terminal(hostile: Path, backend: str) -> None:
    argv = [
        sys.executable,
        "-m",
        "appimg",
        "run",
        "--allow-unsigned",
        str(hostile),
        "--",
        "probe",
        "tiocsti",
    ]
    proc, pending = on_terminal(argv, backend_env(backend))
    assert proc.returncode == 0, proc.stderr
    assert "tiocsti EPERM" in proc.stdout and "tiocsti-high-bits EPERM" in proc.stdout
    assert "terminal none" in proc.stdout  # a new session: no controlling terminal
    assert pending == b""


# -- image symlinks where the sandbox binds --------------------------------------------


@pytest.fixture
def home_and_target() -> tuple[Path, Path]:
    """HOME under /home (where the image's top-level ``home`` link sits), and an empty
    host directory an image's symlink points at."""
    home = Path(tempfile.mkdtemp(prefix="appimg-hostile-home-", dir="/home"))
    target = Path(tempfile.mkdtemp(prefix="appimg-hostile-target-", dir="/tmp"))
    for path in (home, target):
        path.chmod(0o777)
    yield home, target
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)


def symlinked_image(base: Path, probe: Path, link: str, at: str = "home") -> Path:
    tree = make_tree(base / "tree", probe, "org.example.Symlinked")
    (tree / at).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(link, tree / at)
    image = base / "symlinked.appimg"
    appimg("pack", tree, "-o", image)
    return image


@pytest.mark.root
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["absolute", "escaping"])
def test_a_top_level_image_symlink_does_not_redirect_the_data_bind(
    tmp_path: Path, probe: Path, home_and_target: tuple[Path, Path], backend: str, kind: str
) -> None:
    home, target = home_and_target
    # bwrap builds the root with its old root at /oldroot: a relative link reaches the host.
    link = str(target) if kind == "absolute" else f"../oldroot{target}"
    image = symlinked_image(tmp_path, probe, link)
    env = {"HOME": str(home), **backend_env(backend)}
    out = appimg("run", "--allow-unsigned", image, "--", "count", env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "count=1"
    (data,) = (home / ".var/appimg").glob("org.example.Symlinked@unsigned-*")  # unsigned
    assert (data / "data/count").read_text().strip() == "1"
    assert list(target.iterdir()) == []


@pytest.mark.root
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_deeper_image_symlink_on_the_bind_path_is_refused(
    tmp_path: Path, probe: Path, home_and_target: tuple[Path, Path], backend: str
) -> None:
    home, target = home_and_target
    image = symlinked_image(tmp_path, probe, str(target), at=f"home/{home.name}")
    out = appimg("run", "--allow-unsigned", image, "--", "count",
                 env={"HOME": str(home), **backend_env(backend)},
                 check=False)  # fmt: skip
    assert out.returncode == 6, out.stderr
    assert "in the way" in out.stderr and "Traceback" not in out.stderr
    assert list(target.iterdir()) == []


@pytest.mark.root
@pytest.mark.parametrize("backend", BACKENDS)
def test_as_a_normal_user(
    hostile: Path, tmp_path: Path, probe: Path, home_and_target: tuple[Path, Path], backend: str
) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    home, target = home_and_target
    os.chown(home, user.pw_uid, user.pw_gid)
    home.chmod(0o755)
    env = user_env(user, home, **backend_env(backend))
    images = user_tmpdir(user)
    shutil.copyfile(hostile, images / "hostile.appimg")
    out = appimg_as(user, env, "run", "--allow-unsigned", images / "hostile.appimg", "--", "probe")
    assert out.returncode == 0, out.stderr
    assert_refused(out.stdout.decode())
    shutil.copyfile(symlinked_image(tmp_path, probe, str(target)), images / "symlinked.appimg")
    out = appimg_as(
        user, env, "run", "--allow-unsigned", images / "symlinked.appimg", "--", "count"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == "count=1"
    assert list(target.iterdir()) == []
