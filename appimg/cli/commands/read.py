"""Commands that read images: inspect, verify, ls, cat, extract (declared in
:mod:`appimg.cli.commands`)."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.cli import options
from appimg.cli.output import human_size, print_json, shell_quote_name
from appimg.cli.progress import ProgressBar
from appimg.errors import UsageError
from appimg.host.dirs import UserDirs

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands

# Image, keys and the payload reader are imported inside the commands: they pull in
# construct, cryptography and the decompressors, and `inspect`/`verify` must start fast.


def add_inspect(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Show what FILE holds, after the O(1) structural checks (GPT, "
        "statement, manifest digest, verity superblock).",
    )
    options.image_file(p)
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_inspect)


def add_verify(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Check FILE: GPT, statement, manifest, the whole verity tree up to "
        "the signed root hash and every signature, without reading the payload. "
        "--full also reads every payload block. With --key, at least one valid "
        "signature by one of those public keys is required. Exit status 0 only if "
        "everything checked is intact.",
    )
    options.image_file(p)
    p.add_argument("--full", action="store_true", help="also check every payload block")
    p.add_argument("--key", action="append", type=Path, default=[], metavar="PUB",
                   help="require a valid signature by this public key (repeatable)")  # fmt: skip
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_verify)


def add_ls(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="List the directory PATH (default /) inside FILE, like ls -l.",
    )
    options.image_file(p)
    p.add_argument("path", nargs="?", default="/", metavar="PATH")
    p.add_argument("-R", "--recursive", action="store_true", help="list subdirectories too")
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_ls)


def add_cat(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Write the file PATH inside FILE to standard output (symlinks "
        "inside the image are followed, never out of it).",
    )
    options.image_file(p)
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=cmd_cat)


def add_extract(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Unpack the payload of FILE (or only the PATHs given) into DIR, which "
        "must be missing or empty. Every block is checked against the verity tree.",
    )
    options.image_file(p)
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.set_defaults(func=cmd_extract)


def _signature_rows(image: Any, dirs: UserDirs) -> list[dict[str, Any]]:
    from appimg.host.trust import load_trusted

    return [s.to_json() for s in image.signatures(load_trusted(dirs))]


def _host_rules(manifest: dict[str, Any], dirs: UserDirs) -> dict[str, Any]:
    """How this host decides the app's host rules (what a mount would show)."""
    from appimg.host.profile_dirs import profile_overridden

    profile = manifest.get("profile", "none")
    if profile == "none" and not manifest.get("host") and not profile_overridden(profile, dirs):
        # Nothing to decide: skip loading the policy (inspect must start fast).
        return {"profile": "none", "rules": [], "problems": []}
    from appimg.host.app_rules import host_rules

    return host_rules(manifest, dirs).to_json()


