"""The permissions and override commands: what an app gets and why, and the user's
changes to it (spec/permissions.md; declared in :mod:`appimg.cli.commands`)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from appimg.cli import options
from appimg.cli.output import print_json

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands


def add_permissions(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description=(
            "Show what the app of FILE (an image) or ID (an installed app) gets when it\n"
            "runs: its manifest's permissions, changed by your override (appimg override),\n"
            "less what the host's policy (permissions.d) refuses. Each entry says where it\n"
            "came from; revoked and refused entries say by whom. FILE|ID is resolved as\n"
            "appimg run resolves it. --json prints the object of spec/permissions.md."
        ),
        epilog="example: appimg permissions org.example.Hello --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="FILE|ID")
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_permissions)


def add_override(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description=(
            "Change the permissions the app ID gets, for every later run, with the grammar\n"
            "of 'flatpak override'. Changes are added to what is stored already\n"
            "($XDG_CONFIG_HOME/appimg/overrides/ID.toml); --reset removes the stored\n"
            "override first. With no change, print the stored override. The host's\n"
            "policy still refuses what it denies. --search-provider=on exports the app's\n"
            "search providers (off by default: they see every query typed)."
        ),
        epilog="examples: appimg override org.example.Hello --nosocket=x11 "
        "--filesystem=xdg-music:ro\n"
        "          appimg override org.example.Hello --reset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.app_id(p)
    options.permission_changes(p)
    p.add_argument("--search-provider", metavar="on|off", dest="search_provider",
                   help="export the app's GNOME Shell and KRunner search providers (on), or "
                   "withdraw them (off, the default: a search provider sees every query "
                   "typed); applied to the installed app at once")  # fmt: skip
    p.add_argument("--reset", action="store_true", help="remove the stored override of ID")
    p.add_argument("--show", action="store_true",
                   help="print the stored override (the default without changes)")  # fmt: skip
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_override)


def _row(item: dict[str, str], key: str, verb: str) -> str:
    return f"  {item['permission']:<36} {verb}{item[key]}"


def cmd_permissions(args: argparse.Namespace) -> int:
    from appimg.format.image import Image
    from appimg.host.dirs import UserDirs
    from appimg.host.overrides import Override, override_file
    from appimg.services.permissions import effective
    from appimg.services.run.launcher import is_installed_app, resolve_target

    dirs = UserDirs.from_env(os.environ)
    image_path, by_id = resolve_target(args.target, dirs)
    with Image.open(image_path) as image:
        manifest = image.manifest
        installed = is_installed_app(image, dirs, by_id)
    # As `appimg run` does: the stored override is the installed app's only.
    result = effective(manifest, dirs, stored=None if installed else Override())
    report: dict[str, Any] = {
        "id": manifest["id"],
        "version": manifest["version"],
        "image": str(image_path),
        "installed": installed,
        "override_file": str(override_file(dirs, manifest["id"])) if installed else None,
        **result.to_json(),
        "search_provider": _search_provider_state(manifest, dirs, installed),
    }
    if args.json:
        print_json(report)
        return 0
    print(f"{manifest['id']} {manifest['version']} ({image_path})")
    print("granted:" if report["sources"] else "granted: none")
    for item in report["sources"]:
        print(_row(item, "source", "from "))
    if report["revoked"]:
        print("revoked:")
        for item in report["revoked"]:
            print(_row(item, "by", "by "))
    if report["refused"]:
        print("refused:")
        for item in report["refused"]:
            print(_row(item, "reason", ""))
    for danger in report["dangers"]:
        print(f"warning: {danger}")
    if report["search_provider"] == "off":
        print(f"search provider: off (enable with appimg override {manifest['id']} "
              "--search-provider=on)")  # fmt: skip
    elif report["search_provider"] == "on":
        print(f"search provider: on (disable with appimg override {manifest['id']} "
              "--search-provider=off)")  # fmt: skip
    return 0


def _search_provider_state(manifest: dict[str, Any], dirs: Any, installed: bool) -> str | None:
    """``on`` or ``off`` if the app ships a search provider (spec/xdg-index.md §3.7), else None;
    only the installed app's are ever exported, so a file's is always off."""
    from appimg.host.overrides import search_provider_on

    if not manifest.get("exports", {}).get("search-providers"):
        return None
    return "on" if installed and search_provider_on(dirs, manifest["id"]) else "off"


def cmd_override(args: argparse.Namespace) -> int:
    from appimg.host import overrides
    from appimg.host.dirs import UserDirs

    # The id is checked before any path is built from it (no '../' into other files).
    app_id = overrides.check_app_id(args.app_id)
    change = overrides.from_flags(args.permission_changes)
    if args.search_provider is not None:
        change.search_provider = overrides.parse_search_provider(args.search_provider)
    dirs = UserDirs.from_env(os.environ)
    path = overrides.override_file(dirs, app_id)
    if args.reset:
        removed = overrides.reset(dirs, app_id)
        if not args.json and not change:
            print(f"reset {app_id}" if removed else f"{app_id} had no override")
    if change:
        # After --reset, what is stored is empty: the changes replace the old override.
        overrides.save(dirs, app_id, overrides.load(dirs, app_id).merged(change))
    applied = None
    if args.reset or change.search_provider is not None:
        applied = _apply_search_provider(dirs, app_id, quiet=args.json)
    if args.reset and not change and not args.json:
        return 0
    stored = overrides.load(dirs, app_id)
    if args.json:
        report = {"id": app_id, "file": str(path), "flags": stored.flags(),
                  "table": stored.to_table()}  # fmt: skip
        if applied is not None:
            report["search_provider"] = {"state": applied.state, "exported": applied.exported,
                                         "removed": applied.removed}  # fmt: skip
        print_json(report)
        return 0
    if not stored:
        print(f"{app_id}: no override")
        return 0
    print(f"{app_id} ({path}):")
    for flag in stored.flags():
        print(f"  {flag}")
    return 0


def _apply_search_provider(dirs: Any, app_id: str, *, quiet: bool) -> Any:
    """Export or withdraw the installed app's search providers as the stored choice now
    says, at once (spec/xdg-index.md §3.7); say what changed unless ``quiet``."""
    import sys

    from appimg.services.store import installed_state, ops
    from appimg.services.store.transaction import step_hook

    if installed_state(dirs, app_id)[0] is None:
        return None  # applied when it is installed
    change = ops.apply_search_provider(dirs, app_id, program_path=os.environ.get("PATH", ""),
                                       step=step_hook(os.environ))  # fmt: skip
    if not quiet:
        for rel in change.exported:
            print(f"  exported {rel}")
        for rel in change.removed:
            print(f"  removed {rel}")
        for note in change.notes:
            print(f"appimg override: note: {note}", file=sys.stderr)
    return change
