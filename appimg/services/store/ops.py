"""Install, update, roll back and uninstall (spec/xdg-index.md §Operations, §Trust policy).

Each operation takes the store lock, finishes or undoes any interrupted
change first (:func:`.transaction.recover`), computes the new index and the
new export files, and hands them to a :class:`.transaction.Transaction`.
Installing reads only what the O(1) checks, the hash tree and the exported
files need: the image is copied in the kernel and its payload blocks are
verified later, when they are read. Signatures are judged by the one trust
rule, :func:`appimg.host.trust.decide`, on the source and again on the copy;
an update must also be signed by a key the app is pinned to and raise its
version (:mod:`appimg.format.version`, spec/xdg-index.md §4.1), and ask for no
permission the installed version lacks unless accepted (spec/permissions.md §4).

Search providers (spec/xdg-index.md §3.7) are rendered with the other exports but
exported only if the user's override enables them (:func:`_search_choice`), at
install, update and rollback, and at once when the choice changes
(:func:`apply_search_provider`).

The operations take the user's :class:`~appimg.host.dirs.UserDirs` and, since
rendering an export (also during recovery) names the ``appimg`` launcher, the
caller's ``PATH`` as ``program_path``; they read nothing from the environment.
After every change, the extraction caches of images no version refers to any
more are removed (:func:`.extracted_cache.prune`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.atomic import replace_file
from appimg.errors import (
    FormatError,
    IntegrityError,
    PolicyError,
    SignatureError,
    StoreError,
    UsageError,
)
from appimg.host.dirs import UserDirs
from appimg.services.store import index as index_mod
from appimg.services.store import installed_state
from appimg.services.store.layout import StoreLayout
from appimg.services.store.lock import StoreLock
from appimg.services.store.transaction import (
    StepHook,
    Transaction,
    needs_recovery,
    recover,
    remove_store,
)

if TYPE_CHECKING:
    from appimg.format.image import Image
    from appimg.services.exports.plan import Context, ExportPlan

# The image reader and the export rules (construct, cryptography, the decompressors) are
# imported by the operations that open images, so that `uninstall` and recovery start fast.


@dataclass
class Outcome:
    """What an operation did, for the command line to report."""

    op: str
    app_id: str
    version: str = ""
    file: str = ""
    signature: dict[str, Any] = field(default_factory=dict)
    exported: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: install and update: what the app will get (``Effective.to_json()``)
    permissions: dict[str, Any] | None = None
    #: install, update, rollback: the MIME types its exports declare (``opens``: the
    #: desktop entries' MimeType) and define (``defines``: its MIME packages)
    mime: dict[str, list[str]] | None = None
    #: install, update, rollback: "on" or "off" if the app ships a search provider
    search_provider: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("permissions", "mime", "search_provider"):
            if out[key] is None:
                del out[key]
        return out


def version_key(version: str, root_hash: str) -> str:
    """A file-name-safe, unique name for one installed version."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", version)[:64].lstrip(".") or "v"
    return f"{safe}-{root_hash[:12]}"


# --- the launcher the exported Exec lines name ----------------------------------------------


def launcher_path(layout: StoreLayout, program_path: str) -> str:
    """An absolute path to an ``appimg`` program that runs this installation.

    GLib drops a desktop entry whose Exec program it cannot find, so the path
    must resolve: the console script beside this interpreter, else ``appimg``
    on ``program_path`` (the caller's PATH), else a small script written into
    the store.
    """
    beside = Path(sys.executable).parent / "appimg"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("appimg", path=program_path or os.defpath)
    if found:
        return os.path.abspath(found)
    import appimg

    package_parent = str(Path(appimg.__file__).resolve().parent.parent)
    paths = [package_parent] + [p for p in sys.path if p and os.path.isdir(p)]
    script = (
        "#!/bin/sh\n"
        "# Written by appimg install: starts appimg as the interpreter that installed it.\n"
        f"PYTHONPATH={shlex.quote(':'.join(dict.fromkeys(paths)))}"
        '${PYTHONPATH:+:"$PYTHONPATH"} '
        f'exec {shlex.quote(sys.executable)} -m appimg "$@"\n'
    )
    target = layout.bin / "appimg"
    if not target.exists() or target.read_text() != script:
        layout.bin.mkdir(parents=True, exist_ok=True)
        replace_file(target, script.encode(), 0o755)
    return str(target)


