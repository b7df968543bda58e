"""The store lock: one writer at a time (spec/xdg-index.md §Transactions).

An exclusive ``flock`` on ``lock`` in the store (its content: the directories
created above the store when it was made). The last uninstall removes
the whole store, lock file included, while holding the lock; a process that
was waiting for the lock then holds it on an unlinked file, so after locking
we check that the path still names the locked inode and start over if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from appimg.errors import StoreError
from appimg.services.store.layout import StoreLayout

MAX_ATTEMPTS = 100


class StoreLock:
    def __init__(self, layout: StoreLayout, *, blocking: bool = True) -> None:
        self.layout = layout
        self.blocking = blocking
        self.fd = -1

    def acquire(self) -> bool:
        """Take the lock (creating the store); False only if non-blocking and it is busy."""
        flags = fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB)
        for _ in range(MAX_ATTEMPTS):
            try:
                fd = self._open()
            except OSError as exc:
                raise StoreError(f"{exc.filename or self.layout.root}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.layout.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)  # the store was removed while we waited: start over
        raise StoreError(f"{self.layout.lock}: could not be locked")

    def _open(self) -> int:
        """Open (creating the store if needed) the lock file.

        A new lock file records the directories created above the store, so that
        removing the last app can remove them too (see :func:`created_dirs`).
        """
        root = self.layout.root
        missing = [str(p) for p in root.parents if not p.exists()]
        root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return os.open(self.layout.lock, os.O_RDWR | os.O_CLOEXEC)
        if missing:
            os.write(fd, json.dumps(missing).encode())
        return fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> StoreLock:
        # A non-blocking lock that is busy must not run the block as if it held it.
        if not self.acquire():
            raise StoreError(f"{self.layout.root}: another appimg command is changing the store")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def created_dirs(layout: StoreLayout) -> list[Path]:
    """Directories above the store that creating it made, deepest first."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(layout.lock.read_bytes() or b"[]")
        if isinstance(found, list):
            return [Path(p) for p in found if isinstance(p, str) and os.path.isabs(p)]
    return []
