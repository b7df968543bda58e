"""Mounting images read-only: the merged view served by FUSE or by kernel mounts
(spec/overlay-rules.md §7-§8).

:mod:`.manager` is the library API (``mount_image``, ``release``, ``mounted``,
``unmount``, ``list_mounts``) shared by ``appimg mount`` and ``appimg run``;
:mod:`.fuse_ops` is the FUSE front end, :mod:`.kernel` the privileged backend,
:mod:`.state` the records and references in ``$XDG_RUNTIME_DIR/appimg/mounts``.
Importing this package loads nothing heavy.
"""