# --- rendering ---------------------------------------------------------------------------


def _other_mime(layout: StoreLayout, index: index_mod.Index,
                app_id: str) -> tuple[dict[str, str], dict[str, str]]:  # fmt: skip
    """Types and globs (lowercased) the other apps' exported MIME packages define -> app."""
    from appimg.services.exports import Refused
    from appimg.services.exports.mime import definitions
    from appimg.services.exports.plan import KIND_RULES

    types: dict[str, str] = {}
    globs: dict[str, str] = {}
    cap = KIND_RULES["mime"][0][2]
    for rel, other in sorted(index_mod.exported_by(index).items()):
        if other == app_id or not rel.startswith("mime/packages/"):
            continue
        try:
            fd = os.open(layout.exports / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                found = definitions(handle.read(cap))
        except (OSError, Refused):
            continue  # recovery renders it again; its types are the host's business then
        types.update(dict.fromkeys(found.types, other))
        globs.update({pattern.lower(): other for _t, pattern, _w in found.globs})
    return types, globs


def _context(layout: StoreLayout, dirs: UserDirs, index: index_mod.Index, app_id: str,
             version: dict[str, Any], launcher: str) -> Context:  # fmt: skip
    from appimg.host.mime_db import host_mime
    from appimg.services.exports.plan import Context, outranks

    # What another app exports is taken, unless this app's id claims the name better
    # (it is then withdrawn from the other app in the same transaction: _withdraw).
    taken = {
        rel: other
        for rel, other in index_mod.exported_by(index).items()
        if other != app_id and not outranks(app_id, other, rel.rsplit("/", 1)[-1])
    }
    # The exports directory's own MIME database is the apps': not the host's.
    host = host_mime(dirs, exclude=layout.exports)
    other_types, other_globs = _other_mime(layout, index, app_id)
    return Context(
        app_id=app_id,
        version=version["version"],
        launcher=launcher,
        image_path=str(layout.image_file(version["file"])),
        taken=taken,
        other_ids=set(index["apps"]) - {app_id},
        host_types=host.types,
        host_globs=host.globs,
        host_xml_roots=host.xml_roots,
        other_types=other_types,
        other_globs=other_globs,
    )


def _render(image: Image, layout: StoreLayout, dirs: UserDirs, index: index_mod.Index,
            version: dict[str, Any], program_path: str) -> ExportPlan:  # fmt: skip
    from appimg.services.exports.plan import plan_exports

    launcher = launcher_path(layout, program_path)
    ctx = _context(layout, dirs, index, image.manifest["id"], version, launcher)
    return plan_exports(image.payload, image.manifest, ctx)


def _open_installed(layout: StoreLayout, version: dict[str, Any]) -> Image:
    from appimg.format.image import Image

    image = Image.open(layout.image_file(version["file"]))
    try:
        if image.verity.root_hash.hex() != version["root_hash"]:
            raise IntegrityError(f"{image.path}: not the image that was installed")
        image.check_tree()
    except BaseException:
        image.close()
        raise
    return image


def rerenderer(layout: StoreLayout, dirs: UserDirs, program_path: str) -> Any:
    """For recovery: render an app's exports again from its active image."""

    def rerender(app_id: str, index: index_mod.Index) -> dict[str, bytes]:
        version = index_mod.active_version(index["apps"][app_id])
        with _open_installed(layout, version) as image:
            plan = _render(image, layout, dirs, index, version, program_path)
        exported = set(index["apps"][app_id]["exported"])
        rendered = {**plan.files, **plan.search_providers}  # the latter if the user enabled them
        return {rel: data for rel, data in rendered.items() if rel in exported}

    return rerender


# --- locking -------------------------------------------------------------------------------


def _no_step(_name: str) -> None:
    pass


@contextlib.contextmanager
def locked(
    dirs: UserDirs, *, program_path: str = "", step: StepHook | None = None
) -> Iterator[tuple[StoreLayout, StepHook, list[str]]]:
    """Hold the store lock, with any interrupted change finished or undone first.

    ``step`` is called after each step of a change (a test hook, see
    :func:`.transaction.step_hook`)."""
    layout = StoreLayout.from_dirs(dirs)
    with StoreLock(layout):
        rerender = rerenderer(layout, dirs, program_path)
        notes = recover(layout, rerender) if needs_recovery(layout) else []
        try:
            yield layout, step or _no_step, notes
        finally:
            # A command that failed on a store it created must not leave the store behind.
            with contextlib.suppress(StoreError):
                if not layout.journal.exists() and not index_mod.load(layout)["apps"]:
                    remove_store(layout)
            _prune_caches(dirs, layout)


def _prune_caches(dirs: UserDirs, layout: StoreLayout) -> None:
    """Remove what is cached about images no installed version is any more (an
    uninstalled app's, an update's or cleanup's old versions): their extraction caches
    (spec/run.md, "Without FUSE") and remembered signature checks (format.md §12.2)."""
    from appimg.host.trust import checked_dir, forget_checked
    from appimg.services.store.extracted_cache import cache_root, prune

    if not cache_root(dirs).exists() and not checked_dir(dirs).exists():
        return
    try:
        apps = index_mod.load(layout)["apps"]
    except StoreError:
        return  # keep every copy until the index can be read again
    keep = {v["root_hash"] for app in apps.values() for v in app["versions"]}
    with contextlib.suppress(OSError):
        prune(dirs, keep)
    forget_checked(dirs, keep)


def maybe_recover(dirs: UserDirs, *, program_path: str = "") -> list[str]:
    """For read-only commands: repair an interrupted change if no other command is running."""
    layout = StoreLayout.from_dirs(dirs)
    if not needs_recovery(layout) and not layout.is_abandoned():
        return []
    lock = StoreLock(layout, blocking=False)
    if not lock.acquire():
        return []  # a change is in progress; what we read is still a committed state
    try:
        if needs_recovery(layout):
            return recover(layout, rerenderer(layout, dirs, program_path))
        if layout.is_abandoned():
            remove_store(layout)  # nothing was ever committed: leave no trace
        return []
    finally:
        lock.release()


# --- operations ------------------------------------------------------------------------------


@dataclass
class Remote:
    """An image that is downloaded into the store's staging area rather than copied
    from a file: an OCI registry's (spec/distribution.md §5). ``download`` writes the
    new file it is given, complete and checked against ``digest``, or raises and
    leaves nothing; ``origin`` is recorded as the app's (spec/xdg-index.md §2)."""

    name: str
    digest: str
    origin: dict[str, Any]
    download: Callable[[Path], None]


def install(
    dirs: UserDirs,
    source: Path | Remote,
    *,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
    update: bool = False,
    allow_downgrade: bool = False,
    accept_permissions: bool = False,
    strict: bool = False,
    program_path: str = "",
    step: StepHook | None = None,
) -> Outcome:
    """Install (or, with ``update``, add as the new active version) the image ``source``.

    An update must be signed by a key the app is pinned to and raise its version
    (:func:`check_version`; ``allow_downgrade`` lets it lower it), and ask for no
    permission the installed version does not have (:func:`check_permissions`;
    ``accept_permissions`` allows more). With ``strict``, a refused export fails
    the whole operation. A :class:`Remote` source is downloaded while the lock is
    held, into the transaction's staging area, and judged there."""
    from appimg.format.image import Image
    from appimg.host.trust import decide
    from appimg.services.exports.plan import scan_xdg_files

    op = "update" if update else "install"
    remote = source if isinstance(source, Remote) else None

    def check_signatures(image: Image, pinned: list[str]) -> dict[str, Any]:
        """The trust rule, as install and update apply it (spec/xdg-index.md §4)."""
        verdict = decide(image, dirs, allow_unsigned=allow_unsigned,
                         allow_untrusted=allow_untrusted, pinned=pinned,
                         replacing=update)  # fmt: skip
        return verdict.to_json()

    def early_checks(image: Image, pinned: list[str] | None) -> None:
        """Refuse before copying anything (or, downloaded, before judging it further)."""
        if pinned is None:
            raise UsageError(f"{image.manifest['id']} is not installed (use appimg install)")
        check_signatures(image, pinned)
        check_bus_names(dirs, image.manifest["id"])

    if remote is None:
        source = Path(os.path.abspath(source))  # type: ignore[arg-type]
        with Image.open(source) as image:
            manifest = image.manifest
            app_id = manifest["id"]
            root_hash = image.verity.root_hash.hex()
            early_checks(image, installed_state(dirs, app_id)[0] if update else [])
    with locked(dirs, program_path=program_path, step=step) as (layout, step, notes):
        index = index_mod.load(layout)
        tx = Transaction(layout, op, "", step, rerenderer(layout, dirs, program_path))
        with tx:
            if remote is not None:
                source = tx.staging / "image.appimg"
                remote.download(source)
                step("image-downloaded")
                with _named(source, remote.name), Image.open(source) as image:
                    manifest = image.manifest
                    app_id = manifest["id"]
                    root_hash = image.verity.root_hash.hex()
                    installed = index["apps"].get(app_id)
                    pinned = installed.get("pinned_keys", []) if installed else None
                    early_checks(image, pinned if update else [])
            tx.app_id = app_id
            existing = index["apps"].get(app_id)
            key = version_key(manifest["version"], root_hash)
            if update and existing is None:
                raise UsageError(f"{app_id} is not installed (use appimg install)")
            if not update and existing is not None:
                active = index_mod.active_version(existing)["version"]
                raise UsageError(f"{app_id} {active} is already installed (use appimg update)")
            if existing and any(v["key"] == key for v in existing["versions"]):
                raise UsageError(f"{app_id} {manifest['version']} is already installed")
            if existing:
                active = index_mod.active_version(existing)
                check_version(app_id, manifest["version"], active,
                              allow_downgrade=allow_downgrade)  # fmt: skip
                if not accept_permissions:
                    check_permissions(layout, manifest, active)
            pinned = existing.get("pinned_keys", []) if existing else []
            rel = f"images/{app_id}/{key}.appimg"
            staged = tx.staging / "image.appimg" if remote else tx.stage_image(source)
            with Image.open(staged) as image:
                # The copy is what will run: check it, not the source, which may change.
                image.check_tree()
                if image.verity.root_hash.hex() != root_hash or image.manifest != manifest:
                    raise IntegrityError(f"{source} changed while it was being installed")
                signature = check_signatures(image, pinned)
                xdg_files, truncated = scan_xdg_files(image.payload)
                version = {
                    "key": key,
                    "version": manifest["version"],
                    "file": rel,
                    "root_hash": root_hash,
                    "size": image.layout.file_size,
                    "installed": int(time.time()),
                    "signature": signature,
                    "xdg_files": xdg_files,
                    "xdg_truncated": truncated,
                }
                if remote is not None:
                    version["digest"] = remote.digest
                plan = _render(image, layout, dirs, index, version, program_path)
            notes += plan.notes
            search = _search_choice(plan, dirs, app_id, notes)
            if strict and plan.refused:
                first = plan.refused[0]
                raise PolicyError(f"{len(plan.refused)} export(s) refused, first "
                                  f"{first['path']}: {first['reason']}")  # fmt: skip
            new_index = _copy(index)
            # The new version becomes the active one; the oldest beyond KEPT_VERSIONS go.
            older = existing["versions"] if existing else []
            keep = index_mod.KEPT_VERSIONS - 1
            kept = [version, *older[:keep]]
            new_index["apps"][app_id] = {
                "id": app_id,
                "name": manifest["name"],
                "active": key,
                "versions": kept,
                "exported": {r: index_mod.digest(d) for r, d in sorted(plan.files.items())},
                "refused": plan.refused,
                "pinned_keys": signature["key_ids"],
            }
            # Where updates come from: the registry installed from, kept across updates
            # from files (spec/xdg-index.md §2, spec/distribution.md §5).
            origin = remote.origin if remote else (existing or {}).get("origin")
            if origin:
                new_index["apps"][app_id]["origin"] = origin
            obsolete = [v["file"] for v in older[keep:]]
            withdrawn = _withdraw(new_index, app_id, notes)
            tx.commit(
                new_index,
                new_files=plan.files,
                old_exported=[*(existing["exported"] if existing else ()), *withdrawn],
                staged_image=staged,
                added_image=rel,
                obsolete_images=obsolete,
            )
        from appimg.services.permissions import effective

        try:
            granted = effective(manifest, dirs).to_json()
        except PolicyError as exc:  # installed all the same; a run will refuse to start
            granted = None
            notes.append(f"cannot tell the permissions it will get: {exc}")
        return Outcome(op, app_id, manifest["version"], str(layout.image_file(rel)), signature,
                       sorted(plan.files), plan.refused, notes, granted,
                       plan.mime_json(), search)  # fmt: skip


def uninstall(
    dirs: UserDirs, app_id: str, *, program_path: str = "", step: StepHook | None = None
) -> Outcome:
    with locked(dirs, program_path=program_path, step=step) as (layout, step, notes):
        index = index_mod.load(layout)
        app = index["apps"].get(app_id)
        if app is None:
            raise UsageError(f"{app_id} is not installed")
        new_index = _copy(index)
        del new_index["apps"][app_id]
        with Transaction(layout, "uninstall", app_id, step) as tx:
            tx.commit(
                new_index,
                new_files={},
                old_exported=app["exported"],
                obsolete_images=[v["file"] for v in app["versions"]],
            )
        version = index_mod.active_version(app)["version"]
        return Outcome("uninstall", app_id, version, exported=sorted(app["exported"]), notes=notes)


def rollback(
    dirs: UserDirs, app_id: str, *, program_path: str = "", step: StepHook | None = None
) -> Outcome:
    """Make the previous version active again (and the current one the previous)."""
    with locked(dirs, program_path=program_path, step=step) as (layout, step, notes):
        index = index_mod.load(layout)
        app = index["apps"].get(app_id)
        if app is None:
            raise UsageError(f"{app_id} is not installed")
        if len(app["versions"]) < 2:
            raise UsageError(f"{app_id} has no previous version to roll back to")
        current, previous = app["versions"][0], app["versions"][1]
        with Transaction(layout, "rollback", app_id, step,
                         rerenderer(layout, dirs, program_path)) as tx:  # fmt: skip
            with _open_installed(layout, previous) as image:
                plan = _render(image, layout, dirs, index, previous, program_path)
            search = _search_choice(plan, dirs, app_id, notes)
            new_index = _copy(index)
            entry = new_index["apps"][app_id]
            entry["versions"] = [previous, current]
            entry["active"] = previous["key"]
            entry["exported"] = {r: index_mod.digest(d) for r, d in sorted(plan.files.items())}
            entry["refused"] = plan.refused
            notes += plan.notes
            entry["pinned_keys"] = previous["signature"]["key_ids"]
            withdrawn = _withdraw(new_index, app_id, notes)
            tx.commit(new_index, new_files=plan.files,
                      old_exported=[*app["exported"], *withdrawn])  # fmt: skip
        return Outcome("rollback", app_id, previous["version"],
                       str(layout.image_file(previous["file"])), previous["signature"],
                       sorted(plan.files), plan.refused, notes,
                       mime=plan.mime_json(), search_provider=search)  # fmt: skip


@dataclass
class SearchProviderChange:
    """What :func:`apply_search_provider` did."""

    app_id: str
    #: "on" or "off" as applied; None if the app is not installed or ships no search provider
    state: str | None
    exported: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def apply_search_provider(
    dirs: UserDirs, app_id: str, *, program_path: str = "", step: StepHook | None = None
) -> SearchProviderChange:
    """Export or withdraw the search providers of the installed ``app_id`` as the user's
    stored choice now says (``appimg override --search-provider``), in one transaction;
    its other exports are left as they are."""
    from appimg.services.exports.plan import SEARCH_PROVIDER_DIRS

    with locked(dirs, program_path=program_path, step=step) as (layout, step, notes):
        index = index_mod.load(layout)
        app = index["apps"].get(app_id)
        if app is None:
            return SearchProviderChange(app_id, None, notes=notes)
        version = index_mod.active_version(app)
        with _open_installed(layout, version) as image:
            plan = _render(image, layout, dirs, index, version, program_path)
        state = _search_choice(plan, dirs, app_id, notes)
        wanted = {rel: plan.files[rel] for rel in plan.search_providers if rel in plan.files}
        current = sorted(rel for rel in app["exported"] if rel.startswith(SEARCH_PROVIDER_DIRS))
        digests = {rel: index_mod.digest(data) for rel, data in wanted.items()}
        change = SearchProviderChange(app_id, state, sorted(set(wanted) - set(current)),
                                      sorted(set(current) - set(wanted)), notes)  # fmt: skip
        if digests == {rel: app["exported"][rel] for rel in current}:
            return change  # nothing to do (and no transaction left half begun)
        new_index = _copy(index)
        entry = new_index["apps"][app_id]
        for rel in current:
            del entry["exported"][rel]
        entry["exported"].update(digests)
        with Transaction(layout, "search-provider", app_id, step,
                         rerenderer(layout, dirs, program_path)) as tx:  # fmt: skip
            tx.commit(new_index, new_files=wanted, old_exported=current)
        return change


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _named(path: Path, name: str) -> Iterator[None]:
    """Errors about a downloaded file name where it came from, not the staging file."""
    try:
        yield
    except (UsageError, FormatError, IntegrityError, SignatureError, PolicyError) as exc:
        raise type(exc)(str(exc).replace(str(path), name)) from None


def _search_choice(plan: ExportPlan, dirs: UserDirs, app_id: str,
                   notes: list[str]) -> str | None:  # fmt: skip
    """Add the search providers ``plan`` holds back to its files if the user enabled them
    (spec/xdg-index.md §3.7: they see every query typed). "on" or "off"; None if none."""
    from appimg.host.overrides import search_provider_on

    if not plan.search_providers:
        return None
    try:
        on = search_provider_on(dirs, app_id)
    except PolicyError as exc:  # the override is malformed: the safe side
        notes.append(f"search provider left off: {exc}")
        on = False
    if on:
        plan.files.update(plan.search_providers)
    return "on" if on else "off"


def check_bus_names(dirs: UserDirs, app_id: str) -> None:
    """The app id must not be, contain or lie below a D-Bus name the host provides
    (spec/xdg-index.md §3.3): its exported services would be found first and started
    in the host service's place."""
    from appimg.host.bus_names import conflict, host_bus_names

    exports = StoreLayout.from_dirs(dirs).exports
    clash = conflict(app_id, host_bus_names(dirs, exclude=exports))
    if clash:
        name, source = clash
        where = "a name reserved for the host" if source == "reserved" else f"provided by {source}"
        raise PolicyError(f"{app_id}: refused: the app id collides with the host's D-Bus "
                          f"name {name} ({where})")  # fmt: skip


def check_version(app_id: str, new: str, active: dict[str, Any], *,
                  allow_downgrade: bool) -> None:  # fmt: skip
    """An update raises the version (spec/xdg-index.md §4.1): the same version with
    other bytes is always refused, an older one unless ``allow_downgrade``."""
    from appimg.format.version import compare

    order = compare(new, active["version"])
    if order == 0:
        raise PolicyError(f"{app_id} {active['version']} is installed and this image has "
                          f"the same version ({new}) but other contents: refused "
                          f"(an update must raise the version)")  # fmt: skip
    if order < 0 and not allow_downgrade:
        raise PolicyError(f"{app_id}: refused: version {new} is older than the installed "
                          f"{active['version']} (pass --allow-downgrade to go back)")  # fmt: skip


def check_permissions(layout: StoreLayout, manifest: dict[str, Any],
                      active: dict[str, Any]) -> None:  # fmt: skip
    """An update asks for no permission beyond the installed version's manifest
    (spec/permissions.md §4); narrowing or equal passes."""
    from appimg.format.image import Image
    from appimg.format.permissions import of_manifest

    with Image.open(layout.image_file(active["file"])) as installed:
        if installed.verity.root_hash.hex() != active["root_hash"]:
            raise IntegrityError(f"{installed.path}: not the image that was installed")
        before = of_manifest(installed.manifest)
    new = before.widened_by(of_manifest(manifest))
    if new:
        raise PolicyError(f"{manifest['id']} {manifest['version']} asks for more than "
                          f"{active['version']}: {', '.join(new)}; run again with "
                          f"--accept-permissions to allow it")  # fmt: skip


def _withdraw(new_index: index_mod.Index, app_id: str, notes: list[str]) -> list[str]:
    """Take from the other apps the exports whose names belong to ``app_id`` (its id is a
    longer prefix of them: spec/xdg-index.md §3 rule 2); they become refusals of those
    apps. Returns the paths withdrawn, which the transaction deletes unless ``app_id``
    exports them itself."""
    from appimg.services.exports.plan import outranks

    withdrawn = []
    for other, entry in sorted(new_index["apps"].items()):
        if other == app_id:
            continue
        for rel in sorted(entry["exported"]):
            if outranks(app_id, other, rel.rsplit("/", 1)[-1]):
                del entry["exported"][rel]
                reason = f"the name belongs to the installed app {app_id}"
                entry.setdefault("refused", []).append({"path": f"share/{rel}", "reason": reason})
                notes.append(f"withdrew {rel} from {other}: {reason}")
                withdrawn.append(rel)
    return withdrawn


def _copy(index: index_mod.Index) -> index_mod.Index:
    return json.loads(index_mod.dumps(index))
