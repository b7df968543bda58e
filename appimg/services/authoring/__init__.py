"""Authoring help: from an existing program to an app directory, and pack-time checks
(spec/manifest.md §7 Starting from an existing program, §8 Checks at pack time).

:mod:`.elf` reads what a program needs from its ELF headers (pyelftools),
:mod:`.tree` reads files of an app tree without leaving it, :mod:`.appimage`
finds and unpacks an AppImage's filesystem without running it,
:mod:`.init_from` writes an app directory and its ``appimg.toml`` from a Debian
package, an AppImage or an installed tree, and :mod:`.checks` tells the packer
what ``appimg install`` and ``appimg run`` would refuse. Only ``appimg init
--from`` and ``appimg pack`` import this package: it stays off the launch path.
"""
