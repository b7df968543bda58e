"""Running without FUSE: a verified extraction cache (spec/run.md, "Without FUSE").

Where ``/dev/fuse`` cannot be opened or ``fusermount3`` is missing (containers,
hardened hosts), or with ``appimg run --no-fuse``, the app runs from a copy of
its payload instead of a mount: :func:`run_root` returns a
:class:`~.state.MountInfo` (backend ``"extracted"``) whose mount point is that
copy, so the sandbox is built the same way.

The copy lives in ``$XDG_CACHE_HOME/appimg/extracted/ROOT/tree``, ``ROOT`` the
image's verity root hash. It is filled through the image's verified payload
reader (every block is checked against the verity tree as it is read, so no
unverified byte ever lands), in ``.ROOT.tmp``, which is renamed into place
only once complete, its ``complete`` marker written last and everything
synced first: a fill killed halfway leaves only ``.ROOT.tmp``, never used and
removed by the next fill. The marker records a digest of the tree's metadata
(each entry's path, inode, mode, size and change time, which no one can set
back), checked by every run: a copy changed after it was verified is
extracted again.

Two lock files per root: ``.ROOT.use`` (a run holds it shared while the app
runs; the store's prune removes a copy only with it exclusive) and ``.ROOT.fill``
(one fill at a time). A copy no installed version refers to is removed by the
store's next change (:func:`appimg.services.store.extracted_cache.prune`),
unless a run still uses it.

The copy holds the app's files only. The granted host rules of the view (the
``host`` profile's ``/usr`` ``under``, ``/etc/...`` ``over``, ...) are merged over
it by the sandbox itself, with overlayfs in its own mount namespace
(:func:`appimg.services.run.launcher.merged_rules`,
:mod:`appimg.services.run.direct`); :func:`needs_view` tells those from the rules
the sandbox binds directly anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.host.dirs import UserDirs
from appimg.services.mount.state import MountInfo
from appimg.services.store.extracted_cache import cache_root, remove_copy

if TYPE_CHECKING:
    from appimg.format.image import Image
    from appimg.host.trust import Verdict

#: The backend name a run from the cache is recorded with (never in the mount table).
BACKEND = "extracted"
MARKER = "complete"
TREE = "tree"


def fuse_unavailable() -> str | None:
    """Why FUSE cannot be used here, or None if it can (``/dev/fuse`` opens read-write
    and a fusermount program is installed)."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"/dev/fuse: {exc.strerror.lower() if exc.strerror else exc}"
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount3 is not installed"
    return None


