"""Options shared by several commands, each declared once with one help text.

A command adds one with ``options.JSON.add_to(parser)``; ``run`` also reads the
flag names from here to accept them after FILE|ID. Options that only look alike
(``install --strict`` is about exports, ``verify --key`` takes a public key and
``sign --key`` a private one) stay with their command. One idea has one spelling
in every command; a spelling it replaced stays accepted as a hidden alias (not in
``--help``), so scripts written for it keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # imported where parsers are built: `appimg run`'s shortcut needs none
    import argparse


class Flag(NamedTuple):
    """An on/off option (``store_true``)."""

    flag: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser, help_text: str | None = None,
               aliases: tuple[str, ...] = ()) -> None:  # fmt: skip
        """Add the flag (``help_text`` replaces the shared help where a command means more
        by it); each of ``aliases`` sets the same ``dest`` and is left out of ``--help``."""
        from argparse import SUPPRESS

        parser.add_argument(self.flag, action="store_true", help=help_text or self.help)
        for alias in aliases:
            parser.add_argument(alias, action="store_true", dest=self.dest, help=SUPPRESS)


JSON = Flag("--json", "print JSON for programs")

# How the host's policy applies to an image's view (run and mount).
STRICT = Flag("--strict", "fail if the host refuses any requested host path")
ALLOW_UNTRUSTED = Flag(
    "--allow-untrusted", "accept an image signed by no trusted key (with a warning)"
)
ALLOW_UNSIGNED = Flag("--allow-unsigned", "accept an image with no signature (with a warning)")
NO_HOST = Flag("--no-host", "grant no host paths: show only the app's own files")
NO_FUSE = Flag("--no-fuse", "run from a verified extraction cache instead of a FUSE mount")


def image_file(parser: argparse.ArgumentParser) -> None:
    """The positional FILE: an image file."""
    parser.add_argument("file", type=Path, metavar="FILE")


def app_id(parser: argparse.ArgumentParser) -> None:
    """The positional ID: an installed app."""
    parser.add_argument("app_id", metavar="ID")


# Changes to an app's permissions, in `flatpak override`'s grammar (override and run).
PERMISSION_CHANGES = (
    ("socket", "X", "grant the socket X (x11, wayland, fallback-x11, pulseaudio, pipewire, "
                    "ssh-auth, pcsc, cups; session-bus, system-bus: a whole bus, unfiltered)"),
    ("nosocket", "X", "revoke the socket X"),
    ("device", "X", "grant the device X (dri, kvm, input, usb, all)"),
    ("nodevice", "X", "revoke the device X"),
    ("share", "X", "grant sharing X with the host (network, ipc)"),
    ("unshare", "X", "revoke sharing X"),
    ("filesystem", "P[:ro|:create]",
     "grant the location P (home, xdg-download, ~/DIR, /DIR, ...), read-write unless :ro"),
    ("nofilesystem", "P", "revoke the location P"),
    ("talk-name", "N", "let the app call the D-Bus name N (or N.*) on the session bus"),
    ("no-talk-name", "N", "revoke talking to N"),
    ("own-name", "N", "let the app own the D-Bus name N on the session bus"),
    ("no-own-name", "N", "revoke owning N"),
    ("see-name", "N", "let the app see (not call) the D-Bus name N"),
    ("no-see-name", "N", "revoke seeing N"),
    ("system-talk-name", "N", "let the app call the D-Bus name N on the system bus"),
    ("no-system-talk-name", "N", "revoke talking to N on the system bus"),
)  # fmt: skip


def permission_changes(parser: argparse.ArgumentParser) -> None:
    """The repeatable change flags; ``args.permission_changes`` lists (flag, value)."""
    import argparse

    class _Change(argparse.Action):
        """Collects every change flag, in command-line order, as (flag, value) in one list."""

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: object, option_string: str | None = None) -> None:  # fmt: skip
            changes = list(getattr(namespace, self.dest) or [])
            changes.append((self.const, values))
            setattr(namespace, self.dest, changes)

    group = parser.add_argument_group(
        "permission changes", "repeatable; a later flag about the same entry wins"
    )
    for flag, metavar, help_text in PERMISSION_CHANGES:
        group.add_argument(f"--{flag}", action=_Change, const=flag, metavar=metavar,
                           dest="permission_changes", default=[], help=help_text)  # fmt: skip
