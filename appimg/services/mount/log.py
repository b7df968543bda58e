"""The mount server's log: a logger made on first use.

A server writes a few lines to its log file (:func:`.state.log_path`): that it
serves, requests that failed, that it unmounts. Importing :mod:`logging` (with
traceback, linecache, tokenize, string and weakref behind it) costs ~4 ms, on
the path of every launch that has to start a mount; the server's first line
comes after the mount is ready. So the logger is made, and the server's output
set up (:func:`set_up_with`), when the first line is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_setup: Callable[[], None] | None = None


def set_up_with(setup: Callable[[], None]) -> None:
    """Run ``setup`` (which configures :mod:`logging`) before the first line is written."""
    global _setup
    _setup = setup


class _Log:
    """Stands for ``logging.getLogger("appimg.services.mount")``, made on first use."""

    __slots__ = ("_logger",)

    def __init__(self) -> None:
        self._logger: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._logger is None:
            with _lock:
                if self._logger is None:
                    import logging

                    if _setup is not None:
                        _setup()
                    self._logger = logging.getLogger("appimg.services.mount")
        return getattr(self._logger, name)


log = _Log()
