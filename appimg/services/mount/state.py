"""Records of live mounts and their references (spec/overlay-rules.md §8, "Mounts").

Everything lives in ``$XDG_RUNTIME_DIR/appimg/mounts/`` (``dirs.runtime``:
private to the user, gone at logout): per mount NAME a record ``NAME.json``
(written atomically), a lock file ``NAME.lock`` and the server's log
``NAME.log``. A record's live :class:`MountStatus` is not stored:
``lifecycle.refresh`` derives it from the mount table and the server process.

A *reference* to a mount is an open file description of ``NAME.lock`` holding
a shared ``flock``. The kernel drops the lock when the last descriptor of it
is closed, also when its process is killed, so references never go stale.
The mount's server takes the lock exclusively (non-blocking) to learn that no
reference is left; while it holds it, new users wait in their shared
``flock`` until the old mount is gone. :func:`sweep` removes the files of
names that have no record and no lock holder (a failed mount, a mount gone).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from appimg.host.dirs import UserDirs
from appimg.values import Fields


class MountStatus(enum.StrEnum):
    """A recorded mount's state on the live system (printed as its value)."""

    MOUNTED = "mounted"
    DETACHED = "detached"  # lazily unmounted, its server still serves open files
    DEAD = "dead"  # the server died: the mount point answers ENOTCONN
    GONE = "gone"  # nothing mounted, no server: the record is stale


