"""Commands of the per-user store: install, update, rollback, uninstall, list, info,
apps, trust and xdg (spec/xdg-index.md; declared in :mod:`appimg.cli.commands`).

Only argparse and the standard library are imported at module level: ``apps``,
``list`` and ``xdg find`` must start fast, so each command imports what it needs.
Each command reads the environment once, here: the user's directories into a
:class:`~appimg.host.dirs.UserDirs`, and ``PATH`` (where the ``appimg`` launcher
named by exported Exec lines is found) as ``program_path``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.cli import options
from appimg.cli.output import print_json
from appimg.errors import StoreError
from appimg.host.dirs import UserDirs

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands


def _dirs() -> UserDirs:
    return UserDirs.from_env(os.environ)


def _program_path() -> str:
    return os.environ.get("PATH", "")


PLAIN_HTTP = options.Flag(
    "--plain-http", "talk to the registry over plain HTTP (a local or test registry only)"
)


def _install_parser(commands: Subcommands, name: str, summary: str) -> argparse.ArgumentParser:
    """install and update take the same options."""
    p = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ". The image is copied into "
        "$XDG_DATA_HOME/appimg/images, its desktop entries, icons, metainfo, MIME and "
        "D-Bus files are exported under the rules of spec/xdg-index.md (anything refused "
        "is reported with the reason; search providers only once enabled with appimg "
        "override ID --search-provider=on), and the change is atomic. Unsigned images and "
        "images signed by keys that are not trusted are refused unless allowed explicitly.",
    )
    options.ALLOW_UNSIGNED.add_to(p, help_text="install an unsigned image")
    # --trust: this flag's spelling before it matched run and mount.
    options.ALLOW_UNTRUSTED.add_to(p, aliases=("--trust",),
        help_text="accept valid signatures by keys that are not in the trust store "
        "(later updates signed by the same key are accepted too)")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="fail instead of installing if any export is refused")  # fmt: skip
    PLAIN_HTTP.add_to(p)
    options.JSON.add_to(p)
    return p


def add_install(commands: Subcommands, name: str, summary: str) -> None:
    p = _install_parser(commands, name, summary)
    p.add_argument("file", metavar="FILE|oci://HOST[:PORT]/REPO[:TAG]",
                   help="an image file, or an image in an OCI registry (its tag is "
                   "followed by appimg update)")  # fmt: skip
    p.set_defaults(func=cmd_install)


def add_update(commands: Subcommands, name: str, summary: str) -> None:
    p = _install_parser(commands, name, summary)
    p.add_argument("targets", nargs="*", metavar="FILE|ID|oci://REF",
                   help="an image file or oci:// reference (the new version), or the ids "
                   "of apps installed from a registry, whose tags are followed (none: every "
                   "such app)")  # fmt: skip
    p.add_argument("--check", action="store_true",
                   help="only list what the registries offer; change nothing")  # fmt: skip
    p.epilog = (
        "An update must be signed by a key the app is pinned to (a new key only "
        "together with a pinned one), raise the version (spec/xdg-index.md §4) and ask "
        "for no permission the installed version does not have, unless "
        "--accept-permissions is given (spec/permissions.md §4)."
    )
    p.add_argument("--allow-downgrade", action="store_true",
                   help="accept an older version than the installed one")  # fmt: skip
    p.add_argument("--accept-permissions", action="store_true",
                   help="accept a version that asks for more permissions than the "
                   "installed one (without it, such an update is refused and what is new "
                   "is named)")  # fmt: skip
    p.set_defaults(func=cmd_update)


def add_uninstall(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Remove the app ID: every exported file, its index entry and its "
        "images. Removing the last app removes the whole store. The app's data "
        "(~/.var/appimg/ID) is kept unless --delete-data is given.",
    )
    options.app_id(p)
    p.add_argument("--delete-data", action="store_true",
                   help="also delete the app's data directory, ~/.var/appimg/ID")  # fmt: skip
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_uninstall)


def add_rollback(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Make the previous version of ID active again (atomically); the "
        "current one becomes the previous, so a second rollback undoes the first.",
    )
    options.app_id(p)
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_rollback)


def add_list(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name, help=summary, description="List the apps installed for this user."
    )
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_list)


def add_info(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Show ID's versions, image files, signature state, exported and refused "
        "files, and every XDG data file its active image holds.",
    )
    options.app_id(p)
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_info)


def add_apps(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Enumerate applications as a desktop shell does (GLib's rules) along "
        "XDG_DATA_HOME, the exports directory and XDG_DATA_DIRS: desktop id, name, icon "
        "name and file, Exec and source (appimg or host).",
    )
    options.JSON.add_to(p)
    p.add_argument("--all", action="store_true", help="include entries with NoDisplay=true")
    p.set_defaults(func=cmd_apps)


def add_trust(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Trusted keys live in $XDG_CONFIG_HOME/appimg/trusted-keys/ (yours) "
        "and /etc/appimg/trusted-keys/ (the system's).",
    )
    sub = p.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    q = sub.add_parser("add", help="trust a public key (KEY.pub; a private key is refused)")
    q.add_argument("key", type=Path, metavar="KEYFILE")
    q.set_defaults(func=cmd_trust_add)
    q = sub.add_parser("list", help="list trusted keys")
    options.JSON.add_to(q)
    q.set_defaults(func=cmd_trust_list)
    q = sub.add_parser("remove", help="stop trusting a key (by key id, or its file)")
    q.add_argument("key", metavar="KEY")
    q.set_defaults(func=cmd_trust_remove)


def add_xdg(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Put the exports directory on the XDG data search path, and find data "
        "files along it and inside installed images without mounting them.",
    )
    sub = p.add_subparsers(dest="xdg_command", metavar="ACTION", required=True)
    q = sub.add_parser("env", help="print XDG_DATA_DIRS with the exports directory")
    q.add_argument("--export", action="store_true", help="print a shell 'export' line")
    q.set_defaults(func=cmd_xdg_env)
    q = sub.add_parser(
        "setup",
        help="add the exports directory to the session's XDG_DATA_DIRS",
        description="Write ~/.config/environment.d/60-appimg.conf and a shell snippet "
        "sourced from ~/.profile; takes effect at the next login.",
    )
    q.add_argument("--undo", action="store_true", help="remove what setup wrote")
    q.set_defaults(func=cmd_xdg_setup)
    q = sub.add_parser(
        "find",
        help="find a data file on the search path or inside installed images",
        description="Resolve REL (e.g. applications/ID.desktop, "
        "icons/hicolor/48x48/apps/ID.png) along XDG_DATA_HOME, the exports directory and "
        "XDG_DATA_DIRS, then inside the active image of every installed app (read those "
        "with 'appimg cat IMAGE PATH'). Exit status 1 if not found.",
    )
    q.add_argument("rel", metavar="REL")
    q.add_argument("--all", action="store_true", help="every match, not only the first")
    options.JSON.add_to(q)
    q.set_defaults(func=cmd_xdg_find)


# --- changing the store -------------------------------------------------------------------


def _report(outcome: Any, args: argparse.Namespace, verb: str) -> int:
    if args.json:
        print_json(outcome.to_json())
        return 0
    sig = outcome.signature
    if sig:
        by = f" by {', '.join(sig['key_ids'])}" if sig["key_ids"] else ""
        print(f"{verb} {outcome.app_id} {outcome.version} ({sig['state']}{by})")
    else:
        print(f"{verb} {outcome.app_id} {outcome.version}")
    for rel in outcome.exported:
        print(f"  {'removed' if verb == 'uninstalled' else 'exported'} {rel}")
    if outcome.mime and (outcome.mime["opens"] or outcome.mime["defines"]):
        parts = [f"{verb} {', '.join(outcome.mime[verb])}" for verb in ("opens", "defines")
                 if outcome.mime[verb]]  # fmt: skip
        print(f"  mime types: {'; '.join(parts)}")
    if outcome.permissions is not None:
        _print_permissions(outcome.permissions)
    if outcome.search_provider == "off":
        print(f"  search provider: off, not exported (it would see every query typed; "
              f"enable with appimg override {outcome.app_id} --search-provider=on)")  # fmt: skip
    elif outcome.search_provider == "on":
        print("  search provider: on (enabled by your override)")
    command = args.command
    for item in outcome.refused:
        print(f"appimg {command}: refused {item['path']}: {item['reason']}", file=sys.stderr)
    for note in outcome.notes:
        print(f"appimg {command}: note: {note}", file=sys.stderr)
    return 0


def _print_permissions(permissions: dict[str, Any]) -> None:
    """What the app will get, one line per category ("permissions: none" when none)."""
    granted = {cat: names for cat, names in permissions["granted"].items() if names}
    if not granted:
        print("  permissions: none")
    for category, names in granted.items():
        print(f"  permissions: {category}: {', '.join(names)}")
    for item in permissions["refused"]:
        print(f"  permissions: refused {item['permission']}: {item['reason']}")
    for danger in permissions.get("dangers", ()):
        print(f"  permissions: {danger}")


def _source(text: str, args: argparse.Namespace) -> Any:
    """A file (a Path) or an oci:// reference (an ops.Remote, its manifest resolved)."""
    from appimg.services.oci.reference import Reference, is_reference

    if not is_reference(text):
        return Path(text)
    from appimg.services.oci import fetch

    ref = Reference.parse(text)
    found = fetch.resolve(ref, plain_http=args.plain_http, env=os.environ)
    return fetch.remote(ref, found, plain_http=args.plain_http, env=os.environ,
                        progress=_progress(ref))  # fmt: skip


