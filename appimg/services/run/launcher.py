"""``appimg run``: resolve, check, mount (or reuse), sandbox, propagate (spec/run.md).

Directories come from the user's :class:`~appimg.host.dirs.UserDirs`; the
caller's environment is only what the app's environment is built from.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from appimg.errors import PathError, UsageError
from appimg.format.image import Image
from appimg.format.payload.paths import resolve
from appimg.host.dirs import UserDirs
from appimg.host.trust import CONSENTED
from appimg.services.run.environment import app_environment, data_dir, socket_binds
from appimg.services.run.sandbox import Bind, Sandbox, bwrap_path, run_bwrap


def resolve_target(target: str, dirs: UserDirs) -> tuple[Path, bool]:
    """An image path, or the active image of an installed app id.

    The flag says whether the user already accepted the image's signature state
    when installing it (``install --trust`` or ``--allow-unsigned``): a launcher
    menu entry must not then be refused for the same reason.
    """
    path = Path(target)
    if "/" in target or path.exists() or target.endswith(".appimg"):
        if not path.exists():
            raise UsageError(f"{target}: no such image file")
        return path, False
    from appimg.services.store import StoreLayout, installed_image
    from appimg.services.store import index as index_mod

    found = installed_image(dirs, target)
    if found is None:
        raise UsageError(f"{target}: neither an image file nor an installed app id")
    app = index_mod.load(StoreLayout.from_dirs(dirs))["apps"][target]
    state = index_mod.active_version(app).get("signature", {}).get("state")
    return found, state in CONSENTED


def program_of(manifest: Mapping[str, Any], command: str | None) -> str:
    if command is None:
        return manifest["entrypoint"]
    commands = manifest.get("commands", {})
    if command not in commands:
        known = ", ".join(sorted(commands)) or "none"
        raise UsageError(f"no command {command!r} in {manifest['id']} (commands: {known})")
    return commands[command]


def check_program(image: Image, program: str) -> None:
    """The program must be an executable file in the image (unless it links out of it)."""
    reader = image.payload
    try:
        inode = resolve(reader, program)
    except PathError:
        try:
            link = resolve(reader, program, follow_last=False)
        except PathError:
            raise UsageError(f"the program {program} is missing from the image") from None
        if link.is_symlink() and reader.readlink(link).startswith("/"):
            return  # may resolve in the merged view (e.g. the host's /usr) at exec time
        raise UsageError(f"the program {program} is a dangling symlink") from None
    if not inode.is_file():
        raise UsageError(f"the program {program} is not a regular file")
    if not inode.mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise UsageError(f"the program {program} is not executable")


def run_app(
    target: str,
    args: Sequence[str],
    dirs: UserDirs,
    caller_env: Mapping[str, str],
    *,
    command: str | None = None,
    strict: bool = False,
    allow_untrusted: bool = False,
    no_host: bool = False,
) -> int:
    """Run the app; return its exit status.

    ``caller_env`` is the environment of the caller, which the app's environment
    passes a few variables of through (LANG, TERM, DISPLAY, ...)."""
    from appimg.host.rules import GRANTED
    from appimg.services.mount.manager import mount_image, release_and_unmount_if_last

    image_path, accepted = resolve_target(target, dirs)
    allow_untrusted = allow_untrusted or accepted
    with Image.open(image_path) as image:
        manifest = image.manifest
        program = program_of(manifest, command)
        check_program(image, program)
    # A reference-counted mount, reused if this user already has one of the image.
    mount = mount_image(image_path, dirs, strict=strict, allow_untrusted=allow_untrusted,
                        no_host=no_host)  # fmt: skip
    try:
        for warning in mount.warnings:
            print(f"appimg run: warning: {warning}", file=sys.stderr)
        data = data_dir(manifest["id"], dirs)
        app_env = app_environment(manifest, caller_env, data)
        granted = [(r["path"], r["at"]) for r in mount.rules if r["status"] == GRANTED]
        binds = socket_binds(granted, caller_env, app_env)
        sandbox = Sandbox(
            root=Path(mount.mountpoint),
            argv=[f"/{program}", *args],
            env=app_env,
            binds=[*binds, Bind(str(data), str(data), writable=True)],
        )
        bwrap = bwrap_path()
        if bwrap:
            status = run_bwrap(sandbox, bwrap)
        else:
            from appimg.services.run.direct import run_direct

            status = run_direct(sandbox)
    finally:
        # The last user unmounts on the way out: nothing is left mounted when
        # `appimg run` returns (and after a SIGKILL, the server notices by itself).
        release_and_unmount_if_last(mount, dirs)
    return status
