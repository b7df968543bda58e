"""``appimg run``: resolve, check, mount (or reuse, or without FUSE extract), sandbox,
propagate (spec/run.md).

Directories come from the user's :class:`~appimg.host.dirs.UserDirs`; the
caller's environment is only what the app's environment is built from. The
image's signatures are judged once, here (:func:`appimg.host.trust.decide`, with
the keys the installed app of its id is pinned to): the verdict chooses its data
directory, and the mount is handed the open image with it rather than opening and
judging it again.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.errors import UsageError
from appimg.format.image import Image
from appimg.format.permissions import Permissions
from appimg.host.dirs import UserDirs
from appimg.host.fs import open_in_root
from appimg.host.trust import CONSENTED, decide
from appimg.services.run.environment import app_environment, data_dir, data_name, socket_binds
from appimg.services.run.sandbox import Bind, Merge, Sandbox, bwrap_path, run_bwrap
from appimg.services.run.sockets import SocketGrants, sandbox_runtime_dir, socket_grants

if TYPE_CHECKING:
    from appimg.host.overrides import Override
    from appimg.services.mount.state import MountInfo
    from appimg.services.run.grants import Grants


def resolve_target(target: str, dirs: UserDirs) -> tuple[Path, bool]:
    """An image path, or the active image of an installed app id.

    ``target`` is a file only if it contains ``/`` or ends in ``.appimg``: menu
    launchers start in ``$HOME``, where a file named like an app id must not run
    instead of the app (so an installed id ending in ``.appimg`` wins over a
    file of that name written without ``/``). The flag says whether the image
    is the installed one.
    """
    from appimg.services.mount.manager import is_path_argument
    from appimg.services.store import installed_image

    path = Path(target)
    if "/" not in target:
        # An installed id comes first, even one ending in ".appimg" (org.example.appimg).
        found = installed_image(dirs, target)
        if found is not None:
            return found, True
    if not is_path_argument(target):
        hint = f" (for the file here, write ./{target})" if path.exists() else ""
        raise UsageError(f"{target}: neither an image file nor an installed app id{hint}")
    if not path.exists():
        raise UsageError(f"{target}: no such image file")
    return path, False


def program_of(manifest: Mapping[str, Any], command: str | None) -> str:
    if command is None:
        return manifest["entrypoint"]
    commands = manifest.get("commands", {})
    if command not in commands:
        known = ", ".join(sorted(commands)) or "none"
        raise UsageError(f"no command {command!r} in {manifest['id']} (commands: {known})")
    return commands[command]


def check_program(root: str, program: str) -> None:
    """The program must be an executable file in the app's view, resolved as the sandbox
    will resolve it (symlinks, absolute ones too, stay in the view). Looked up through
    the mount, whose entries the kernel caches: a warm launch reads no payload."""
    try:
        fd = open_in_root(root, program, os.O_PATH)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"the program {program} is a symlink loop") from None
        try:
            link = open_in_root(root, program, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            raise UsageError(f"the program {program} is missing from the image") from None
        if link is not None:
            os.close(link)
        raise UsageError(f"the program {program} is a dangling symlink") from None
    if fd is None:
        return  # no openat2 here: exec in the sandbox reports a bad program
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        raise UsageError(f"the program {program} is not a regular file")
    if not mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise UsageError(f"the program {program} is not executable")


def _with_sockets(sandbox: Sandbox, permissions: Permissions, dirs: UserDirs,
                  caller_env: Mapping[str, str], app_id: str,
                  bwrap: str | None) -> SocketGrants:  # fmt: skip
    """Give ``sandbox`` its runtime directory, the granted sockets (spec/run.md,
    "Sockets"), its D-Bus and /.flatpak-info ("D-Bus", "Portals"); what cannot be
    granted is a warning. Close the result after the run (it stops the bus proxy)."""
    from appimg.services.run.dbus import bus_grants

    runtime = sandbox_runtime_dir(os.getuid())
    grants = socket_grants(permissions, dirs, caller_env, runtime)
    try:
        bus_grants(grants, permissions, app_id, dirs, caller_env, runtime,
                   app_path=str(sandbox.root), bwrap=bwrap)  # fmt: skip
    except BaseException:
        grants.close()
        raise
    for note in grants.notes:
        print(f"appimg run: warning: {note}", file=sys.stderr)
    sandbox.runtime = runtime
    sandbox.binds += grants.binds
    # Like the rest of the environment, the manifest's env may override these.
    sandbox.env = {"XDG_RUNTIME_DIR": runtime, **grants.env, **sandbox.env}
    return grants


def sandbox_grants(
    permissions: Permissions,
    dirs: UserDirs,
    rule_binds: Sequence[tuple[str, str, bool, tuple[str, ...]]],
) -> Grants:
    """What the permissions and the host rules' direct binds open (see
    :mod:`appimg.services.run.grants`); the host whitelist is read only when a host
    path is to be bound."""
    from appimg.services.run.grants import build

    deny: tuple[str, ...] = ()
    if permissions.filesystems or rule_binds:
        from appimg.host.whitelist import load_policy

        deny = tuple(entry.path for entry in load_policy(dirs).deny)
    return build(permissions, dirs, deny, rule_binds)


def is_installed_app(image: Image, dirs: UserDirs, by_id: bool) -> bool:
    """Is ``image`` the installed app of its id: run by its id, or validly signed by a
    key the installed app is pinned to (spec/run.md, "The data directory")? Only
    then do the user's data directory and stored permission override apply."""
    from appimg.services.store import installed_state

    if by_id:
        return True
    pinned, _ = installed_state(dirs, image.manifest["id"])
    if not pinned:
        return False
    verdict = decide(image, dirs, allow_unsigned=True, allow_untrusted=True, pinned=pinned,
                     remember=True)  # fmt: skip
    return bool(verdict.pinned)


