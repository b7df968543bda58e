"""The sandbox an app runs in: namespaces, the merged view as its root (spec/run.md).

A :class:`Sandbox` says what the app sees: the view's top-level entries
(read-only), a fresh /proc, a minimal /dev, a private /tmp, its writable data
directory, what its permissions grant (binds, devices, hidden paths and the
namespaces it shares, from :mod:`appimg.services.run.grants`; sockets from
:mod:`appimg.services.run.sockets`), its own runtime directory (a private tmpfs
at ``/run/user/UID`` in a /run of its own that keeps the view's /run entries),
plus a cleared environment. It is
started with bubblewrap where installed (and no host rule is to be merged
into the root, :class:`Merge`), else by :mod:`appimg.services.run.direct` with
the kernel calls directly. Both give user + mount + pid + IPC + network
namespaces (network and IPC unless shared), a new
session (no controlling terminal) and the syscall filter of
:mod:`appimg.services.run.seccomp`. The image is hostile by assumption: no path
it supplies is followed on the host's side while the root is built (see
:meth:`Sandbox.root_entries` and :meth:`Sandbox.check_binds`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from appimg.errors import PolicyError
from appimg.values import Fields

#: Provided by the sandbox itself; same-named entries of the view are hidden.
SANDBOX_DIRS = ("proc", "dev", "tmp")

#: Signals passed on to the app. The app is in a session of its own, so the
#: terminal's interrupt and quit keys reach `appimg run` only, which passes them on.
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGINT)  # fmt: skip


# NamedTuples, not frozen dataclasses: defined at import on the launch path, they
# cost ~70 us each instead of ~500 us.
class Bind(NamedTuple):
    """A host path bound into the sandbox at ``dest``.

    With ``fd`` (an ``O_PATH`` descriptor opened without following symlinks,
    :mod:`appimg.services.run.grants`), that descriptor is bound, never ``source``
    looked up again: ``source`` only names it. ``device`` keeps device nodes usable
    (bubblewrap's ``--dev-bind``).
    """

    source: str
    dest: str
    writable: bool = False
    fd: int | None = None
    is_dir: bool = True
    device: bool = False


class Hide(NamedTuple):
    """A path inside a bind covered by an empty read-only tmpfs (a file: by /dev/null)."""

    dest: str
    is_dir: bool = True


class Link(NamedTuple):
    """A symlink the sandbox makes at ``dest`` (host-os' merged-/usr links)."""

    target: str
    dest: str


class Merge(NamedTuple):
    """A granted host rule the sandbox lays into its root itself (spec/run.md, "Without
    FUSE"): the host's ``path`` at ``at`` by ``mode`` (replace, under, over) over the
    app's own tree, with ``hidden`` (the whitelist's deny entries inside ``path``)
    covered. Only the direct backend can (:mod:`appimg.services.run.direct`)."""

    path: str
    at: str
    mode: str
    hidden: tuple[str, ...] = ()


def _depth(item: Bind | Hide) -> int:
    return item.dest.strip("/").count("/")


class Sandbox(Fields):
    """What one run's sandbox shows and runs.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    __slots__ = ("root", "argv", "env", "binds", "cwd", "runtime", "hides", "links",  # noqa: RUF023 (repr order)
                 "share_network", "share_ipc", "host_dev", "merge")  # fmt: skip
    _FIELDS = __slots__

    def __init__(
        self,
        root: Path,
        argv: list[str],
        env: dict[str, str],
        binds: list[Bind] | None = None,
        cwd: str = "/",
        runtime: str | None = None,
        hides: list[Hide] | None = None,
        links: list[Link] | None = None,
        share_network: bool = False,
        share_ipc: bool = False,
        host_dev: bool = False,
        merge: list[Merge] | None = None,
    ) -> None:
        self.root = root  # the merged view: a mount point or any directory tree
        self.argv = argv  # argv[0] is an absolute path inside the view
        self.env = env
        self.binds = [] if binds is None else binds
        self.cwd = cwd
        #: The runtime directory (``/run/user/UID``, a private tmpfs); None: no /run of its own.
        self.runtime = runtime
        self.hides = [] if hides is None else hides
        self.links = [] if links is None else links
        self.share_network = share_network  # else a network namespace of its own, loopback only
        self.share_ipc = share_ipc
        self.host_dev = host_dev  # the host's whole /dev instead of the minimal one
        #: Host rules merged over ``root`` in the sandbox's own mount namespace (``root`` is
        #: then the app's tree alone, e.g. its extraction); outermost ``at`` first.
        self.merge = [] if merge is None else merge

    def mounts(self) -> list[Bind | Hide]:
        """Binds and hidden paths in the order to mount them: a parent before what
        is mounted inside it (a hidden path after the bind that shows it, the app's
        data directory after the hidden ~/.var/appimg)."""
        return sorted([*self.binds, *self.hides], key=_depth)

    def fds(self) -> tuple[int, ...]:
        return tuple(bind.fd for bind in self.binds if bind.fd is not None)

    def top_level(self) -> Iterator[tuple[str, str | None]]:
        """(name, symlink target or None) of every top-level entry of the view."""
        with os.scandir(self.root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name in SANDBOX_DIRS or (self.runtime and entry.name == "run"):
                    continue
                target = os.readlink(entry.path) if entry.is_symlink() else None
                yield entry.name, target

    def _bind_tops(self) -> set[str]:
        dests = [bind.dest for bind in self.binds] + [link.dest for link in self.links]
        return {dest.strip("/").split("/")[0] for dest in dests}

    def root_entries(self) -> Iterator[tuple[str, str | None]]:
        """The top-level entries to lay in the sandbox's root, as :meth:`top_level`.

        A symlink (or file) of the view where a bind goes is left out: the bind's
        parents are then plain directories of the sandbox's own tmpfs root. Built
        through the image's symlink, the bind would land wherever the image says,
        even on the host (bubblewrap resolves ``../oldroot/...`` there).
        """
        needed = self._bind_tops()
        for name, target in self.top_level():
            if name in needed and (target is not None or not (self.root / name).is_dir()):
                continue
            yield name, target

    def run_entries(self) -> Iterator[tuple[str, str | None]]:
        """The entries of the view's /run to lay in the sandbox's own /run, as
        :meth:`root_entries` does one level up (only with a :attr:`runtime`).

        The view's ``/run/user`` never shows (the sandbox has its own), and a view
        /run that is a symlink or a file gives none.
        """
        run = self.root / "run"
        if not self.runtime or os.path.islink(run) or not run.is_dir():
            return
        needed = {parts[1] for parts in (b.dest.strip("/").split("/") for b in self.binds)
                  if parts[0] == "run" and len(parts) > 1}  # fmt: skip
        needed.add(self.runtime.strip("/").split("/")[1])
        with os.scandir(run) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                link = entry.is_symlink()
                if entry.name == "user" or (entry.name in needed and (link or not entry.is_dir())):
                    continue
                yield entry.name, os.readlink(entry.path) if link else None

    def _view_dirs(self) -> dict[tuple[str, ...], Path]:
        """Sandbox directories bound from the view (as path parts), with their view path."""
        kept = {(name,): self.root / name for name, target in self.root_entries() if target is None}
        kept.update({("run", name): self.root / "run" / name
                     for name, target in self.run_entries() if target is None})  # fmt: skip
        return kept

    def check_binds(self) -> None:
        """Refuse binds whose path runs through a symlink or file of the view.

        Below a top-level directory of the view, the bind's destination is
        inside the read-only view: an image entry in the way cannot be replaced
        there, so the app is not started.
        """
        kept = self._view_dirs()
        for bind in self.binds:
            parts = bind.dest.strip("/").split("/")
            depth = next((d for d in (1, 2) if tuple(parts[:d]) in kept), 0)
            if not depth:
                continue
            path = kept[tuple(parts[:depth])]
            for index, part in enumerate(parts[depth:], start=depth + 1):
                path = path / part
                try:
                    mode = os.lstat(path).st_mode
                except FileNotFoundError:
                    break
                if stat.S_ISLNK(mode) or (index < len(parts) and not stat.S_ISDIR(mode)):
                    inside = "/" + "/".join(parts[:index])
                    raise PolicyError(
                        f"the image's {inside} is in the way of the sandbox's bind at {bind.dest}"
                    )


def bwrap_path() -> str | None:
    if os.environ.get("APPIMG_NO_BWRAP"):
        return None  # forces the direct backend (tests, or a broken bwrap)
    return shutil.which("bwrap")


def bwrap_argv(sandbox: Sandbox, bwrap: str, info_fd: int, seccomp_fd: int) -> list[str]:
    args = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-uts"]
    args += [] if sandbox.share_ipc else ["--unshare-ipc"]
    args += [] if sandbox.share_network else ["--unshare-net"]  # bwrap brings lo up
    args += [
        "--unshare-cgroup-try", "--die-with-parent", "--new-session",
        "--info-fd", str(info_fd), "--seccomp", str(seccomp_fd), "--tmpfs", "/",
    ]  # fmt: skip
    for name, target in sandbox.root_entries():
        if target is not None:
            args += ["--symlink", target, f"/{name}"]
        else:
            args += ["--ro-bind", str(sandbox.root / name), f"/{name}"]
    args += ["--proc", "/proc"]
    args += ["--dev-bind", "/dev", "/dev"] if sandbox.host_dev else ["--dev", "/dev"]
    args += ["--tmpfs", "/tmp"]
    args += _runtime_args(sandbox)
    for item in sandbox.mounts():
        if isinstance(item, Hide):
            args += ["--tmpfs", item.dest] if item.is_dir else ["--ro-bind", "/dev/null", item.dest]
        elif item.device:
            args += ["--dev-bind", item.source, item.dest]
        elif item.fd is not None:
            args += ["--bind-fd" if item.writable else "--ro-bind-fd", str(item.fd), item.dest]
        else:
            args += ["--bind" if item.writable else "--ro-bind", item.source, item.dest]
    for link in sandbox.links:
        args += ["--symlink", link.target, link.dest]
    # Made read-only only now: binds inside them (the data directory, the sockets in
    # the runtime directory) needed their mkdir.
    for hide in sandbox.hides:
        if hide.is_dir:
            args += ["--remount-ro", hide.dest]
    if sandbox.runtime:
        args += ["--remount-ro", "/run"]
    args += ["--remount-ro", "/", "--chdir", sandbox.cwd, "--clearenv"]
    for key, value in sorted(sandbox.env.items()):
        args += ["--setenv", key, value]
    return [*args, "--", *sandbox.argv]


def _runtime_args(sandbox: Sandbox) -> list[str]:
    """A tmpfs /run with the view's /run entries, and the private runtime dir in it."""
    if not sandbox.runtime:
        return []
    args = ["--tmpfs", "/run"]
    for name, target in sandbox.run_entries():
        if target is not None:
            args += ["--symlink", target, f"/run/{name}"]
        else:
            args += ["--ro-bind", str(sandbox.root / "run" / name), f"/run/{name}"]
    return [*args, "--perms", "0700", "--tmpfs", sandbox.runtime]


def _app_pids(init_pid: int) -> list[int]:
    """Processes directly under the sandbox's init: the app (outer pid numbers)."""
    try:
        tasks = os.listdir(f"/proc/{init_pid}/task")
    except OSError:
        return []
    pids: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{init_pid}/task/{task}/children") as handle:
                pids += [int(p) for p in handle.read().split()]
        except OSError:
            continue
    return pids


class SignalForwarder:
    """Pass signals this process receives on to the app inside the sandbox."""

    def __init__(self) -> None:
        self.init_pid: int | None = None
        self.fallback_pid: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        for sig in FORWARDED:
            self._previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _forward(self, signum: int, _frame: object) -> None:
        targets = _app_pids(self.init_pid) if self.init_pid else []
        if not targets and self.fallback_pid:
            targets = [self.fallback_pid]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def run_bwrap(sandbox: Sandbox, bwrap: str, filter_cache: Path | None = None) -> int:
    """Run the sandbox with bubblewrap; return the app's exit status (128+N if killed).
    ``filter_cache``: where the compiled syscall filter is kept (:func:`.seccomp.bpf_fd`)."""
    from appimg.services.run import seccomp

    sandbox.check_binds()
    filter_fd = seccomp.bpf_fd(filter_cache)
    seccomp.reset_personality()  # inherited by bwrap and the app
    read_fd, write_fd = os.pipe()
    argv = bwrap_argv(sandbox, bwrap, write_fd, filter_fd)
    with SignalForwarder() as forwarder:
        # A process group of its own: the terminal's ^C must not kill bwrap's
        # monitor (and with it the app) before the app got it from us.
        proc = subprocess.Popen(argv, pass_fds=(write_fd, filter_fd, *sandbox.fds()),
                                process_group=0)  # fmt: skip
        os.close(write_fd)
        os.close(filter_fd)
        forwarder.fallback_pid = proc.pid
        with os.fdopen(read_fd) as info:
            text = info.read()
        # Empty or partial when bwrap failed before starting the app (it said why on stderr).
        with contextlib.suppress(ValueError, KeyError, TypeError):
            forwarder.init_pid = int(json.loads(text)["child-pid"])
        status = proc.wait()
    return status if status >= 0 else 128 - status
