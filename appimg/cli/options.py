"""Options shared by several commands, each declared once with one help text.

A command adds one with ``options.JSON.add_to(parser)``; ``run`` also reads the
flag names from here to accept them after FILE|ID. Options that only look alike
(``install --strict`` is about exports, ``verify --key`` takes a public key and
``sign --key`` a private one) stay with their command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple


class Flag(NamedTuple):
    """An on/off option (``store_true``)."""

    flag: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(self.flag, action="store_true", help=self.help)


JSON = Flag("--json", "print JSON for programs")

# How the host's policy applies to an image's view (run and mount).
STRICT = Flag("--strict", "fail if the host refuses any requested host path")
ALLOW_UNTRUSTED = Flag(
    "--allow-untrusted", "accept an image signed by no trusted key (with a warning)"
)
ALLOW_UNSIGNED = Flag("--allow-unsigned", "accept an image with no signature (with a warning)")
NO_HOST = Flag("--no-host", "grant no host paths: show only the app's own files")


def image_file(parser: argparse.ArgumentParser) -> None:
    """The positional FILE: an image file."""
    parser.add_argument("file", type=Path, metavar="FILE")


def app_id(parser: argparse.ArgumentParser) -> None:
    """The positional ID: an installed app."""
    parser.add_argument("app_id", metavar="ID")