def merged_rules(mount: MountInfo) -> list[Merge]:
    """The granted host rules the sandbox merges into its root itself: those of a run
    from the extraction cache (no mount serves the view) that it does not bind directly
    anyway (sockets, paths under /tmp); outermost ``at`` first."""
    from appimg.host.rules import GRANTED
    from appimg.services.mount.extracted import BACKEND, needs_view

    if mount.backend != BACKEND:
        return []
    rules = [Merge(r["path"], r["at"], r["mode"], tuple(r.get("hidden", ())))
             for r in mount.rules
             if r["status"] == GRANTED and needs_view(r["path"], r["at"])]  # fmt: skip
    return sorted(rules, key=lambda r: (r.at.count("/"), r.at))


def run_app(
    target: str,
    args: Sequence[str],
    dirs: UserDirs,
    caller_env: Mapping[str, str],
    *,
    command: str | None = None,
    strict: bool = False,
    allow_untrusted: bool = False,
    allow_unsigned: bool = False,
    no_host: bool = False,
    override: Override | None = None,
    no_fuse: bool = False,
) -> int:
    """Run the app; return its exit status.

    ``caller_env`` is the environment of the caller, which the app's environment
    passes a few variables of through (LANG, TERM, DISPLAY, ...). ``override``
    changes the app's permissions for this run (``appimg run --device=...``); ``no_fuse``
    runs it from its verified extraction cache even where FUSE works."""
    from appimg.host.overrides import Override
    from appimg.host.rules import GRANTED
    from appimg.services.mount.extracted import run_root
    from appimg.services.mount.manager import grace_period, release
    from appimg.services.permissions import effective
    from appimg.services.store import installed_state

    image_path, by_id = resolve_target(target, dirs)
    with Image.open(image_path) as image:
        manifest = image.manifest
        pinned, state = installed_state(dirs, manifest["id"])
        if by_id and state in CONSENTED:
            # Run by its id, the app runs as its installation accepted it.
            allow_untrusted = allow_unsigned = True
        verdict = decide(image, dirs, allow_unsigned=allow_unsigned,
                         allow_untrusted=allow_untrusted, pinned=pinned or (),
                         remember=True)  # fmt: skip
        # ~/.var/appimg/ID and the user's stored permission override are the installed
        # app's: by id, or signed by a key it is pinned to. Another image claiming the
        # id gets a data directory of its own, its manifest's permissions and this
        # run's flags only.
        installed = by_id or (bool(pinned) and bool(verdict.pinned))
        name = data_name(manifest["id"], verdict, image.verity.root_hash.hex(),
                         installed=installed)  # fmt: skip
        program = program_of(manifest, command)
        allowed = effective(manifest, dirs, override, stored=None if installed else Override())
        # A reference-counted mount, reused if this user already has one of the image; or,
        # without FUSE (or with no_fuse), the image's verified extraction cache. It is
        # handed the open image and the verdict (same allowances, same pinned keys).
        mount = run_root(image_path, dirs, no_fuse=no_fuse, strict=strict,
                         allow_untrusted=allow_untrusted, allow_unsigned=allow_unsigned,
                         pinned=pinned or (), no_host=no_host,
                         grace=grace_period(caller_env),
                         opened=(image, verdict))  # fmt: skip
    try:
        check_program(mount.mountpoint, program)
        for warning in mount.warnings:
            print(f"appimg run: warning: {warning}", file=sys.stderr)
        for category, entry, why in allowed.refused:
            print(f"appimg run: warning: {category} {entry} not granted: {why}", file=sys.stderr)
        data = data_dir(name, dirs)
        app_env = app_environment(manifest, caller_env, data)
        granted = [(r["path"], r["at"], tuple(r.get("hidden", ())))
                   for r in mount.rules if r["status"] == GRANTED]  # fmt: skip
        rule_binds = socket_binds(granted)
        merge = merged_rules(mount)
        with sandbox_grants(allowed.permissions, dirs, rule_binds) as grants:
            for warning in grants.warnings:
                print(f"appimg run: warning: {warning}", file=sys.stderr)
            app_env.update(grants.env)
            sandbox = Sandbox(
                root=Path(mount.mountpoint),
                argv=[f"/{program}", *args],
                env=app_env,
                binds=[*grants.binds, Bind(str(data), str(data), writable=True)],
                hides=grants.hides,
                links=grants.links,
                share_network=grants.share_network,
                share_ipc=grants.share_ipc,
                host_dev=grants.host_dev,
                merge=merge,
            )
            # bubblewrap (0.8) cannot mount overlayfs: a root with host rules merged
            # into it is built by the direct backend.
            bwrap = None if merge else bwrap_path()
            with _with_sockets(sandbox, allowed.permissions, dirs, caller_env, manifest["id"],
                               bwrap):  # fmt: skip
                if bwrap:
                    status = run_bwrap(sandbox, bwrap, dirs.cache_home / "appimg" / "seccomp")
                else:
                    from appimg.services.run.direct import run_direct

                    if merge:
                        why = "host rules are merged without FUSE (bubblewrap cannot)"
                    elif os.environ.get("APPIMG_NO_BWRAP"):
                        why = "APPIMG_NO_BWRAP is set"
                    else:
                        why = "bubblewrap (bwrap) is not installed"
                    print(f"appimg run: note: {why}: the sandbox is made with the kernel "
                          "calls directly", file=sys.stderr)  # fmt: skip
                    status = run_direct(sandbox)
    finally:
        # The mount's server notices the last reference gone (it polls every 50 ms) and
        # unmounts, or keeps the mount for its grace period; the same after a SIGKILL.
        # Not waited for here: fusermount3 -u cost each launch ~10 ms on the way out.
        release(mount)
    return status
