"""``appimg push``: publish an image to an OCI registry (spec/distribution.md §4;
declared in :mod:`appimg.cli.commands`). Installing and updating from a registry
are ``install`` and ``update`` (:mod:`.install`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from appimg.cli import options
from appimg.cli.output import print_json

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands

PLAIN_HTTP = options.Flag(
    "--plain-http", "talk to the registry over plain HTTP (a local or test registry only)"
)


def add_push(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Upload the image FILE as an OCI artifact (one blob, the file byte for "
        "byte) and point TAG at it. Credentials come from $REGISTRY_AUTH_FILE, "
        "$XDG_RUNTIME_DIR/containers/auth.json or ~/.docker/config.json.",
    )
    options.image_file(p)
    p.add_argument("reference", metavar="oci://HOST[:PORT]/REPO:TAG")
    PLAIN_HTTP.add_to(p)
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    from appimg.services.oci.publish import push
    from appimg.services.oci.reference import Reference

    ref = Reference.parse(args.reference)
    if ref.digest:
        from appimg.errors import UsageError

        raise UsageError(f"{args.reference}: push to a tag, not a digest")
    file: Path = args.file
    result = push(file, ref, plain_http=args.plain_http, env=os.environ)
    if args.json:
        print_json(result)
    else:
        print(f"pushed {result['id']} {result['version']} to {result['reference']}")
        print(f"  manifest {result['manifest_digest']}")
        print(f"  image    {result['image_digest']} ({result['size']} bytes)")
        print(f"  chunks   {result['chunk_index']} (for delta updates)")
    return 0
