"""The ``appimg`` command line: the top-level parser, error handling and entry points.

The commands are declared in :mod:`appimg.cli.commands` (one table) and implemented
by its modules; options shared between commands are in :mod:`appimg.cli.options`.
Every failure the user can cause surfaces as one line on stderr and a non-zero
exit status (see :mod:`appimg.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from appimg import __version__
from appimg.cli.commands import COMMANDS, add_command, add_summaries
from appimg.errors import AppimgError

if TYPE_CHECKING:  # built only when needed: `appimg run FILE|ID` is parsed without it
    import argparse


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser. With a known ``command``, only that command is registered, in full;
    otherwise every command, without its arguments (for the listing and usage errors)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="appimg",
        description=(
            "Ship a Linux desktop app as one signed, verifiable file: pack an app "
            "directory into an image; inspect, verify and extract it; run it in a sandbox "
            "or mount it without root; install it for the desktop."
        ),
        epilog="Run 'appimg COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"appimg {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback instead of a one-line error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in COMMANDS:
        add_command(commands, command)
    else:
        add_summaries(commands)
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The command being run; None when the top-level help comes first (it lists all)."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word
    return None


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """For ``run``, everything after the first ``--`` belongs to the app, verbatim.

    (argparse would otherwise drop or interpret a ``--`` inside the app's arguments.)
    """
    if _command_word(argv) != "run" or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _plain_run(words: list[str]) -> argparse.Namespace | None:
    """``appimg run FILE|ID [ARGS...]`` (what a desktop entry runs), parsed without
    building the parser (~4 ms): the namespace argparse gives it, or None for
    anything else (options before FILE|ID, help, other commands).

    After FILE|ID, argparse puts every word into ``args`` (a REMAINDER), options
    included; :func:`~appimg.cli.commands.run.cmd_run` takes its own from there.
    """
    if len(words) < 2 or words[0] != "run" or words[1].startswith("-"):
        return None
    from appimg.cli.commands.run import plain_args

    return plain_args(words[1], words[2:])


def _suggest(parser: argparse.ArgumentParser, word: str) -> None:
    """A usage error naming the nearest command (``instal`` -> ``install``), if one is near."""
    import difflib  # only on this path: it costs start-up time

    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    if close:
        parser.error(f"argument COMMAND: invalid choice: {word!r} (did you mean {close[0]!r}?)")


def main(argv: Sequence[str] | None = None) -> int:
    words, passthrough = _split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = _plain_run(words)
    if args is None:
        word = _command_word(words)
        parser = make_parser(word)
        if word is not None and word not in COMMANDS:
            _suggest(parser, word)
        args = parser.parse_args(words)
    args.passthrough = passthrough
    try:
        return int(args.func(args) or 0)
    except AppimgError as exc:
        if args.debug:
            raise
        print(f"appimg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"appimg {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `appimg cat ... | head`).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"appimg {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def console_main() -> None:
    """The ``appimg`` console script and ``python -m appimg``."""
    status = main()
    if _command_word(sys.argv[1:]) == "run":
        # `appimg run` has released all it held before returning (the mount reference,
        # with the unmount if it was the last; the sockets; the bus proxy): only the
        # interpreter's teardown is left, which a launch need not wait for.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # let the normal exit report or ignore it
        else:
            os._exit(status & 0xFF)
    sys.exit(status)
