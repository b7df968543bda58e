"""The app's syscall filter (spec/run.md §Syscall filter).

A seccomp filter built with libseccomp's Python bindings (Debian's
``python3-seccomp``), after Flatpak's ``setup_seccomp``: everything is allowed
except calls a desktop app has no business making, which fail with EPERM (or
ENOSYS, where the C library must fall back to an older call) instead of
killing the app. Both backends use the same filter: bubblewrap reads it as BPF
from a file descriptor (``--seccomp FD``), the direct backend loads it in the
app's process right before ``execve``.

The BPF program bubblewrap gets is kept in a cache (:func:`bpf_fd`): compiling
it means loading libseccomp and its bindings, which cost each launch ~2 ms warm
and more with a cold page cache, for the same program every time.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from appimg.errors import ToolError

if TYPE_CHECKING:
    import seccomp

CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
PER_LINUX = 0
PR_SET_NO_NEW_PRIVS = 38
#: Socket families an app may create; the rest fail with EAFNOSUPPORT.
#: AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, in numerical order.
SOCKET_FAMILIES = (0, 1, 2, 10, 16)

#: Blocked outright, EPERM: (syscall names, why).
BLOCKED = (
    (("syslog",), "reads the kernel log"),
    (("uselib",), "obsolete library loader"),
    (("acct",), "switches process accounting"),
    (("quotactl",), "reads or changes disk quotas"),
    (("add_key", "keyctl", "request_key"), "the kernel keyring is shared with the user's session"),
    (("move_pages", "mbind", "get_mempolicy", "set_mempolicy", "migrate_pages"),
     "NUMA memory placement: a history of kernel bugs"),
    (("unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot"),
     "no namespaces or mounts of its own: the sandbox's layout is final"),
    (("perf_event_open",), "profiling is done from outside; a history of kernel bugs"),
    (("ptrace", "process_vm_readv", "process_vm_writev"),
     "no tracing of, or reading or writing the memory of, other processes in the sandbox"),
    (("userfaultfd",), "stalls the kernel at a chosen page fault: makes kernel races exploitable"),
    (("bpf",), "BPF programs are kernel code (refused anyway unless the host allows them)"),
    (("modify_ldt",), "16-bit segments: a history of information leaks"),
    (("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
      "reboot", "swapon", "swapoff", "iopl", "ioperm"),
     "privileged kernel operations (refused anyway without CAP_SYS_ADMIN)"),
)  # fmt: skip

#: Fail with ENOSYS, so that the C library falls back to a call we can check.
#: clone3 passes its flags in memory, which seccomp cannot read; the new mount
#: API could rearrange the sandbox's mounts. io_uring performs syscalls' work
#: (opening files, creating sockets) without a syscall seccomp sees, so it would
#: bypass this filter's argument checks (IORING_OP_SOCKET: any socket family);
#: programs that use it fall back to plain syscalls on ENOSYS.
UNAVAILABLE = ("clone3", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
               "mount_setattr",
               "io_uring_setup", "io_uring_enter", "io_uring_register")  # fmt: skip

#: 32-bit entry points filtered with the same rules as the native one, per native
#: architecture (a syscall of an architecture missing here kills the process).
_EXTRA_ARCHES = {"X86_64": ("X86", "X32"), "AARCH64": ("ARM",)}

_libc = ctypes.CDLL(None, use_errno=True)


def _bindings():  # the module is optional until a sandbox is started
    try:
        import seccomp
    except ImportError:
        raise ToolError(
            "the app's syscall filter needs libseccomp's Python bindings "
            "(the python3-seccomp package)"
        ) from None
    return seccomp


def _add(filt: seccomp.SyscallFilter, action: object, name: str, *args: object) -> None:
    sc = _bindings()
    if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
        return  # not a syscall of this architecture (e.g. modify_ldt on arm64)
    filt.add_rule(action, name, *args)


def build_filter() -> seccomp.SyscallFilter:
    """The filter every app runs under (see the module docstring)."""
    sc = _bindings()
    filt = sc.SyscallFilter(sc.ALLOW)
    eafnosupport = sc.ERRNO(errno.EAFNOSUPPORT)
    # Socket families first, on the native architecture only: on 32-bit x86,
    # socket() may go through socketcall(), whose arguments seccomp cannot see,
    # and libseccomp would then refuse every socket.
    allowed = -1
    for family in SOCKET_FAMILIES:
        for refused in range(allowed + 1, family):
            filt.add_rule_exactly(eafnosupport, "socket", sc.Arg(0, sc.EQ, refused))
        allowed = family
    filt.add_rule_exactly(eafnosupport, "socket", sc.Arg(0, sc.GE, allowed + 1))
    # libseccomp's Arch constants are signed, system_arch() is not.
    native = next((name for name in _EXTRA_ARCHES
                   if getattr(sc.Arch, name) & 0xFFFFFFFF == sc.system_arch()), None)  # fmt: skip
    for arch in _EXTRA_ARCHES.get(native or "", ()):
        filt.add_arch(getattr(sc.Arch, arch))
    eperm = sc.ERRNO(errno.EPERM)
    for names, _why in BLOCKED:
        for name in names:
            _add(filt, eperm, name)
    for name in UNAVAILABLE:
        _add(filt, sc.ERRNO(errno.ENOSYS), name)
    # A new user namespace through clone() (flags in the first argument on x86 and arm).
    _add(filt, eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    # Typing into the terminal (CVE-2017-5226), or pasting on a virtual console
    # (CVE-2023-28100). The kernel reads the request as 32 bits: so does the check.
    for request in (TIOCSTI, TIOCLINUX):
        _add(filt, eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    # No switch to another personality (the caller's is reset to PER_LINUX first).
    _add(filt, eperm, "personality", sc.Arg(0, sc.NE, PER_LINUX))
    return filt


#: Larger than any program build_filter() makes (~1.5 KiB): a bigger cached file is not one.
MAX_BPF_BYTES = 64 * 1024
#: One BPF instruction (struct sock_filter).
_BPF_INSN = 8


def _compiled() -> bytes:
    fd = os.memfd_create("appimg-seccomp-build", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as handle:
            build_filter().export_bpf(handle)
        return os.pread(fd, MAX_BPF_BYTES + 1, 0)
    finally:
        os.close(fd)


def _cache_name() -> str:
    """What the program depends on, hashed: the rules above, this module's code, the
    machine, and the installed bindings (which change with libseccomp's syscall tables),
    found without loading them."""
    from importlib.util import find_spec

    from appimg.digests import sha256

    spec = find_spec("seccomp")
    parts = [repr((BLOCKED, UNAVAILABLE, SOCKET_FAMILIES, _EXTRA_ARCHES, CLONE_NEWUSER,
                   TIOCSTI, TIOCLINUX, PER_LINUX)), os.uname().machine]  # fmt: skip
    for path in (__file__, spec.origin if spec and spec.origin else ""):
        try:
            st = os.stat(path)
        except OSError:
            raise ToolError(
                "the app's syscall filter needs libseccomp's Python bindings "
                "(the python3-seccomp package)"
            ) from None
        parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return sha256("\0".join(parts).encode()).hexdigest() + ".bpf"


def _cached(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            program = handle.read(MAX_BPF_BYTES + 1)
    except OSError:
        return None
    if not program or len(program) > MAX_BPF_BYTES or len(program) % _BPF_INSN:
        return None
    return program


def bpf_fd(cache: Path | None = None) -> int:
    """A memfd holding the filter as BPF, positioned at its start (for ``bwrap --seccomp``).

    ``cache``: a directory of the user's (hidden from apps) where the compiled program
    is kept under a name hashing all it depends on (:func:`_cache_name`), so that a
    change of the rules, of this code or of libseccomp compiles it anew."""
    path = cache / _cache_name() if cache is not None else None
    program = _cached(path) if path is not None else None
    if program is None:
        program = _compiled()
        if path is not None:
            from appimg.atomic import replace_file

            try:  # a read-only cache only costs the next launch time
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                replace_file(path, program, 0o600)
            except OSError:
                pass
    fd = os.memfd_create("appimg-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def reset_personality() -> None:
    """Clear execution-domain flags (e.g. ADDR_NO_RANDOMIZE): the filter allows PER_LINUX only."""
    if _libc.personality(ctypes.c_ulong(PER_LINUX)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"personality: {os.strerror(err)}")


def load(filt: seccomp.SyscallFilter) -> None:
    """Apply the filter to this process and its future children (after no_new_privs)."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    filt.load()
