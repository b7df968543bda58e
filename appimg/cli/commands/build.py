"""Commands that make images: init, pack, keygen, sign (declared in :mod:`appimg.cli.commands`)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appimg.cli import options
from appimg.cli.output import human_size, print_json
from appimg.cli.progress import ProgressBar
from appimg.errors import FormatError, UsageError
from appimg.format.payload import options as payload_options

if TYPE_CHECKING:
    from appimg.cli.commands import Subcommands

# Heavy modules (construct, cryptography) are imported inside the commands so that
# every `appimg` invocation starts fast.


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([kKmM]?)(i?[bB])?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 131072, 128K, 1M)")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


def add_init(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description=(
            "Write a commented appimg.toml template into DIR (created if missing). With "
            "--from SOURCE (a .deb, a type 2 AppImage or an installed tree such as a `make "
            "install DESTDIR=` result), copy the program into DIR (which must be new or "
            "empty) and write an "
            "appimg.toml that packs and runs without edits: id, entry point, profile and "
            "permissions guessed from its desktop entry, metainfo and ELF headers, its "
            "desktop files and icons renamed to the app id. Each decision is printed."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing appimg.toml")
    p.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="SOURCE",
        help="a Debian package (.deb), a type 2 AppImage or a directory holding an installed tree",
    )
    p.add_argument("--id", dest="app_id", metavar="ID", help="the app id (with --from)")
    p.add_argument("--name", metavar="NAME", help="the app's name (with --from)")
    p.add_argument("--version", metavar="VERSION", help="the app's version (with --from)")
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_init)


def add_pack(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description=(
            "Pack DIR (which holds appimg.toml) into one image: the files as a SquashFS "
            "payload written by squashfs-tools-ng, the manifest, a dm-verity hash tree and "
            "a signed statement. Same tree, SOURCE_DATE_EPOCH and keys give the same bytes."
        ),
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="image to write (default: NAME-VERSION-ARCH.appimg here)",
    )
    p.add_argument(
        "--compression",
        default=payload_options.DEFAULT_COMPRESSOR,
        choices=payload_options.COMPRESSORS,
        help="payload compressor (default: zstd)",
    )
    p.add_argument(
        "--level",
        type=int,
        metavar="N",
        help="compression level (zstd 1-22, default 15; xz 0-9, default 6; "
        "gzip 1-9, default 9; lz4: 1 fast, >1 high compression)",
    )
    p.add_argument(
        "--block-size",
        type=parse_size,
        default=payload_options.DEFAULT_BLOCK_SIZE,
        metavar="SIZE",
        help="SquashFS block size, 4K to 1M (default: 128K)",
    )
    p.add_argument(
        "-j", "--jobs", type=int, metavar="N", help="compressor threads (default: number of CPUs)"
    )
    p.add_argument(
        "--sign",
        action="append",
        type=Path,
        default=[],
        metavar="KEYFILE",
        help="sign with this private key (repeatable)",
    )
    p.add_argument(
        "--warn",
        action="store_true",
        help="pack even what install or run would refuse (a desktop file or icon, an unknown "
        "profile, a dynamically linked entry point under profile none), reporting it",
    )
    options.JSON.add_to(p)
    p.set_defaults(func=cmd_pack)


def add_keygen(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Write a new Ed25519 private key to KEY (mode 0600) and its public key "
        "to KEY.pub.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="KEY")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_keygen)


def add_sign(commands: Subcommands, name: str, summary: str) -> None:
    p = commands.add_parser(
        name,
        help=summary,
        description="Add a signature by KEY to FILE, in place. The statement it signs binds "
        "the partition table, the manifest and the verity root hash.",
    )
    options.image_file(p)
    p.add_argument("--key", action="append", type=Path, required=True, metavar="KEY",
                   help="private key file (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_sign)


def cmd_init(args: argparse.Namespace) -> int:
    from appimg.format.manifest import AUTHORING_FILE, template

    if args.source is not None:
        return _init_from(args)
    for flag, value in (("--id", args.app_id), ("--name", args.name),
                        ("--version", args.version), ("--json", args.json)):  # fmt: skip
        if value:
            raise UsageError(f"{flag} is only for init --from SOURCE")

    target = args.dir / AUTHORING_FILE
    if target.exists() and not args.force:
        raise UsageError(f"{target}: already exists (use --force to overwrite)")
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        target.write_text(template(args.dir))
    except OSError as exc:
        raise UsageError(f"{exc.filename}: {exc.strerror}") from None
    print(f"wrote {target}")
    return 0


def _init_from(args: argparse.Namespace) -> int:
    from appimg.services.authoring.init_from import init_from

    if args.force:
        raise UsageError("--force does not apply to --from: DIR must be new or empty")
    result = init_from(args.dir, args.source, app_id=args.app_id, name=args.name,
                       version=args.version)  # fmt: skip
    if args.json:
        print_json({
            "dir": str(result.directory),
            "manifest": result.manifest,
            "decisions": [{"key": d.key, "value": d.value, "why": d.why}
                          for d in result.decisions],
        })  # fmt: skip
        return 0
    for d in result.decisions:
        if d.key == "note":
            print(f"  note: {d.why}")
        elif d.key in ("network",):
            print(f"  {d.key}: {d.why}")
        else:
            value = d.value if isinstance(d.value, str) else _short(d.value)
            print(f"  {d.key}: {value} ({d.why})")
    print(f"wrote {args.dir / 'appimg.toml'}; next: appimg pack {args.dir}")
    return 0


def _short(value: object) -> str:
    if isinstance(value, dict):
        parts = [f"{k} = {v}" for k, v in value.items()]
        return ", ".join(parts) or "none"
    return str(value)


def default_output(app_dir: Path) -> Path:
    from appimg.format.manifest import compile_manifest

    manifest = compile_manifest(app_dir)
    stem = f"{manifest['name']}-{manifest['version']}-{manifest['arch']}"
    return Path(re.sub(r"[^A-Za-z0-9._+-]+", "_", stem) + ".appimg")


def cmd_pack(args: argparse.Namespace) -> int:
    from appimg.format import keys, packer

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    signing = [keys.load_private(path) for path in args.sign]
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir}: not a directory")
    output = args.output or default_output(args.dir)
    findings = _pre_checks(args.dir)

    def check(image: Path) -> None:
        from appimg.services.authoring.checks import check_image

        findings.extend(check_image(image))
        errors = [f for f in findings if f.level == "error"]
        if errors and not args.warn:
            _report(findings)
            raise FormatError(
                f"{args.dir}: {len(errors)} problem(s) that appimg install or run would "
                "refuse; nothing written (or pack with --warn)"
            )

    options = packer.PackOptions(
        compressor=args.compression,
        level=args.level,
        block_size=args.block_size,
        jobs=args.jobs,
        signing_keys=signing,
    )
    bar = ProgressBar("packing")
    try:
        result = packer.pack(args.dir, output, options, dict(os.environ), bar, check)
    finally:
        bar.finish()
    if not args.json:
        _report(findings)
    if args.json:
        print_json({
            "output": str(result.output),
            "size": result.size,
            "payload_size": result.payload_size,
            "root_hash": result.root_hash,
            "signatures": result.key_ids,
            "manifest": result.manifest,
            "checks": [{"level": f.level, "message": f.message} for f in findings],
        })  # fmt: skip
    else:
        signed = f"signed by {', '.join(result.key_ids)}" if result.key_ids else "unsigned"
        print(f"wrote {output} ({human_size(result.size)}, {signed})")
    return 0


def _pre_checks(app_dir: Path) -> list:
    """What pack checks before packing (spec/manifest.md §8); the export rules follow
    on the packed image."""
    from appimg.format.manifest import compile_manifest
    from appimg.host.dirs import UserDirs
    from appimg.services.authoring.checks import check_tree

    return check_tree(app_dir, compile_manifest(app_dir), UserDirs.from_env(os.environ))


def _report(findings: list) -> None:
    for finding in findings:
        print(f"pack: {finding.level}: {finding.message}", file=sys.stderr)


def cmd_keygen(args: argparse.Namespace) -> int:
    from appimg.format import keys

    key = keys.generate(args.output, force=args.force)
    print(f"wrote {args.output} and {args.output}.pub (key id {keys.key_id(key.public_key())})")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from appimg.format import keys
    from appimg.format.image import Image
    from appimg.format.statement import SignatureBlock

    signing = [keys.load_private(path) for path in args.key]
    with Image.open(args.file) as image:
        block: SignatureBlock = image.signature_block
        part = image.partition("appimg-signature")
        for key in signing:
            kid = keys.key_id(key.public_key())
            block.signatures = [s for s in block.signatures if s.get("key_id") != kid]
            block.signatures.append(keys.sign(key, block.message))
        encoded = block.encode()
    try:
        fd = os.open(args.file, os.O_WRONLY)
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from None
    try:
        if os.pwrite(fd, encoded, part.offset) != len(encoded):
            raise FormatError(f"{args.file}: short write")
        os.fsync(fd)
    finally:
        os.close(fd)
    ids = ", ".join(keys.key_id(k.public_key()) for k in signing)
    print(f"signed {args.file} with {ids}")
    return 0
