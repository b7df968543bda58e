"""Changing the store atomically, and finishing or undoing an interrupted change
(spec/xdg-index.md §Transactions).

A change runs under the store lock in this order:

1. stage: copy the image and write every new export file under ``tmp/<tx>/``
   (each fsynced);
2. write ``journal.json`` (the transaction record: the SHA-256 of the new
   index, the image files it adds and the ones it makes obsolete);
3. move the new image into ``images/``;
4. **commit**: write the new index to a temporary file, fsync, rename it over
   ``index.json``, fsync the directory;
5. move the staged exports into ``exports/share/`` and delete the ones the
   app no longer exports; delete obsolete images; refresh the caches;
6. delete the staging directory, then the journal.

Before the commit the old index is in force and nothing visible has changed
but an unreferenced image; after it the new index is in force and exports
follow. :func:`recover` (run by the next command whenever a journal or a
staging directory is left) looks at which index is in place, deletes the
images of the side that lost, and reconciles the exports directory with the
index: files the index lists are taken from the staging directory or, failing
that, rendered again from their image; files it does not list are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from appimg.atomic import (
    copy_file,
    fsync_dir,
    open_dirs,
    remove_empty_dirs,
    remove_empty_dirs_at,
    replace_file,
    replace_file_at,
    unlink,
    unlink_at,
    unlink_below,
    write_file_at,
)
from appimg.services.store import caches
from appimg.services.store import index as index_mod
from appimg.services.store.layout import StoreLayout
from appimg.services.store.lock import created_dirs

#: Renders an app's exports again from its image: (app id, index) -> {rel: bytes}.
Rerender = Callable[[str, index_mod.Index], dict[str, bytes]]
StepHook = Callable[[str], None]


def step_hook(env: Mapping[str, str]) -> StepHook:
    """Test hook: APPIMG_TEST_SLOW_STEPS=SECONDS sleeps after each step, and
    APPIMG_TEST_STEP_LOG=FILE appends each step's name, so that crash tests can
    kill a command at every phase."""
    delay = float(env.get("APPIMG_TEST_SLOW_STEPS") or 0)
    log = env.get("APPIMG_TEST_STEP_LOG")
    if not delay and not log:
        return lambda _name: None

    def hook(name: str) -> None:
        if log:
            with open(log, "a") as handle:
                handle.write(f"{time.monotonic():.6f} {name}\n")
        if delay:
            time.sleep(delay)

    return hook


#: A transaction id as :class:`Transaction` makes them (the journal's ``tx``).
_TXID = re.compile(r"[0-9]+-[0-9]+-[0-9a-f]+\Z")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _split(rel: str) -> tuple[list[str], str]:
    *parents, name = rel.split("/")
    return parents, name


def open_exports(layout: StoreLayout, *, create: bool = False) -> int | None:
    """``exports/share`` opened without following symlinks (one found in its place is
    removed); None if it does not exist and ``create`` is false."""
    try:
        return open_dirs(layout.root, ("exports", "share"), create=create, replace=True)
    except FileNotFoundError:
        if create:
            raise
        return None


def sha256_at(base: Path | int, rel: str) -> str | None:
    """SHA-256 of the regular file ``rel`` below ``base`` (a path or a directory
    descriptor, which stays open), reached without following a
    symlink; None if there is none (a symlink, a FIFO, a directory count as none)."""
    import hashlib

    parents, name = _split(rel)
    try:
        dir_fd = open_dirs(base, parents)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Transaction:
    """One change to the store; the caller holds the lock. Use as a context manager."""

    def __init__(self, layout: StoreLayout, op: str, app_id: str, step: StepHook,
                 rerender: Rerender | None = None) -> None:  # fmt: skip
        self.layout = layout
        self.rerender = rerender
        self.op = op
        self.app_id = app_id
        self.step = step
        self.txid = f"{int(time.time())}-{os.getpid()}-{secrets.token_hex(4)}"
        self.staging = layout.tmp / self.txid
        self.journal_written = False
        self.done = False

    def __enter__(self) -> Transaction:
        # A symlink planted at tmp/ is replaced, not followed: the staged image and
        # exports are then written by path below a real directory of the store.
        os.close(open_dirs(self.layout.root, ("tmp", self.txid), create=True, replace=True))
        self.step("begin")
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None or self.done:
            return
        if self.journal_written:
            recover(self.layout, self.rerender)  # finish or undo what was started
        else:
            remove_tmp(self.layout, self.txid)
            remove_empty_dirs(self.layout.tmp, self.layout.root)

    def stage_image(self, source: Path) -> Path:
        target = self.staging / "image.appimg"
        copy_file(source, target)
        self.step("image-copied")
        return target

    def commit(
        self,
        new_index: index_mod.Index,
        *,
        new_files: Mapping[str, bytes],
        old_exported: Iterable[str] = (),
        staged_image: Path | None = None,
        added_image: str | None = None,
        obsolete_images: Iterable[str] = (),
    ) -> None:
        """Steps 1 (exports) to 6 above; ``added_image`` is the store-relative name of
        ``staged_image`` once placed."""
        layout = self.layout
        share = self.staging / "share"
        if new_files:
            share_fd = open_dirs(self.staging, ("share",), create=True, replace=True)
            try:
                for rel, data in new_files.items():
                    parents, name = _split(rel)
                    dir_fd = open_dirs(share_fd, parents, create=True, replace=True)
                    try:
                        write_file_at(dir_fd, name, data)
                    finally:
                        os.close(dir_fd)
            finally:
                os.close(share_fd)
        self.step("staged")
        new_bytes = index_mod.dumps(new_index)
        obsolete = sorted(set(obsolete_images))
        record = {
            "tx": self.txid,
            "op": self.op,
            "app": self.app_id,
            "after_sha256": index_mod.digest(new_bytes),
            "added_images": [added_image] if added_image else [],
            "obsolete_images": obsolete,
            "entry": new_index["apps"].get(self.app_id),
        }
        replace_file(layout.journal, json.dumps(record, sort_keys=True).encode())
        self.journal_written = True
        self.step("journal")
        if staged_image is not None and added_image:
            parents, name = _split(added_image)
            dir_fd = open_dirs(layout.root, parents, create=True, replace=True)
            try:
                os.rename(staged_image, name, dst_dir_fd=dir_fd)
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.step("image-placed")
        replace_file(layout.index, new_bytes)  # the commit point
        self.step("committed")
        removed = set(old_exported) - set(new_files)
        apply_exports(layout, share, new_files, removed)
        self.step("exports-applied")
        for rel in obsolete:
            if not _referenced(new_index, rel):
                _remove_image(layout, rel)
        self.step("images-removed")
        kinds = {caches.kind_of(rel) for rel in [*new_files, *removed]} - {None}
        caches.refresh(layout.exports, kinds)  # type: ignore[arg-type]
        prune_exports(layout, [*new_files, *removed])
        self.step("caches")
        finish(layout, new_index)
        self.done = True
        self.step("done")


def _remove_image(layout: StoreLayout, rel: str) -> None:
    """Delete an image file the index (or journal) names, never through a symlink."""
    if not index_mod.valid_image_file(rel):
        return  # the index is checked on reading; a journal entry could still be crafted
    unlink_below(layout.root, rel)
    remove_empty_dirs_at(layout.root, _split(rel)[0])


def _move_at(src_base: Path | int, dst_base: int, rel: str) -> None:
    """Rename ``src_base/rel`` to ``dst_base/rel``: no symlink followed on either side; a
    symlink at the target is replaced, the directories on the way are made."""
    parents, name = _split(rel)
    src = open_dirs(src_base, parents)
    try:
        dst = open_dirs(dst_base, parents, create=True, replace=True)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(name, dir_fd=dst, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=dst)  # a planted directory where a file goes
            os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _unlink_export(root: int, rel: str) -> None:
    parents, name = _split(rel)
    try:
        dir_fd = open_dirs(root, parents)
    except (FileNotFoundError, NotADirectoryError):
        return  # a symlink on the way: nothing of ours is behind it
    try:
        if unlink_at(dir_fd, name):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply_exports(
    layout: StoreLayout, staged: Path, new: Iterable[str], removed: Iterable[str]
) -> None:
    """Move the staged exports into ``exports/share`` and delete the removed ones, all by
    names relative to directory descriptors: a symlink planted there (by another program
    of the user, or in a race) is replaced or removed, never written or deleted through."""
    new, removed = list(new), list(removed)
    if not new and not removed:
        return
    root = open_exports(layout, create=bool(new))
    if root is None:
        return
    try:
        for rel in new:
            _move_at(staged, root, rel)
        for rel in removed:
            _unlink_export(root, rel)
    finally:
        os.close(root)


def prune_exports(layout: StoreLayout, rels: Iterable[str]) -> None:
    """Remove directories of exports/share that the change left empty."""
    root = open_exports(layout)
    if root is None:
        return
    try:
        for rel in sorted(set(rels), reverse=True):
            remove_empty_dirs_at(root, _split(rel)[0])
        remove_empty_dirs_at(root, ("mime",))
    finally:
        os.close(root)


def _referenced(index: index_mod.Index, rel: str) -> bool:
    return any(v["file"] == rel for app in index["apps"].values() for v in app["versions"])


def remove_tmp(layout: StoreLayout, txid: str | None = None) -> None:
    """Delete the staging area (or one transaction's), never through a symlink: a link
    planted at ``tmp`` is removed itself (rmtree refuses a link and would leave it)."""
    if layout.tmp.is_symlink() or (layout.tmp.exists() and not layout.tmp.is_dir()):
        unlink(layout.tmp)
        return
    shutil.rmtree(layout.tmp / txid if txid else layout.tmp, ignore_errors=True)


def finish(layout: StoreLayout, index: index_mod.Index) -> None:
    """Drop the staging area and the journal; remove the whole store once it is empty."""
    remove_tmp(layout)
    for stray in layout.root.glob(".*.tmp-*"):
        unlink(stray)
    if not index["apps"]:
        # The journal goes last (remove_store unlinks it after the index): a kill in
        # between leaves a journal, and the next command finishes the removal.
        remove_store(layout)
        return
    unlink(layout.journal)
    fsync_dir(layout.root)


def remove_store(layout: StoreLayout) -> None:
    """The last app is gone: leave no trace (images of unknown origin are kept)."""
    shutil.rmtree(layout.exports.parent, ignore_errors=True)
    shutil.rmtree(layout.bin, ignore_errors=True)
    if layout.images.is_dir():
        for entry in layout.images.iterdir():
            with contextlib.suppress(OSError):
                entry.rmdir()
        with contextlib.suppress(OSError):
            layout.images.rmdir()
    parents = created_dirs(layout)
    unlink(layout.index)
    unlink(layout.journal)
    unlink(layout.lock)  # safe while locked: lockers check the inode (lock.py)
    with contextlib.suppress(OSError):
        layout.root.rmdir()
        for directory in parents:  # e.g. ~/.local/share on a fresh HOME
            directory.rmdir()


def needs_recovery(layout: StoreLayout) -> bool:
    return layout.needs_recovery()


def recover(layout: StoreLayout, rerender: Rerender | None = None) -> list[str]:
    """Finish or undo an interrupted change, then make the exports match the index.

    The caller holds the lock. Returns notes for the user (what was repaired).
    """
    notes: list[str] = []
    try:
        record = json.loads(layout.journal.read_bytes())
    except FileNotFoundError:
        record = None
    except ValueError:
        record = None  # unreachable (written atomically), but never fatal
    data = index_mod.read_bytes(layout)
    index = index_mod.empty() if data is None else index_mod.parse_index(data)
    current = index_mod.digest(data if data is not None else index_mod.dumps(index))
    staged: list[Path] = []
    if record:
        committed = record.get("after_sha256") == current
        verb = "finished" if committed else "undid"
        notes.append(f"{verb} an interrupted {record.get('op')} of {record.get('app')}")
        doomed = record.get("obsolete_images" if committed else "added_images") or []
        for rel in doomed if isinstance(doomed, list) else ():
            if index_mod.valid_image_file(rel) and not _referenced(index, rel):
                _remove_image(layout, rel)
        if isinstance(record.get("tx"), str) and _TXID.match(record["tx"]):
            staged.append(layout.tmp / record["tx"] / "share")
        # From here on only reconciling is left, which is idempotent: record that.
        neutral = {"tx": record.get("tx"), "op": "recover", "app": record.get("app"),
                   "after_sha256": "", "added_images": [], "obsolete_images": []}  # fmt: skip
        replace_file(layout.journal, json.dumps(neutral, sort_keys=True).encode())
    index = reconcile(layout, index, staged, rerender, notes)
    caches.refresh(layout.exports)
    finish(layout, index)
    return notes


def reconcile(
    layout: StoreLayout,
    index: index_mod.Index,
    staged: list[Path],
    rerender: Rerender | None,
    notes: list[str],
) -> index_mod.Index:
    """Make exports/share hold exactly the files the index lists, with their digests."""
    expected: dict[str, tuple[str, str]] = {
        rel: (app_id, sha) for app_id, app in index["apps"].items()
        for rel, sha in app["exported"].items()
    }  # fmt: skip
    removed: list[str] = []
    broken: set[str] = set()
    root = open_exports(layout, create=bool(expected))
    try:
        if root is not None:
            removed = _sweep(root, expected)
            for rel, (app_id, sha) in expected.items():
                if sha256_at(root, rel) == sha:
                    continue
                for base in staged:
                    if sha256_at(base, rel) == sha:
                        _move_at(base, root, rel)
                        break
                else:
                    broken.add(app_id)
    finally:
        if root is not None:
            os.close(root)
    for app_id in sorted(broken):
        index = _rerender_app(layout, index, app_id, rerender, notes)
    prune_exports(layout, [*removed, *expected])
    return index


def _sweep(root: int, expected: Mapping[str, object]) -> list[str]:
    """Delete what exports/share holds beyond the index: unlisted files, and every symlink
    or special file (we only ever put directories and regular files there)."""
    removed: list[str] = []
    for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=root):
        for name in [*dirs, *files]:
            rel = os.path.normpath(os.path.join(top, name))
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                continue
            if stat.S_ISREG(mode) and (rel in expected or caches.is_generated(rel)):
                continue
            if unlink_at(dir_fd, name):
                removed.append(rel)
            if name in dirs:
                dirs.remove(name)
    return removed


def _rerender_app(
    layout: StoreLayout, index: index_mod.Index, app_id: str, rerender: Rerender | None,
    notes: list[str],
) -> index_mod.Index:  # fmt: skip
    """Exports of ``app_id`` went missing or changed: render them again from the image."""
    app = index["apps"][app_id]
    files: dict[str, bytes] = {}
    if rerender is not None:
        try:
            files = rerender(app_id, index)
        except Exception as exc:  # a broken image must not block repairing the others
            notes.append(f"could not re-export {app_id}: {exc}")
    root = open_exports(layout, create=True)
    assert root is not None
    try:
        for rel in app["exported"]:
            if rel not in files:
                _unlink_export(root, rel)
        for rel, data in files.items():
            parents, name = _split(rel)
            dir_fd = open_dirs(root, parents, create=True, replace=True)
            try:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                        shutil.rmtree(name, dir_fd=dir_fd)
                replace_file_at(dir_fd, name, data)
            finally:
                os.close(dir_fd)
    finally:
        os.close(root)
    new = {rel: index_mod.digest(data) for rel, data in files.items()}
    if new != app["exported"]:
        index = json.loads(index_mod.dumps(index))
        index["apps"][app_id]["exported"] = new
        replace_file(layout.index, index_mod.dumps(index))
    notes.append(f"re-exported {app_id} ({len(files)} files)")
    return index