def _progress(ref: Any) -> Any:
    from appimg.services.oci.client import ProgressMeter

    return ProgressMeter(f"appimg: downloading {ref}", sys.stderr, tty=sys.stderr.isatty())


def _install(args: argparse.Namespace, source: Any, update: bool) -> Any:
    from appimg.services.store import ops
    from appimg.services.store.transaction import step_hook
    from appimg.services.xdgpath.env import placement_notes

    dirs = _dirs()
    outcome = ops.install(dirs, source, allow_unsigned=args.allow_unsigned,
                          allow_untrusted=args.allow_untrusted, update=update, strict=args.strict,
                          allow_downgrade=getattr(args, "allow_downgrade", False),
                          accept_permissions=getattr(args, "accept_permissions", False),
                          program_path=_program_path(), step=step_hook(os.environ))  # fmt: skip
    outcome.notes += placement_notes(dirs, outcome.exported)
    return outcome


def cmd_install(args: argparse.Namespace) -> int:
    return _report(_install(args, _source(args.file, args), update=False), args, "installed")


def _is_app_id(target: str) -> bool:
    return not target.startswith("oci://") and "/" not in target \
        and not target.endswith(".appimg") and not os.path.exists(target)  # fmt: skip


def cmd_update(args: argparse.Namespace) -> int:
    from appimg.errors import UsageError

    ids = [t for t in args.targets if _is_app_id(t)]
    if len(ids) != len(args.targets):
        if len(args.targets) != 1 or args.check:
            raise UsageError("update takes one FILE or oci:// reference, or app ids "
                             "(--check: app ids only)")  # fmt: skip
        outcome = _install(args, _source(args.targets[0], args), update=True)
        return _report(outcome, args, "updated")
    return _follow(args, ids)


