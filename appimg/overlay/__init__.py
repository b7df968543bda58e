"""Overlay rules: how an app's view merges its payload with host paths (spec/overlay-rules.md).

:mod:`.policy` (the host whitelist), :mod:`.profiles` (named rule sets),
:mod:`.rules` (requests, grants, precedence), :mod:`.hostfs` (symlink-free
host access) and :mod:`.view` (the merged tree) hold no FUSE code; the mount
backends in :mod:`appimg.mount` serve what :class:`.view.View` describes.
:func:`.host.host_rules` puts them together for one app. (This package imports
nothing itself, so that its light modules can be used without the rest.)
"""
