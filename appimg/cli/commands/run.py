"""The run command: start an app inside its merged view, without root (declared in
:mod:`appimg.cli.commands`)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

from appimg.cli import options
from appimg.errors import UsageError

if TYPE_CHECKING:
    import argparse

    from appimg.cli.commands import Subcommands


def add_run(commands: Subcommands, name: str, summary: str) -> None:
    import argparse  # not at the top: the shortcut (plain_args) runs without it

    p = commands.add_parser(
        name,
        help=summary,
        description=(
            "Start the app of FILE (an image) or ID (an installed app) inside its merged\n"
            "view: new namespaces, the image's files plus the host paths the rules grant,\n"
            "a private /tmp and a writable data directory. FILE|ID is a file only if it\n"
            "contains / or ends in .appimg and is not an installed app's id. The exit\n"
            "status is the app's.\n"
            "The permission changes (--socket=X, --nofilesystem=P, ...) apply to this run\n"
            "only, on top of the stored override (see appimg permissions, appimg override).\n"
            "Arguments after -- go to the app unchanged."
        ),
        epilog="examples: appimg run Hello.appimg -- --verbose 'two words'\n"
        "          appimg run org.example.Hello --command greet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="FILE|ID")
    p.add_argument("--command", dest="app_command", metavar="NAME",
                   help="run the manifest's named command")  # fmt: skip
    for flag in RUN_FLAGS:
        flag.add_to(p)
    options.permission_changes(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for the app (after --)")  # fmt: skip
    p.set_defaults(func=cmd_run)


#: The on/off options, also accepted after FILE|ID.
RUN_FLAGS = (options.STRICT, options.ALLOW_UNTRUSTED, options.ALLOW_UNSIGNED, options.NO_HOST,
             options.NO_FUSE)  # fmt: skip


#: The permission change flags, also accepted after FILE|ID.
CHANGE_FLAGS = {flag for flag, _, _ in options.PERMISSION_CHANGES}


def plain_args(target: str, rest: list[str]) -> argparse.Namespace:
    """What the parser of :func:`add_run` makes of ``run TARGET REST...`` (TARGET not an
    option), without building it: REST is all ``args``, every option at its default.
    (tests/unit/test_cli_run_args.py holds the two to the same result.) The same
    attributes as argparse's namespace, without importing argparse (~2 ms)."""
    args: argparse.Namespace = SimpleNamespace(  # type: ignore[assignment]
        debug=False, command="run", target=target, app_command=None
    )
    for flag in RUN_FLAGS:
        setattr(args, flag.dest, False)
    args.permission_changes = []
    args.args = rest
    args.func = cmd_run
    return args


def _take_options(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Options may also follow FILE|ID (``appimg run FILE --command X -- ARGS``).

    They are taken up to ``--`` or the first argument that is not one of ours;
    everything after that belongs to the app, untouched.
    """
    while rest:
        word = rest[0]
        if word == "--":
            return rest[1:]
        flag = next((f for f in RUN_FLAGS if f.flag == word), None)
        if flag is not None:
            setattr(args, flag.dest, True)
            rest = rest[1:]
        elif word == "--command":
            if len(rest) < 2:
                raise UsageError("--command needs a NAME")
            args.app_command = rest[1]
            rest = rest[2:]
        elif word.startswith("--command="):
            args.app_command = word.split("=", 1)[1]
            rest = rest[1:]
        elif word.startswith("--") and word[2:].partition("=")[0] in CHANGE_FLAGS:
            flag, sep, value = word[2:].partition("=")
            if not sep:
                if len(rest) < 2:
                    raise UsageError(f"--{flag} needs a value")
                value, rest = rest[1], rest[1:]
            args.permission_changes = [*args.permission_changes, (flag, value)]
            rest = rest[1:]
        else:
            break
    return rest


def cmd_run(args: argparse.Namespace) -> int:
    from appimg.host.dirs import UserDirs
    from appimg.host.overrides import from_flags
    from appimg.services.run.launcher import run_app

    app_args = _take_options(args, list(args.args)) + (args.passthrough or [])
    override = from_flags(args.permission_changes)  # a typo fails before anything runs
    sys.stdout.flush()
    return run_app(
        args.target,
        app_args,
        UserDirs.from_env(os.environ),
        dict(os.environ),
        command=args.app_command,
        strict=args.strict,
        allow_untrusted=args.allow_untrusted,
        allow_unsigned=args.allow_unsigned,
        no_host=args.no_host,
        override=override or None,
        no_fuse=args.no_fuse,
    )