def _follow(args: argparse.Namespace, ids: list[str]) -> int:
    """Update apps installed from a registry from the tags they follow (or, with
    --check, say what the tags offer)."""
    from appimg.services.oci import fetch

    dirs = _dirs()
    rows: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for app_id, app, ref in fetch.followed(dirs, ids):
        plain_http = bool(app["origin"].get("plain_http"))
        found = fetch.resolve(ref, plain_http=plain_http, env=os.environ)
        active = app["versions"][0]
        current = found.layer.digest == fetch.installed_digest(dirs, active)
        row = {"id": app_id, "reference": str(ref), "installed": active["version"],
               "available": found.version or None, "manifest": found.digest,
               "image": found.layer.digest, "size": found.layer.size,
               "update": not current}  # fmt: skip
        rows.append(row)
        if args.check or current:
            if not args.check and not args.json:
                print(f"{app_id} {active['version']} is up to date ({ref})")
            continue
        source = fetch.remote(ref, found, plain_http=plain_http, env=os.environ,
                              progress=_progress(ref),
                              base=fetch.installed_image(dirs, active))  # fmt: skip
        outcome = _install(args, source, update=True)
        transfer = source.download.transfer
        if args.json:
            outcomes.append({**outcome.to_json(), "transfer": transfer and transfer.to_json()})
        else:
            _report(outcome, args, "updated")
            if transfer is not None and transfer.delta:
                print(f"  delta: fetched {transfer.fetched} of {transfer.size} bytes "
                      f"({100 * transfer.fetched / transfer.size:.1f}%) in "
                      f"{transfer.requests} range request(s), reused {transfer.reused} "
                      "from the installed version")  # fmt: skip
    if args.check:
        if args.json:
            print_json(rows)
        for row in [] if args.json else rows:
            offer = f"{row['available'] or '?'} available" if row["update"] else "up to date"
            print(f"{row['id']:<40} {row['installed']:<12} {offer}  {row['reference']}")
        if not rows and not args.json:
            print("no apps installed from a registry")
    elif args.json:
        print_json(outcomes)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from appimg.services.store import ops
    from appimg.services.store.transaction import step_hook

    dirs = _dirs()
    outcome = ops.uninstall(dirs, args.app_id, program_path=_program_path(),
                            step=step_hook(os.environ))  # fmt: skip
    status = _report(outcome, args, "uninstalled")
    _left_data(dirs, outcome.app_id, delete=args.delete_data)
    return status


