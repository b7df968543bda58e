"""The store lock (spec/xdg-index.md §Transactions), tested with real processes.

One writer at a time across processes, a non-blocking attempt that says busy,
a lock that dies with its holder (even under SIGKILL), a waiter that starts
over when the store it waited for was removed, and the record of the
directories that creating the store made (``created_dirs``).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.errors import StoreError
from appimg.services.store.layout import StoreLayout
from appimg.services.store.lock import StoreLock, created_dirs

#: Takes the lock, says so, then obeys one command a line on stdin.
HOLDER = r"""
import os, shutil, sys
from pathlib import Path
from appimg.services.store.layout import StoreLayout
from appimg.services.store.lock import StoreLock
layout = StoreLayout(Path(sys.argv[1]))
lock = StoreLock(layout, blocking=sys.argv[2] == "wait")
print("started", flush=True)
if lock.acquire():
    print("held", os.fstat(lock.fd).st_ino, flush=True)
else:
    print("busy", flush=True)
for line in sys.stdin:
    if line.strip() == "remove-store":
        shutil.rmtree(layout.root)  # as the last uninstall does, lock held
        print("removed", flush=True)
    elif line.strip() == "release":
        lock.release()
        print("released", flush=True)
"""

#: Increments a counter in the store N times, each time under the lock, slowly.
COUNTER = r"""
import os, sys, time
from pathlib import Path
from appimg.services.store.layout import StoreLayout
from appimg.services.store.lock import StoreLock
layout = StoreLayout(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with StoreLock(layout):
        with open(layout.root / "log", "a") as log:
            log.write(f"enter {os.getpid()}\n")
        counter = layout.root / "counter"
        value = int(counter.read_text()) if counter.exists() else 0
        time.sleep(0.002)  # a read-modify-write that loses updates without the lock
        counter.write_text(str(value + 1))
        with open(layout.root / "log", "a") as log:
            log.write(f"exit {os.getpid()}\n")
"""


class Holder:
    """A child process running HOLDER; ``line()`` waits for its next line of output."""

    def __init__(self, root: Path, *, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(root), "wait" if wait else "try"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )  # fmt: skip
        assert self.line() == "started"

    def line(self, timeout: float = 30.0) -> str | None:
        """The next line, or None if there is none within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        out = b""
        deadline = time.monotonic() + timeout
        while not out.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            byte = os.read(fd, 1)
            if not byte:
                return None  # the process died
            out += byte
        return out.decode().strip()

    def send(self, command: str) -> str | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def hold(holders: list[Holder], root: Path, *, wait: bool = True) -> Holder:
    holder = Holder(root, wait=wait)
    holders.append(holder)
    return holder


def test_two_processes_never_hold_it_at_once(tmp_path: Path, holders: list[Holder]) -> None:
    root = tmp_path / "store"
    first = hold(holders, root)
    assert (first.line() or "").startswith("held")
    second = hold(holders, root)
    assert second.line(timeout=1.0) is None  # still waiting while the first holds it
    assert first.send("release") == "released"
    assert (second.line() or "").startswith("held")


def test_no_lost_update_under_contention(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rounds, workers = 15, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", COUNTER, str(root), str(rounds)])
        for _ in range(workers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    assert (root / "counter").read_text() == str(rounds * workers)
    # Every critical section closes before the next one opens, in the same process.
    log = [line.split() for line in (root / "log").read_text().splitlines()]
    assert len(log) == 2 * rounds * workers
    for enter, leave in zip(log[::2], log[1::2], strict=True):
        assert enter[0] == "enter" and leave == ["exit", enter[1]], log


def test_non_blocking_acquire_fails_while_held(tmp_path: Path, holders: list[Holder]) -> None:
    root = tmp_path / "store"
    first = hold(holders, root)
    assert (first.line() or "").startswith("held")
    assert hold(holders, root, wait=False).line() == "busy"
    lock = StoreLock(StoreLayout(root), blocking=False)
    assert lock.acquire() is False
    assert lock.fd == -1  # nothing held, nothing to release
    # A busy non-blocking lock never runs the block unlocked.
    with pytest.raises(StoreError, match="another appimg command"), lock:
        raise AssertionError("ran without the lock")
    assert first.send("release") == "released"
    assert lock.acquire() is True
    try:
        assert hold(holders, root, wait=False).line() == "busy"  # held by this process now
    finally:
        lock.release()
    assert lock.fd == -1
    assert (hold(holders, root, wait=False).line() or "").startswith("held")


def test_a_holder_killed_with_sigkill_releases_it(tmp_path: Path, holders: list[Holder]) -> None:
    root = tmp_path / "store"
    first = hold(holders, root)
    assert (first.line() or "").startswith("held")
    waiter = hold(holders, root)
    assert waiter.line(timeout=0.5) is None
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=30) == -signal.SIGKILL
    assert (waiter.line() or "").startswith("held")
    waiter.proc.send_signal(signal.SIGKILL)
    waiter.proc.wait(timeout=30)
    with StoreLock(StoreLayout(root), blocking=False) as lock:
        assert lock.fd >= 0


def test_a_waiter_starts_over_when_the_store_is_removed(
    tmp_path: Path, holders: list[Holder]
) -> None:
    # The last uninstall removes the store, lock file included, while holding the lock:
    # the waiter must end up locking the new lock file, not the unlinked one.
    root = tmp_path / "store"
    first = hold(holders, root)
    assert (first.line() or "").startswith("held")
    waiter = hold(holders, root)
    assert waiter.line(timeout=0.5) is None
    assert first.send("remove-store") == "removed"
    assert not root.exists()
    assert first.send("release") == "released"
    held = (waiter.line() or "").split()
    assert held[0] == "held"
    assert int(held[1]) == os.stat(root / "lock").st_ino
    assert hold(holders, root, wait=False).line() == "busy"


def test_created_dirs_records_what_creating_the_store_made(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    root = tmp_path / "home" / "a" / "b" / "appimg"
    layout = StoreLayout(root)
    assert created_dirs(layout) == []  # no store yet
    with StoreLock(layout):
        pass
    made = [tmp_path / "home" / "a" / "b", tmp_path / "home" / "a"]
    assert created_dirs(layout) == made  # deepest first; the store itself is not listed
    # Taking the lock again (the file exists now) keeps the first record.
    with StoreLock(layout):
        pass
    assert created_dirs(layout) == made
    # A store whose parents all existed records nothing.
    plain = StoreLayout(tmp_path / "home" / "appimg")
    with StoreLock(plain):
        pass
    assert plain.lock.read_bytes() == b""
    assert created_dirs(plain) == []


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"a": 1}', b'"/x"', b'["relative/dir", 3, "/abs"]', b"\xff\xfe"],
)
def test_created_dirs_ignores_a_damaged_record(tmp_path: Path, content: bytes) -> None:
    layout = StoreLayout(tmp_path / "appimg")
    layout.root.mkdir()
    layout.lock.write_bytes(content)
    expected = [Path("/abs")] if content.startswith(b"[") else []
    assert created_dirs(layout) == expected  # only absolute paths count
    with StoreLock(layout):  # and the lock still works
        pass


def test_a_store_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError):
        StoreLock(StoreLayout(tmp_path / "file" / "appimg")).acquire()
