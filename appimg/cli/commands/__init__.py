"""The table of ``appimg`` commands: each command is declared here, once.

:data:`COMMANDS` maps a command name to the module under :mod:`appimg.cli.commands`
that implements it and the one-line summary shown by ``appimg --help``. The module
defines ``add_<name>(commands, name, summary)``, which adds the command's parser
(arguments, description, ``func``) to the subparsers ``commands``.

Only the module of the command being run is imported and builds its parser: every
module imported and every parser built costs start-up time (~0.15 ms a parser), and
``inspect``/``list`` must start fast. ``appimg --help`` and unknown commands get
argument-less parsers built from the table alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # argparse is not imported on `appimg run`'s shortcut (appimg.cli)
    import argparse

    #: What ``argparse.ArgumentParser.add_subparsers`` returns (private in typeshed).
    Subcommands = argparse._SubParsersAction


class Command(NamedTuple):
    module: str  # under appimg.cli.commands
    summary: str  # one line, lower case: the `appimg --help` listing and the command's help


#: Every command, in the order `appimg --help` lists them.
COMMANDS: dict[str, Command] = {
    # making images
    "init": Command("build", "write a commented appimg.toml template into an app directory"),
    "pack": Command("build", "turn an app directory into one image file"),
    "keygen": Command("build", "make an Ed25519 signing key"),
    "sign": Command("build", "add a signature to an image"),
    "push": Command("registry", "publish an image to an OCI registry"),
    # reading images
    "inspect": Command("read", "show an image's partitions, manifest, verity and signatures"),
    "verify": Command("read", "check an image's integrity and signatures"),
    "ls": Command("read", "list files inside an image"),
    "cat": Command("read", "write a file inside an image to stdout"),
    "extract": Command("read", "unpack an image's files into a directory"),
    # the per-user store
    "install": Command("install", "install an image for this user and export it to the desktop"),
    "update": Command("install", "install a new version of an installed app (the old one is kept)"),
    "uninstall": Command("install", "remove an installed app, its exports and its images"),
    "rollback": Command("install", "switch an app back to its previous version"),
    "list": Command("install", "list installed apps"),
    "info": Command("install", "show what the store knows about an installed app"),
    "apps": Command("install", "list every desktop application, appimg's and the host's"),
    "trust": Command("install", "manage the keys whose signatures install without questions"),
    "xdg": Command("install", "the XDG data search path with appimg's exports"),
    # running and mounting
    "run": Command("run", "run an app image (or an installed app) in its sandbox"),
    "permissions": Command("permissions", "show what an app may use of the host, and why"),
    "override": Command("permissions", "change an app's permissions for later runs"),
    "mount": Command("mount", "mount an image read-only, merged with the host paths it may see"),
    "umount": Command("mount", "unmount an image"),
    "mounts": Command("mount", "list mounted images"),
}


def add_command(commands: Subcommands, name: str) -> None:
    """Import the module of command ``name`` and let it add the command's full parser."""
    command = COMMANDS[name]
    module = importlib.import_module(f"{__name__}.{command.module}")
    getattr(module, f"add_{name}")(commands, name, command.summary)


def add_summaries(commands: Subcommands) -> None:
    """Every command as a parser with no arguments: enough for the help listing."""
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary)