def needs_view(path: str, at: str) -> bool:
    """Does a granted host rule need the merged view (FUSE, or without it the sandbox's
    own overlay of the copy)? Sockets and paths under
    /tmp are bound directly by the sandbox anyway (see
    :func:`appimg.services.run.environment.socket_binds`); everything else is merged."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False  # nothing on the host: the view would show nothing there either
    return not (at == "/tmp" or at.startswith("/tmp/"))


# -- the run's root -------------------------------------------------------------------------


def run_root(
    path: str | os.PathLike[str],
    dirs: UserDirs,
    *,
    no_fuse: bool,
    strict: bool,
    allow_untrusted: bool,
    allow_unsigned: bool,
    pinned: Collection[str],
    no_host: bool,
    grace: float,
    opened: tuple[Image, Verdict] | None = None,
) -> MountInfo:
    """The root ``appimg run`` builds the sandbox on: a (reused) mount of ``path``, or,
    where FUSE is not available or ``no_fuse``, its verified copy (said once on stderr).

    ``opened``: the image of ``path`` already open and judged with these allowances
    (see :func:`.prepare.prepare`); it stays the caller's to close. The caller
    releases the root with :func:`~.manager.release`."""
    from appimg.services.mount import manager

    why = "--no-fuse" if no_fuse else fuse_unavailable()
    if why is None:
        return manager.mount_image(path, dirs, strict=strict, allow_untrusted=allow_untrusted,
                                   allow_unsigned=allow_unsigned, pinned=pinned,
                                   no_host=no_host, grace=grace, opened=opened)  # fmt: skip
    from appimg.services.mount.prepare import prepare

    prep = prepare(path, dirs, strict=strict, allow_untrusted=allow_untrusted,
                   allow_unsigned=allow_unsigned, pinned=pinned, no_host=no_host,
                   opened=opened)  # fmt: skip
    try:
        reference, tree = ensure(prep.image, prep.root_hash, dirs)
        image = prep.image
        info = MountInfo(
            name=prep.name, mountpoint=str(tree), image=str(Path(path).resolve()),
            app_id=image.manifest["id"], version=image.manifest["version"],
            root_hash=prep.root_hash, backend=BACKEND, pid=None,
            verity="every block checked against the verity tree while extracting",
            persistent=False, created=time.time(), fingerprint=prep.resolution.fingerprint(),
            rules=[d.to_json() for d in prep.resolution.decisions],
            warnings=list(prep.warnings),
        )  # fmt: skip
        info.reference = reference
    finally:
        if opened is None:
            prep.image.close()
    verb = "FUSE is not used (--no-fuse)" if no_fuse else f"FUSE is not available here ({why})"
    print(f"appimg run: {verb}; running from a verified copy in {tree}", file=sys.stderr)
    return info


# -- the cache ------------------------------------------------------------------------------


def _lock(path: Path, operation: int) -> int:
    """An fd of ``path`` locked with ``operation``, the file's current inode (a lock file
    unlinked by the store's prune meanwhile is opened again)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:  # the cache directory, just emptied and removed by prune
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, operation)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def tree_digest(tree: Path) -> str:
    """A digest of every entry's path, inode, mode, size and change time below ``tree``.

    The change time moves on every write, chmod, rename or link and cannot be set
    back, so any change made to the copy after it was verified changes the digest."""
    import hashlib  # not at import: a run that has FUSE never digests a tree

    digest = hashlib.sha256()
    stack = [(str(tree), "")]
    while stack:
        directory, rel = stack.pop()
        with os.scandir(directory) as entries:
            found = sorted(entries, key=lambda e: e.name)
        for entry in found:
            st = entry.stat(follow_symlinks=False)
            name = f"{rel}/{entry.name}"
            digest.update(os.fsencode(name) + b"\0")
            digest.update(b"%d %o %d %d\n" % (st.st_ino, st.st_mode, st.st_size, st.st_ctime_ns))
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, name))
    st = os.stat(tree, follow_symlinks=False)
    digest.update(b"%d %o %d\n" % (st.st_ino, st.st_mode, st.st_ctime_ns))
    return digest.hexdigest()


def _valid(place: Path, root_hash: str) -> bool:
    try:
        marker = json.loads((place / MARKER).read_bytes())
        tree = place / TREE
        return (isinstance(marker, dict) and marker.get("root_hash") == root_hash
                and not tree.is_symlink() and marker.get("tree") == tree_digest(tree))  # fmt: skip
    except (OSError, ValueError):
        return False


def ensure(image: Any, root_hash: str, dirs: UserDirs) -> tuple[int, Path]:
    """The verified copy of ``image`` (extracted now if missing or changed) and a
    reference to it: an fd with a shared lock, to close once the app is done."""
    base = cache_root(dirs)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    place = base / root_hash
    use = _lock(base / f".{root_hash}.use", fcntl.LOCK_SH)
    try:
        if not _valid(place, root_hash):
            fill = _lock(base / f".{root_hash}.fill", fcntl.LOCK_EX)
            try:
                if not _valid(place, root_hash):  # another run may have filled it meanwhile
                    _fill(image, root_hash, base, place)
            finally:
                os.close(fill)
        return use, place / TREE
    except BaseException:
        os.close(use)
        raise


def _fill(image: Any, root_hash: str, base: Path, place: Path) -> None:
    from appimg.format.extract import extract

    staging = base / f".{root_hash}.tmp"
    remove_copy(staging)  # what a killed fill left
    staging.mkdir(mode=0o700)
    try:
        tree = staging / TREE
        # Blocks are checked against the verity tree as the payload reader reads them:
        # a tampered block stops the extraction with an IntegrityError.
        extract(image.payload, tree, [], notice=lambda _message: None)
        os.sync()  # the files' data reaches the disk before the marker that vouches for it
        marker = json.dumps({"root_hash": root_hash, "tree": tree_digest(tree)}).encode()
        fd = os.open(staging / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, marker)
            os.fsync(fd)
        finally:
            os.close(fd)
        remove_copy(place)  # a changed or incomplete copy
        os.rename(staging, place)
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        remove_copy(staging)
        raise
