"""A small bounded LRU map shared by the SquashFS reader's caches.

Not a format module: it holds decoded pieces of a SquashFS 4.0 image (as
written by squashfs-tools / squashfs-tools-ng) for :mod:`.reader`, which states
each cache's contract where it creates one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Entries weighing at most ``maxsize`` in total, least recently used evicted first.

    Each entry weighs 1 unless ``weigh`` is given; an entry heavier than the
    whole budget is not stored. Thread-safe: every operation holds one lock for
    a few dict operations. Values are computed by the caller *outside* the lock,
    so two threads that miss on the same key at once both compute it and the
    second ``put`` wins; values must therefore be equal and never mutated.
    ``maxsize`` 0 disables the cache.
    """

    __slots__ = ("_data", "_lock", "_total", "_weigh", "maxsize")

    def __init__(self, maxsize: int, weigh: Callable[[V], int] | None = None) -> None:
        if maxsize < 0:
            raise ValueError("cache size must be >= 0")
        self.maxsize = maxsize
        self._weigh = weigh
        self._total = 0
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V) -> None:
        weight = 1 if self._weigh is None else self._weigh(value)
        if weight > self.maxsize:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._data[key] = (value, weight)
            self._total += weight
            while self._total > self.maxsize:
                _, (_, dropped) = self._data.popitem(last=False)
                self._total -= dropped

    def __len__(self) -> int:
        return len(self._data)