class MountInfo(Fields):
    """One mount of an image, as recorded (and as returned by ``mount_image``).

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    #: What the record stores, in its order.
    _STORED = (
        "name", "mountpoint", "image", "app_id", "version", "root_hash", "backend", "pid",
        "verity", "persistent", "created", "fingerprint", "rules", "warnings", "kernel",
        "pid_start", "grace",
    )  # fmt: skip
    __slots__ = (*_STORED, "status", "references", "reused", "reference")
    _FIELDS = __slots__

    def __init__(
        self,
        name: str,
        mountpoint: str,
        image: str,
        app_id: str,
        version: str,
        root_hash: str,
        backend: str,
        pid: int | None,
        verity: str,
        persistent: bool,
        created: float,
        fingerprint: str,
        rules: list[dict[str, Any]] | None = None,
        warnings: list[str] | None = None,
        kernel: dict[str, Any] | None = None,
        pid_start: int | None = None,
        grace: float = 0.0,
        status: MountStatus | None = None,
        references: int = 0,
        reused: bool = False,
        reference: int | None = None,
    ) -> None:
        self.name = name
        self.mountpoint = mountpoint
        self.image = image
        self.app_id = app_id
        self.version = version
        self.root_hash = root_hash
        self.backend = backend  # "fuse" | "kernel" | "extracted"
        self.pid = pid  # the server process (FUSE) or the reference watcher (kernel)
        self.verity = verity  # how payload blocks are checked, in words
        self.persistent = persistent  # stays until `appimg umount`, whatever the references
        self.created = created
        self.fingerprint = fingerprint  # of the granted host rules (equal views, equal ones)
        self.rules = [] if rules is None else rules  # every request and its fate
        self.warnings = [] if warnings is None else warnings
        self.kernel = {} if kernel is None else kernel  # kernel backend: devices, mounts
        self.pid_start = pid_start  # start time of ``pid`` (clock ticks), against pid reuse
        #: Seconds the mount outlives its last reference (``appimg run``: a relaunch in
        #: that time reuses it); 0: it goes at once. The largest any user asked for wins.
        self.grace = grace
        # Not stored: filled when read back (status, references) or by mount_image.
        self.status = status  # None until read back and refreshed, or mounted
        self.references = references  # shared locks held on NAME.lock
        self.reused = reused  # mount_image found this mount live and reused it
        self.reference = reference  # mount_image: the caller's reference fd (None if persistent)

    def to_json(self) -> dict[str, Any]:
        """The stored fields, copied (the record may be changed without changing this)."""
        return {name: _copied(getattr(self, name)) for name in self._STORED}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MountInfo:
        return cls(**{k: v for k, v in data.items() if k in cls._STORED})

    def public(self) -> dict[str, Any]:
        """What ``appimg mounts --json`` shows."""
        data = self.to_json()
        data.update(status=self.status, references=self.references)
        data.pop("pid_start")
        data.pop("grace")
        return data


def _copied(value: Any) -> Any:
    """A copy of JSON-like ``value``: its lists and dicts are new ones."""
    if isinstance(value, list):
        return [_copied(item) for item in value]
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    return value


def state_dir(dirs: UserDirs) -> Path:
    path = dirs.runtime / "appimg" / "mounts"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def record_path(dirs: UserDirs, name: str) -> Path:
    return state_dir(dirs) / f"{name}.json"


def lock_path(dirs: UserDirs, name: str) -> Path:
    return state_dir(dirs) / f"{name}.lock"


def log_path(dirs: UserDirs, name: str) -> Path:
    return state_dir(dirs) / f"{name}.log"


def write(dirs: UserDirs, info: MountInfo) -> None:
    path = record_path(dirs, info.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Atomic (rename), not durable: runtime state does not outlive a crash or reboot.
    with open(tmp, "w") as handle:
        json.dump(info.to_json(), handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read(dirs: UserDirs, name: str) -> MountInfo | None:
    try:
        data = json.loads(record_path(dirs, name).read_text())
        return MountInfo.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def remove(dirs: UserDirs, name: str) -> None:
    for path in (record_path(dirs, name),):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def names(dirs: UserDirs) -> list[str]:
    try:
        return sorted(p[:-5] for p in os.listdir(state_dir(dirs)) if p.endswith(".json"))
    except OSError:
        return []


# -- processes ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()  # fields 3.. of proc(5); the name may hold spaces


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int | None, started: int | None) -> bool:
    """Is ``pid`` running and the same process (not a reused pid, not a zombie that its
    parent, often init, has yet to reap)?"""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


# -- references -----------------------------------------------------------------------------


def open_lock(dirs: UserDirs, name: str) -> int:
    return os.open(lock_path(dirs, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def take_reference(dirs: UserDirs, name: str, timeout: float = 30.0) -> int:
    """A new reference (an fd holding a shared flock on NAME.lock).

    Waits while the mount's server holds the lock exclusively to tear it down.
    """
    fd = open_lock(dirs, name)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if _same_file(fd, lock_path(dirs, name)):
                return fd
            # :func:`sweep` removed the file meanwhile: a lock on it counts for nothing.
            os.close(fd)
            fd = open_lock(dirs, name)
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TimeoutError(f"mount {name} is being torn down for too long") from None
            time.sleep(0.01)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def sweep(dirs: UserDirs, only: Iterable[str] | None = None) -> None:
    """Remove the ``.lock``, ``.create`` and ``.log`` files of mounts that have no record
    (failed, or gone): without this they pile up in the runtime directory.

    A name's files go only while this holds its lock exclusively, so no reference
    and no server is left; a reference taken on the file just before it is
    unlinked is noticed by :func:`take_reference`, which opens the new one.
    """
    directory = state_dir(dirs)
    if only is None:
        try:
            found = os.listdir(directory)
        except OSError:
            return
        only = {p[:-5] for p in found if p.endswith(".lock")}
    for name in only:
        if record_path(dirs, name).exists():
            continue
        try:
            fd = os.open(lock_path(dirs, name), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # in use: a mount being made or torn down
                if record_path(dirs, name).exists():
                    continue
            for suffix in (".create", ".log", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    (directory / f"{name}{suffix}").unlink()
        finally:
            if fd is not None:
                os.close(fd)


def references(dirs: UserDirs, name: str) -> int:
    """How many shared locks (references) are held on NAME.lock, from /proc/locks."""
    try:
        st = os.stat(lock_path(dirs, name))
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return 0
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    wanted = {f"{major:02x}:{minor:02x}:{st.st_ino}", f"{major:x}:{minor:x}:{st.st_ino}"}
    count = 0
    for line in lines:
        parts = line.split()
        if "->" in parts:
            continue  # a waiter, not a holder
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "READ" and parts[5] in wanted:
            count += 1
    return count


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
