"""The run command: start an app inside its merged view, without root."""

from __future__ import annotations

import argparse
import os
import sys

from appimg.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run",
        help="run an app image (or an installed app) in its sandbox",
        description=(
            "Start the app of FILE (an image) or ID (an installed app) inside its merged\n"
            "view: user, mount and pid namespaces, the image's files plus the host paths\n"
            "the rules grant, a private /tmp and a writable ~/.var/appimg/ID. The exit\n"
            "status is the app's. Arguments after -- go to the app unchanged."
        ),
        epilog="examples: appimg run Hello.appimg -- --verbose 'two words'\n"
        "          appimg run org.example.Hello --command greet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="FILE|ID")
    p.add_argument("--command", dest="app_command", metavar="NAME",
                   help="run the manifest's named command")  # fmt: skip
    p.add_argument("--strict", action="store_true", help="fail if the policy denies a rule")
    p.add_argument("--allow-untrusted", action="store_true",
                   help="run an image signed by a key that is not trusted")  # fmt: skip
    p.add_argument("--no-host", action="store_true", help="grant no host paths at all")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for the app (after --)")  # fmt: skip
    p.set_defaults(func=cmd_run)


RUN_FLAGS = {"--strict": "strict", "--allow-untrusted": "allow_untrusted", "--no-host": "no_host"}


def _take_options(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Options may also follow FILE|ID (``appimg run FILE --command X -- ARGS``).

    They are taken up to ``--`` or the first argument that is not one of ours;
    everything after that belongs to the app, untouched.
    """
    while rest:
        word = rest[0]
        if word == "--":
            return rest[1:]
        if word in RUN_FLAGS:
            setattr(args, RUN_FLAGS[word], True)
            rest = rest[1:]
        elif word == "--command":
            if len(rest) < 2:
                raise UsageError("--command needs a NAME")
            args.app_command = rest[1]
            rest = rest[2:]
        elif word.startswith("--command="):
            args.app_command = word.split("=", 1)[1]
            rest = rest[1:]
        else:
            break
    return rest


def cmd_run(args: argparse.Namespace) -> int:
    from appimg.host.dirs import UserDirs
    from appimg.services.run.launcher import run_app

    app_args = _take_options(args, list(args.args)) + (args.passthrough or [])
    sys.stdout.flush()
    return run_app(
        args.target,
        app_args,
        UserDirs.from_env(os.environ),
        dict(os.environ),
        command=args.app_command,
        strict=args.strict,
        allow_untrusted=args.allow_untrusted,
        no_host=args.no_host,
    )
