"""Path resolution inside a payload that follows symlinks, confined to the image.

The one place that follows a payload's symlinks (spec/format.md §Payload): the
launcher, ``appimg cat``/``ls`` and the export rules all resolve paths here.
By default symlink targets are resolved against the image's own root ('/'
means the payload's root, never the host's) and ``..`` never climbs above it,
so a path resolved here always names an entry of the payload. With
``confined``, a target that is absolute or climbs above the root is refused
instead: the export rules take only files whose links mean the same inside
the image and once exported to the host.
"""

from __future__ import annotations

import errno

from appimg.errors import NotADirError, NotFoundError, PathError
from appimg.format.squashfs import Inode, SquashfsReader

MAX_SYMLINK_HOPS = 40


def resolve(
    reader: SquashfsReader, path: str, *, follow_last: bool = True, confined: bool = False
) -> Inode:
    """The inode at ``path``; symlinks are followed (the last one only if ``follow_last``).

    Raises :class:`PathError`: ENOENT/ENOTDIR for a missing entry, ELOOP after
    :data:`MAX_SYMLINK_HOPS` links, EXDEV for a link that leaves the payload
    (only with ``confined``).
    """
    hops = 0
    target = ""
    stack: list[Inode] = [reader.root]
    pending = [p for p in path.split("/") if p][::-1]
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            if len(stack) > 1:
                stack.pop()
            elif confined:
                raise _outside(path, target)
            continue
        current = stack[-1]
        if not current.is_dir():
            raise NotADirError(path)
        try:
            child = reader.lookup_child(current, name)
        except NotFoundError:
            raise NotFoundError(path) from None  # the whole path asked for, not one name
        if child.is_symlink() and (pending or follow_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise PathError(errno.ELOOP, path, f"too many levels of symbolic links: {path}")
            target = reader.readlink(child)
            if target.startswith("/"):
                if confined:
                    raise _outside(path, target)
                del stack[1:]
            pending.extend([p for p in target.split("/") if p][::-1])
            continue
        stack.append(child)
    return stack[-1]


def _outside(path: str, target: str) -> PathError:
    what = f"symlink to {target!r}" if target else repr(path)
    return PathError(errno.EXDEV, path, f"{what} points outside the image")