def cmd_inspect(args: argparse.Namespace) -> int:
    from appimg.format.image import Image
    from appimg.format.manifest import ignored

    dirs = UserDirs.from_env(os.environ)
    with Image.open(args.file) as image:
        info = image.info()
        # Ancillary entries of a newer appimg (spec/README.md, "Feature compatibility").
        info["ignored"] = ignored(image.manifest)
        info["signatures"] = _signature_rows(image, dirs)
        info["host_rules"] = _host_rules(image.manifest, dirs)
    if args.json:
        print_json(info)
        return 0
    m = info["manifest"]
    print(f"{args.file}: appimg format {info['format_version']}, {human_size(info['size'])}")
    print(f"  app        {m['id']} {m['version']} ({m['name']}, {m['arch']})")
    print(f"  entrypoint {m['entrypoint']}")
    print(f"  profile    {m['profile']}")
    for name, target in m.get("commands", {}).items():
        print(f"  command    {name} = {target}")
    for note in info["ignored"]:
        print(f"  ignored (unknown to this appimg): {note}")
    for problem in info["host_rules"]["problems"]:
        print(f"  host       {problem}")
    for rule in info["host_rules"]["rules"]:  # the profile's and the app's, as this host decides
        why = "" if rule["status"] == "granted" else f": {rule['reason']}"
        print(f"  host       {rule['path']} -> {rule['at']} ({rule['mode']}, {rule['origin']}) "
              f"{rule['status']}{why}")  # fmt: skip
    print("  partitions")
    for part in info["partitions"]:
        print(f"    {part['name']:<17} offset {part['offset']:>10}  size {part['size']:>10}")
    v = info["verity"]
    print(f"  verity     {v['hash_algorithm']} root {v['root_hash']}")
    if not info["signatures"]:
        print("  signatures none (unsigned)")
    for sig in info["signatures"]:
        state = "valid" if sig["valid"] else "INVALID"
        trust = ", trusted" if sig["trusted"] else ""
        print(f"  signature  {sig['key_id']} ({state}{trust})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from appimg.format import keys
    from appimg.services.verify import verify

    required = {keys.key_id(keys.load_public(path)) for path in args.key}
    started = time.monotonic()
    bar = ProgressBar("verifying")
    try:
        report = verify(
            args.file,
            UserDirs.from_env(os.environ),
            full=args.full,
            required_key_ids=required,
            progress=bar,
        )
    finally:
        bar.finish()
    if args.json:
        print_json({
            "ok": True,
            "file": str(args.file),
            **report.to_json(),
            "seconds": round(time.monotonic() - started, 4),
        })  # fmt: skip
        return 0
    print("ok  structure    GPT, statement, manifest digest, verity superblock")
    print(f"ok  verity-tree  root {report.root_hash}")
    if report.full:
        print(f"ok  payload      {report.data_blocks} blocks")
    else:
        print("--  payload      not read (use --full)")
    for sig in report.signatures:
        trust = "trusted" if sig.trusted else "not in the trust store"
        print(f"ok  signature    {sig.key_id} ({trust})")
    if not report.signatures:
        print("--  signature    none (unsigned image)")
    print(f"{args.file}: verified")
    return 0


KIND_BITS = {
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "socket": stat.S_IFSOCK,
}


def _entry_json(path: str, inode: Any, reader: Any) -> dict[str, Any]:
    row = {
        "path": path,
        "type": inode.kind,
        "mode": stat.S_IMODE(inode.mode),
        "size": inode.size,
        "nlink": inode.nlink,
        "mtime": inode.mtime,
        "uid": inode.uid,
        "gid": inode.gid,
    }
    if inode.is_symlink():
        row["target"] = reader.readlink(inode)
    return row


def cmd_ls(args: argparse.Namespace) -> int:
    from appimg.errors import FormatError
    from appimg.format.image import Image
    from appimg.format.payload.paths import resolve

    with Image.open(args.file) as image:
        reader = image.payload
        top = resolve(reader, args.path)
        base = "/" + "/".join(p for p in args.path.split("/") if p)
        rows = []

        def visit(directory: Any, prefix: str) -> None:
            # Iterative (an explicit stack), so a deep tree cannot exhaust the
            # interpreter's stack; a directory met twice is a loop in the image.
            seen = {directory.ref}
            stack = [(prefix, reader.iterdir(directory))]
            while stack:
                parent, entries = stack[-1]
                for name, inode in entries:
                    path = f"{parent.rstrip('/')}/{name}"
                    rows.append(_entry_json(path, inode, reader))
                    if args.recursive and inode.is_dir():
                        if inode.ref in seen:
                            raise FormatError(f"{path}: directory loop in the image")
                        seen.add(inode.ref)
                        stack.append((path, reader.iterdir(inode)))
                        break
                else:
                    stack.pop()

        if top.is_dir():
            visit(top, base)
        else:
            rows.append(_entry_json(base, top, reader))
    if args.json:
        print_json(rows)
        return 0
    out = sys.stdout
    for row in rows:
        mode = stat.filemode(KIND_BITS.get(row["type"], stat.S_IFREG) | row["mode"])
        name = row["path"] if args.recursive else row["path"].rsplit("/", 1)[-1]
        line = f"{mode} {row['nlink']:>3} {row['size']:>10} {shell_quote_name(name)}"
        if "target" in row:
            line += f" -> {shell_quote_name(row['target'])}"
        out.write(line + "\n")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    from appimg.format.image import Image
    from appimg.format.payload.paths import resolve

    with Image.open(args.file) as image:
        reader = image.payload
        inode = resolve(reader, args.path)
        if inode.is_dir():
            raise UsageError(f"{args.path}: is a directory")
        if not inode.is_file():
            raise UsageError(f"{args.path}: not a regular file")
        out = sys.stdout.buffer
        offset = 0
        while offset < inode.size:
            chunk = reader.read(inode, offset, min(1 << 20, inode.size - offset))
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)
        out.flush()
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from appimg.format.extract import extract
    from appimg.format.image import Image

    with Image.open(args.file) as image:
        bar = ProgressBar("extracting")
        try:
            extract(image.payload, args.dir, args.paths, bar)
        finally:
            bar.finish()
    return 0
