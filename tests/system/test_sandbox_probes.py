"""More of what a hostile app tries in the sandbox of `appimg run`, in both backends
(spec/run.md §The sandbox, §Syscall filter), and how a directly executed image's
stub judges signatures (spec/run.md §Invocation, format.md §12.1).

The probe (a static C program compiled here) goes past the calls of
``test_sandbox_hardening``: TIOCSTI on a reopened terminal and on stdout, every
TIOCLINUX subcode, ``clone``/``unshare`` through the 32-bit and x32 entry points,
io_uring (which would do a syscall's work unseen by the filter), userfaultfd,
bpf, ``process_vm_writev`` and ``kill`` to a process outside the sandbox, the
user namespace maps, and the UTS and cgroup namespaces. Images whose ``tmp``,
``proc``, ``dev``, ``run`` and ``.var`` are symlinks to the host must not steer
anything there.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appimg.errors import PolicyError, SignatureError

from ..forge import break_signature, rewrite_signatures
from ..helpers import HELLO, appimg, compile_static
from .test_sandbox_hardening import BACKENDS, BUSYBOX, NEEDS_PROBE_TOOLS, backend_env

pytestmark = NEEDS_PROBE_TOOLS

PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long r) {
    if (r < 0) printf("%s %s\n", what, strerrorname_np(errno));
    else printf("%s ok\n", what);
    fflush(stdout);
}

static long done(long pid) {  /* clone returned: reap, or leave as the child */
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}

#if defined(__x86_64__)
static long int80(long nr, long a, long b, long c) {  /* the 32-bit entry point */
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    if (r < 0 && r > -4096) { errno = -r; return -1; }
    return r;
}
#endif

static long write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    long r = write(fd, text, strlen(text));
    close(fd);
    return r;
}

int main(int argc, char **argv) {
    char c = 'x';
    int tty = open("/proc/self/fd/0", O_RDWR);
    report("tiocsti-reopened", tty < 0 ? -1 : ioctl(tty, TIOCSTI, &c));
    report("tiocsti-stdout", ioctl(1, TIOCSTI, &c));
    report("dev-tty", open("/dev/tty", O_RDWR));
    int linux_refused = 1;
    for (char sub = 0; sub <= 16; sub++) {
        char arg[8] = {sub};
        if (ioctl(0, TIOCLINUX, arg) >= 0 || errno != EPERM) linux_refused = 0;
    }
    printf("tioclinux-all %s\n", linux_refused ? "EPERM" : "reached");
    report("clone-newuser-newns",
           done(syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)));
#if defined(__x86_64__)
    report("clone-newuser-i386", done(int80(120, CLONE_NEWUSER | SIGCHLD, 0, 0)));
    report("unshare-i386", int80(310, CLONE_NEWUSER, 0, 0));
    report("keyctl-x32", syscall(0x40000000 | 250, 0, -3, 0));
    report("unshare-x32", syscall(0x40000000 | 272, CLONE_NEWUSER));
#endif
    long params[15] = {0};
    report("io_uring_setup", syscall(SYS_io_uring_setup, 4, params));
    report("userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */ | O_CLOEXEC));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    char buf[4] = "abc";
    struct iovec local = {buf, 3}, remote = {buf, 3};
    report("process_vm_writev-self-child", syscall(SYS_process_vm_writev, getppid(), &local, 1,
                                                   &remote, 1, 0));
    long outside = atol(argv[1]);  /* `appimg run`'s caller, outside the pid namespace */
    report("process_vm_writev-outside",
           syscall(SYS_process_vm_writev, outside, &local, 1, &remote, 1, 0));
    report("kill-outside", outside > 1 ? kill(outside, 0) : -1);
    report("setgroups", write_file("/proc/self/setgroups", "allow"));
    report("uid_map", write_file("/proc/self/uid_map", "0 0 1"));
    report("setns-user", syscall(SYS_setns, open("/proc/1/ns/user", O_RDONLY), 0));
    char ns[64] = {0};
    readlink("/proc/self/ns/uts", ns, sizeof ns - 1);
    printf("uts %s\n", ns);
    memset(ns, 0, sizeof ns);
    readlink("/proc/self/ns/cgroup", ns, sizeof ns - 1);
    printf("cgroup %s\n", ns);
    return 0;
}
"""

REFUSED = {
    "tiocsti-reopened": "EPERM", "tiocsti-stdout": "EPERM", "dev-tty": "ENXIO",
    "tioclinux-all": "EPERM", "clone-newuser-newns": "EPERM",
    "io_uring_setup": "ENOSYS", "userfaultfd": "EPERM", "bpf": "EPERM",
    "process_vm_writev-self-child": "EPERM", "process_vm_writev-outside": "EPERM",
    "kill-outside": "ESRCH", "uid_map": "EPERM", "setns-user": "EPERM",
}  # fmt: skip
if sys.maxsize > 2**32 and os.uname().machine == "x86_64":
    REFUSED.update({"clone-newuser-i386": "EPERM", "unshare-i386": "EPERM",
                    "keyctl-x32": "EPERM", "unshare-x32": "EPERM"})  # fmt: skip