def _left_data(dirs: UserDirs, app_id: str, *, delete: bool) -> None:
    """Say where the uninstalled app's data stays, or delete it (--delete-data)."""
    from appimg.services.run.environment import data_path

    data = data_path(app_id, dirs)
    if not os.path.lexists(data):
        return
    if not delete:
        note = f"the app's data stays in {data} (--delete-data removes it with the app)"
        print(f"appimg uninstall: note: {note}", file=sys.stderr)
        return
    import shutil

    try:
        if os.path.islink(data) or not os.path.isdir(data):
            os.unlink(data)  # never followed: only the entry itself goes
        else:
            shutil.rmtree(data)
    except OSError as exc:
        raise StoreError(f"{data}: cannot delete the app's data: {exc.strerror}") from None
    print(f"appimg uninstall: deleted the app's data in {data}", file=sys.stderr)


def cmd_rollback(args: argparse.Namespace) -> int:
    from appimg.services.store import ops
    from appimg.services.store.transaction import step_hook

    outcome = ops.rollback(_dirs(), args.app_id, program_path=_program_path(),
                           step=step_hook(os.environ))  # fmt: skip
    return _report(outcome, args, "rolled back to")


def _print_json_rows(rows: list[dict[str, Any]]) -> None:
    """A JSON array, one element per line: json's C encoder only runs without indent, and
    indenting a thousand apps in Python would double the time of `appimg apps --json`."""
    import json

    body = ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
    sys.stdout.write(f"[\n{body}\n]\n" if rows else "[]\n")


# --- reading the store --------------------------------------------------------------------


def _load_index(dirs: UserDirs) -> tuple[Any, Any]:
    from appimg.services.store import index as index_mod
    from appimg.services.store.layout import StoreLayout

    layout = StoreLayout.from_dirs(dirs)
    if layout.needs_recovery() or layout.is_abandoned():
        from appimg.services.store import ops

        for note in ops.maybe_recover(dirs, program_path=_program_path()):
            print(f"appimg: note: {note}", file=sys.stderr)
    return layout, index_mod.load(layout)


