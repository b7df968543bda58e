"""Commands that mount images: mount, umount, mounts (spec/overlay-rules.md §7-§9;
declared in :mod:`appimg.cli.commands`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appimg.cli import options
from appimg.cli.output import print_json, shell_quote_name
from appimg.errors import UsageError
from appimg.host.dirs import UserDirs

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands


def add_mount(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Mount FILE read-only at MOUNTPOINT (default: a directory under "
        "$XDG_RUNTIME_DIR/appimg/) and print the mount point once it is ready. The app's "
        "files are merged with the host paths its manifest and profile ask for and the "
        "host's host-paths.d policy allows (spec/overlay-rules.md); refused requests are "
        "reported. Every block read is checked against the image's verity tree. A "
        "signature by a trusted key, or by a key the installed app of the same id is pinned "
        "to, mounts; an unsigned image is refused unless --allow-unsigned, an image signed "
        "by no such key unless --allow-untrusted. The mount stays "
        "until 'appimg umount'.",
    )
    options.image_file(p)
    p.add_argument("mountpoint", nargs="?", type=Path, metavar="MOUNTPOINT")
    options.NO_HOST.add_to(p)
    options.STRICT.add_to(p)
    p.add_argument("--backend", choices=("auto", "fuse", "kernel"), default="auto",
                   help="fuse (any user), kernel (root: loop, dm-verity, squashfs, overlayfs) "
                   "or auto (kernel only for root with dm-verity and a view overlayfs can "
                   "show exactly; default)")  # fmt: skip
    p.add_argument("--foreground", action="store_true",
                   help="serve in this process until unmounted or interrupted (FUSE)")  # fmt: skip
    options.ALLOW_UNTRUSTED.add_to(p)
    options.ALLOW_UNSIGNED.add_to(p)
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_mount)


def add_umount(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Unmount the mount named by TARGET: a mount point, an image file "
        "(every mount of it), a mount name or an app id (see 'appimg mounts'). A mount "
        "in use is refused with a message; --lazy detaches it at once and lets it go "
        "when the last program using it is done.",
    )
    p.add_argument("target", metavar="MOUNTPOINT|FILE|ID")
    p.add_argument("-l", "--lazy", action="store_true", help="detach now, clean up when idle")
    p.set_defaults(func=cmd_umount)


def add_mounts(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="List this user's mounted images: name, backend, status, references "
        "and mount point (--json: everything, including the host rules and how blocks are "
        "verified).",
    )
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_mounts)


def _warn(command: str, lines: list[str]) -> None:
    for line in lines:
        print(f"appimg {command}: warning: {line}", file=sys.stderr)


def cmd_mount(args: argparse.Namespace) -> int:
    from appimg.services.mount import manager

    dirs = UserDirs.from_env(os.environ)
    if args.foreground:
        if args.backend == "kernel":
            raise UsageError("--foreground serves a FUSE mount; the kernel backend needs no server")

        def ready(info: manager.MountInfo) -> None:
            _warn("mount", info.warnings)
            print(info.mountpoint, flush=True)

        return manager.mount_foreground(
            args.file, dirs, mountpoint=args.mountpoint, strict=args.strict,
            allow_untrusted=args.allow_untrusted, allow_unsigned=args.allow_unsigned,
            no_host=args.no_host, debug=args.debug,
            on_ready=ready,
        )  # fmt: skip
    info = manager.mount_image(
        args.file, dirs, mountpoint=args.mountpoint, backend=args.backend, strict=args.strict,
        allow_untrusted=args.allow_untrusted, allow_unsigned=args.allow_unsigned,
        no_host=args.no_host, persistent=True,
    )  # fmt: skip
    _warn("mount", info.warnings)
    if args.json:
        print_json({**info.public(), "reused": info.reused})
    else:
        print(info.mountpoint)
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from appimg.services.mount import manager

    dirs = UserDirs.from_env(os.environ)
    found = manager.find_mounts(args.target, dirs)
    if not found:
        hint = ""
        if not manager.is_path_argument(args.target) and os.path.lexists(args.target):
            hint = f"; for the file or directory here, write ./{args.target}"
        raise UsageError(f"{args.target}: no mounted image matches (see 'appimg mounts'){hint}")
    for info in found:
        manager.unmount(info, dirs, lazy=args.lazy)
        how = "detached" if args.lazy else "unmounted"
        print(f"{how} {shell_quote_name(info.mountpoint)}")
    return 0


def cmd_mounts(args: argparse.Namespace) -> int:
    from appimg.services.mount import manager

    mounts = manager.list_mounts(UserDirs.from_env(os.environ))
    if args.json:
        print_json([m.public() for m in mounts])
        return 0
    if not mounts:
        print("no mounted images")
        return 0
    print(f"{'NAME':<44} {'BACKEND':<7} {'STATUS':<9} {'REFS':>4}  MOUNTPOINT")
    for m in mounts:
        refs = "-" if m.persistent else str(m.references)
        print(f"{m.name:<44} {m.backend:<7} {m.status:<9} {refs:>4}  "
              f"{shell_quote_name(m.mountpoint)}")  # fmt: skip
        if "user space" not in m.verity and "dm-verity" not in m.verity:
            print(f"  verity: {m.verity}")
        denied = [r for r in m.rules if r.get("status") == "denied"]
        for rule in denied:
            print(f"  denied: {rule['path']} -> {rule['at']} ({rule['mode']}): {rule['reason']}")
    return 0
