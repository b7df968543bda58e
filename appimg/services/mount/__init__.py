"""Mounting images read-only: the merged view served by FUSE or by kernel mounts
(spec/overlay-rules.md §7-§8).

Modules, from the bottom up (each imports only those above it):

* :mod:`.table` — the mount table (``/proc/self/mountinfo``), fusermount,
  default mount points under ``$XDG_RUNTIME_DIR/appimg``;
* :mod:`.state` — mount records, their :class:`~.state.MountStatus`, and
  references (flocks) in ``$XDG_RUNTIME_DIR/appimg/mounts``;
* :mod:`.kernel` — the privileged backend (loop, dm-verity, squashfs,
  overlayfs); :mod:`.fuse_base` — what the FUSE bindings share (the errno
  mapping); :mod:`.lowlevel` (libfuse 3's inode-based API) and :mod:`.fuse_ops`
  (the path-based high-level API, the fallback) — the bindings; :mod:`.frontend`
  — which binding serves;
* :mod:`.prepare` — open an image, decide trust, host rules and backend;
* :mod:`.daemon` — the server process: fork, readiness pipe, serving FUSE,
  the reference watcher;
* :mod:`.lifecycle` — a name's live mount: status, reuse, creation;
* :mod:`.manager` — the library API (``mount_image``, ``mounted``,
  ``release``, ``unmount``, ``list_mounts``, ...) shared by ``appimg mount``
  and ``appimg run``.

Every function takes the user's directories as a :class:`~appimg.host.dirs.UserDirs`.
Importing this package loads nothing heavy.
"""