def cmd_list(args: argparse.Namespace) -> int:
    layout, index = _load_index(_dirs())
    rows = []
    for app_id in sorted(index["apps"]):
        app = index["apps"][app_id]
        active = app["versions"][0]
        rows.append({
            "id": app_id,
            "name": app["name"],
            "version": active["version"],
            "signature": active["signature"]["state"],
            "file": str(layout.image_file(active["file"])),
            "previous": app["versions"][1]["version"] if len(app["versions"]) > 1 else None,
            "exported": len(app["exported"]),
            "refused": len(app["refused"]),
        })  # fmt: skip
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no installed apps")  # as `appimg mounts` says "no mounted images"
    for row in rows:
        print(f"{row['id']:<40} {row['version']:<12} {row['signature']:<9} {row['name']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from appimg.errors import UsageError

    layout, index = _load_index(_dirs())
    app = index["apps"].get(args.app_id)
    if app is None:
        raise UsageError(f"{args.app_id} is not installed")
    info = dict(app)
    info["versions"] = [
        {**v, "file": str(layout.image_file(v["file"])), "active": i == 0}
        for i, v in enumerate(app["versions"])
    ]
    info["exports_dir"] = str(layout.exports)
    if args.json:
        print_json(info)
        return 0
    print(f"{app['id']} ({app['name']})")
    for v in info["versions"]:
        sig = v["signature"]
        mark = "active  " if v["active"] else "previous"
        print(f"  {mark} {v['version']}  {v['file']}")
        print(f"           root {v['root_hash']}  {sig['state']} {' '.join(sig['key_ids'])}")
    for rel in app["exported"]:
        print(f"  exported {layout.exports / rel}")
    for item in app["refused"]:
        print(f"  refused  {item['path']}: {item['reason']}")
    active = info["versions"][0]
    print(f"  xdg files in the image: {len(active['xdg_files'])}")
    for rel, path in active["xdg_files"].items():
        print(f"    {rel} <- {path}")
    return 0


def cmd_apps(args: argparse.Namespace) -> int:
    dirs = _dirs()
    from appimg.services.store.layout import StoreLayout

    if StoreLayout.from_dirs(dirs).needs_recovery():
        _load_index(dirs)
    from appimg.services.xdgpath.apps import enumerate_apps

    found = enumerate_apps(dirs, program_path=_program_path(),
                           current_desktop=os.environ.get("XDG_CURRENT_DESKTOP", ""))  # fmt: skip
    apps = [a for a in found if args.all or a["show"]]
    if args.json:
        _print_json_rows(apps)
        return 0
    for app in apps:
        print(f"{app['id']:<48} {app['source']:<6} {app['name']}")
    return 0


# --- trust ----------------------------------------------------------------------------------


def cmd_trust_add(args: argparse.Namespace) -> int:
    from appimg.host.trust import add_trusted

    kid, path, new = add_trusted(_dirs(), args.key)
    print(f"{'trusted' if new else 'already trusted'}: {kid} ({path})")
    return 0


def cmd_trust_list(args: argparse.Namespace) -> int:
    from appimg.host.trust import list_trusted

    rows = list_trusted(_dirs())
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no trusted keys (add one with: appimg trust add KEY.pub)")
    for row in rows:
        kid = row["key_id"] or f"unreadable: {row['error']}"
        print(f"{kid:<32}  {row['scope']:<6}  {row['file']}")
    return 0


def cmd_trust_remove(args: argparse.Namespace) -> int:
    from appimg.host.trust import remove_trusted

    for path in remove_trusted(_dirs(), args.key):
        print(f"removed {path}")
    return 0


# --- xdg ------------------------------------------------------------------------------------


def cmd_xdg_env(args: argparse.Namespace) -> int:
    import shlex

    from appimg.services.xdgpath import data_dirs_value

    value = data_dirs_value(_dirs())
    print(f"export XDG_DATA_DIRS={shlex.quote(value)}" if args.export else value)
    return 0


def cmd_xdg_setup(args: argparse.Namespace) -> int:
    from appimg.services.xdgpath import env as xdg_env

    dirs = _dirs()
    if args.undo:
        changed = xdg_env.undo(dirs)
        for path in changed:
            print(f"removed appimg's setup from {path}")
        if not changed:
            print("nothing to undo")
        return 0
    for path in xdg_env.setup(dirs):
        print(f"wrote {path}")
    print("log out and in again for the desktop to pick it up")
    return 0


def cmd_xdg_find(args: argparse.Namespace) -> int:
    from appimg.services.store.layout import StoreLayout
    from appimg.services.xdgpath.find import find

    dirs = _dirs()
    if StoreLayout.from_dirs(dirs).needs_recovery():
        _load_index(dirs)
    matches = find(dirs, args.rel, every=args.all)
    if args.json:
        print_json(matches)
    else:
        for m in matches:
            if m["source"] == "image":
                print(f"image\t{m['image']}\t{m['path']}")
            else:
                print(f"{m['source']}\t{m['path']}")
    return 0 if matches else 1