def compile_probe(base: Path) -> Path:
    return compile_static(PROBE_C, base / "probe")


def probe_tree(root: Path, probe: Path, app_id: str, links: tuple[str, ...] = (),
               target: Path | None = None) -> Path:  # fmt: skip
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    shutil.copy2(probe, root / "bin" / "probe")
    (root / "bin" / "app").write_text(
        '#!/bin/sh\ncase "$1" in probe) shift; exec /bin/probe "$@" ;; esac\n'
        "echo private > /tmp/file && /bin/busybox cat /tmp/file\n"
    )
    (root / "bin" / "app").chmod(0o755)
    for name in links:
        os.symlink(target, root / name)
    (root / "appimg.toml").write_text(
        f'id = "{app_id}"\nname = "Probe"\nversion = "1"\nentrypoint = "bin/app"\n'
    )
    return root


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("probes")
    image = base / "probe.appimg"
    appimg("pack", probe_tree(base / "tree", compile_probe(base), "org.example.Probe"), "-o", image)
    return image


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_wider_probe_is_refused(probe_image: Path, backend: str) -> None:
    out = appimg("run", "--allow-unsigned", probe_image, "--", "probe", os.getpid(),
                 env=backend_env(backend))  # fmt: skip
    seen = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert {key: seen.get(key) for key in REFUSED} == REFUSED, out.stdout
    assert seen["setgroups"] in ("EPERM", "EACCES"), out.stdout
    # Namespaces of its own, in both backends (the direct one used to keep the host's).
    assert seen["uts"] != os.readlink("/proc/self/ns/uts"), out.stdout
    assert seen["cgroup"] != os.readlink("/proc/self/ns/cgroup"), out.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_sandbox_directories_as_image_symlinks_steer_nothing(tmp_path: Path, backend: str) -> None:
    target = tmp_path / "host-target"
    target.mkdir()
    tree = probe_tree(tmp_path / "tree", compile_probe(tmp_path), "org.example.Links",
                      links=("tmp", "proc", "dev", "run", ".var"), target=target)  # fmt: skip
    image = tmp_path / "links.appimg"
    appimg("pack", tree, "-o", image)
    out = appimg("run", "--allow-unsigned", image, env=backend_env(backend))
    assert out.stdout.strip() == "private"  # the sandbox's own /tmp, not the link
    probe = appimg("run", "--allow-unsigned", image, "--", "probe", "0",
                   env=backend_env(backend))  # fmt: skip
    assert "dev-tty ENXIO" in probe.stdout  # the sandbox's own /dev and /proc
    assert list(target.iterdir()) == []


# -- the sh stub: ./App.appimg judges signatures as `appimg run` without flags -----------------


def stub_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    bindir = str(Path(sys.executable).parent)  # where the `appimg` command is installed
    return {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
            "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run")}  # fmt: skip


def duplicate_first(block: object, *, broken: bool) -> None:
    """The first signature entry again, same key id; the copy broken if ``broken``."""
    block.signatures.append(copy.deepcopy(block.signatures[0]))  # type: ignore[attr-defined]
    if broken:
        break_signature(block, len(block.signatures) - 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "status", "says"),
    [
        ("unsigned", PolicyError.exit_code, "not signed"),
        ("untrusted", PolicyError.exit_code, "not a trusted key"),
        ("broken", SignatureError.exit_code, "invalid signature"),
        ("duplicate-broken", SignatureError.exit_code, "invalid signature"),
    ],
)
def test_the_stub_judges_like_run_without_flags(
    tmp_path: Path, keypair: tuple[Path, Path], kind: str, status: int, says: str
) -> None:
    image = tmp_path / "App.appimg"
    sign = [] if kind == "unsigned" else ["--sign", keypair[0]]
    appimg("pack", HELLO, "-o", image, *sign)
    if kind == "broken":
        rewrite_signatures(image, break_signature)
    elif kind == "duplicate-broken":  # a valid and an invalid entry by the same key
        rewrite_signatures(image, lambda block: duplicate_first(block, broken=True))
    image.chmod(0o755)
    env = stub_env(tmp_path)
    if kind in ("broken", "duplicate-broken"):
        appimg("trust", "add", keypair[1], env=env)  # trusting the signer does not rescue it
    proc = subprocess.run(["./App.appimg"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == status, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
