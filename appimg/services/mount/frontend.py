"""The FUSE front end of the merged view (spec/overlay-rules.md §7, "FUSE backend"):
which binding serves a mount (what they share is in :mod:`.fuse_base`).

Two bindings serve a :class:`~appimg.services.view.View`, read-only and multithreaded:

* :mod:`.lowlevel` — libfuse 3's low-level (inode-based) API through ctypes, used
  whenever libfuse 3 is installed on a platform whose ``struct stat`` it knows. It
  lets the kernel cache directory listings: a warm re-read sends no request at all;
* :mod:`.fuse_ops` — the path-based high-level API through mfusepy (libfuse 3 or 2)
  or fusepy (libfuse 2): the fallback.

:func:`binding` picks one; ``APPIMG_FUSE_API=highlevel`` in the server's environment
forces the fallback (tests and benchmarks compare the two).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from appimg.services.mount.fuse_base import Served
from appimg.services.view import View

LOWLEVEL = "lowlevel"
HIGHLEVEL = "highlevel"


def binding(env: Mapping[str, str] = os.environ) -> str:
    """LOWLEVEL when libfuse 3's low-level API can serve here, else HIGHLEVEL."""
    if env.get("APPIMG_FUSE_API") == HIGHLEVEL:
        return HIGHLEVEL
    from appimg.services.mount import lowlevel

    return LOWLEVEL if lowlevel.available() else HIGHLEVEL


def preload(env: Mapping[str, str] = os.environ) -> None:
    """Import the binding :func:`serve` will use (before a fork: paid once per process)."""
    if binding(env) == HIGHLEVEL:
        from appimg.services.mount import fuse_ops  # noqa: F401


def serve(
    view: View,
    mountpoint: str,
    *,
    label: str,
    on_ready: Callable[[], None] | None = None,
    debug: bool = False,
    allow_other: bool = False,
) -> Served:
    """Mount the view at ``mountpoint`` and serve it until unmounted (blocks).

    ``on_ready`` runs once the kernel has completed the FUSE handshake, i.e. when
    the mount is usable. A session ended by SIGTERM, SIGINT or SIGHUP returns
    normally (the low-level binding) or raises RuntimeError (mfusepy); a mount
    that fails raises RuntimeError (libfuse's reason is in the log).
    """
    kwargs: dict[str, Any] = {
        "label": label, "on_ready": on_ready, "debug": debug, "allow_other": allow_other,
    }  # fmt: skip
    if binding() == LOWLEVEL:
        from appimg.services.mount import lowlevel

        return lowlevel.serve(view, mountpoint, **kwargs)
    from appimg.services.mount import fuse_ops

    return fuse_ops.serve(view, mountpoint, **kwargs)
