"""Generate the format v1 conformance suite, spec/conformance/ (spec/format.md §11).

``python -m tools.conformance [OUT]`` (default ``spec/conformance``) writes:

* ``valid/*.appimg``: images of every kind v1 allows (each compressor, block
  sizes, verity parameter ranges, 0, 1 and 64 signatures, the largest manifest,
  an empty payload, unusual but legal names);
* ``invalid/*.appimg``: one rule of §3.3 or §11 broken per image, with CRCs,
  digests and signatures made consistent around it so that only that rule fails;
* ``keys/``: the signing keys, derived from fixed seeds (test keys, never trust them);
* ``index.json``: per image what it tests and the expected verdict, error class
  and exit status (spec/errors.md), and the key ids that sign it.

Images are assembled here rather than by ``appimg pack`` so that every layer can
be changed before the layers above it are sealed: the payload is written by the
packer's own SquashFS writer, then the verity tree, the GPT, the statement and
the signatures are built with the library's functions, with a hook between each
step. The output is deterministic: fixed keys, salts, SOURCE_DATE_EPOCH and
file modes, and the same squashfs-tools-ng give the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appimg.format import canonical, keys
from appimg.format.container import gpt
from appimg.format.container.partitions import MANIFEST, PAYLOAD, SIGNATURE, VERITY
from appimg.format.limits import MAX_MANIFEST_BYTES, SIGNATURE_PARTITION_SIZE
from appimg.format.packer import derived_uuid
from appimg.format.payload.writer import write_payload
from appimg.format.statement import build_statement
from appimg.format.verity.hashtree import VerityParams, build_hash_tree

ROOT = Path(__file__).resolve().parent.parent
EPOCH = 1700000000  # SOURCE_DATE_EPOCH of every payload
KEY_COUNT = 64
EXIT = {"FormatError": 3, "IntegrityError": 4, "SignatureError": 5}

BASE_MANIFEST: dict[str, Any] = {
    "format_version": 1,
    "id": "org.example.Conformance",
    "name": "Conformance",
    "version": "1.0",
    "arch": "x86_64",
    "entrypoint": "bin/app",
    "profile": "none",
}


# --- keys ----------------------------------------------------------------------------------


def signing_key(index: int) -> Ed25519PrivateKey:
    """Key ``index`` of the suite: a fixed seed, so the suite is reproducible."""
    seed = hashlib.sha256(b"appimg-conformance-key\0%d" % index).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def key_file(index: int) -> str:
    return f"keys/key-{index:02d}.pub"


def write_keys(out: Path) -> None:
    (out / "keys").mkdir(parents=True)
    for index in range(KEY_COUNT):
        key = signing_key(index)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (out / f"keys/key-{index:02d}.pem").write_bytes(private)
        (out / key_file(index)).write_bytes(keys.public_pem(key.public_key()))


# --- payload trees -------------------------------------------------------------------------


def _noise(size: int, seed: bytes) -> bytes:
    """Incompressible but reproducible bytes."""
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


def _file(root: Path, rel: str | bytes, data: bytes, mode: int = 0o644) -> None:
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(rel))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def tree_basic(root: Path) -> None:
    _file(root, "bin/app", b"#!/bin/sh\necho conformance\n", 0o755)
    _file(root, "share/doc/README", b"A conformance test image.\n")


def tree_blocks(root: Path) -> None:
    """Several data blocks at 4 KiB and a fragment: exercises the block lists."""
    tree_basic(root)
    _file(root, "share/data.bin", _noise(5 * 4096 + 1000, b"blocks"))


def tree_large(root: Path) -> None:
    """About 40 KiB of incompressible data: several verity blocks, multi-level trees."""
    tree_basic(root)
    _file(root, "share/data.bin", _noise(40 * 1024, b"large"))


def tree_empty(root: Path) -> None:
    pass


def tree_names(root: Path) -> None:
    tree_basic(root)
    names: list[str | bytes] = [
        "with space",
        "-starts-with-dash",
        ".hidden",
        "...",
        "名前.txt",
        "emoji-\U0001f600",
        "line\nbreak",
        "tab\tand\\backslash",
        "a" * 255,
        b"latin1-\xe9\xff",  # not UTF-8: stored byte for byte
    ]
    for name in names:
        _file(root, os.path.join(b"names", os.fsencode(name)), b"x\n")
    os.symlink("../bin/app", root / "names/link")
    os.symlink("a" * 255, root / "names/long-target")
    os.mkfifo(root / "names/fifo", 0o600)


TREES: dict[str, Callable[[Path], None]] = {
    "basic": tree_basic,
    "blocks": tree_blocks,
    "large": tree_large,
    "empty": tree_empty,
    "names": tree_names,
}


class Payloads:
    """SquashFS payloads written by the packer's writer, cached by (tree, compressor, block)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cache: dict[tuple[str, str, int], bytes] = {}

    def get(self, tree: str, compressor: str, block_size: int) -> bytes:
        key = (tree, compressor, block_size)
        if key not in self.cache:
            src = self.tmp / f"{tree}-{compressor}-{block_size}"
            src.mkdir()
            TREES[tree](src)
            for path in [src, *src.rglob("*")]:
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, 0o755)
            out = self.tmp / f"{tree}-{compressor}-{block_size}.sqfs"
            write_payload(
                src, out, compressor=compressor, block_size=block_size, jobs=1, mtime=EPOCH
            )
            self.cache[key] = out.read_bytes()
        return self.cache[key]


# --- the GPT, editable ---------------------------------------------------------------------

#: GPT header field -> (offset, struct format) (spec/format.md §3.1).
HEADER_FIELDS = {
    "signature": (0, "8s"), "revision": (8, "<I"), "header_size": (12, "<I"),
    "header_crc32": (16, "<I"), "reserved": (20, "<I"), "my_lba": (24, "<Q"),
    "alternate_lba": (32, "<Q"), "first_usable_lba": (40, "<Q"), "last_usable_lba": (48, "<Q"),
    "disk_guid": (56, "16s"), "partition_entry_lba": (72, "<Q"),
    "number_of_partition_entries": (80, "<I"), "size_of_partition_entry": (84, "<I"),
    "partition_entry_array_crc32": (88, "<I"),
}  # fmt: skip
#: GPT entry field -> (offset, struct format) (spec/format.md §3.2).
ENTRY_FIELDS = {
    "type_guid": (0, "16s"), "uuid": (16, "16s"), "starting_lba": (32, "<Q"),
    "ending_lba": (40, "<Q"), "attributes": (48, "<Q"), "name": (56, "72s"),
}  # fmt: skip
ARRAY = gpt.ENTRY_ARRAY_SIZE


class Gpt:
    """The head and tail of an image as bytes, with field setters; :meth:`seal` fixes CRCs."""

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = bytearray(head)
        self.tail = bytearray(tail)

    def _header_at(self, which: str) -> tuple[bytearray, int]:
        return (self.head, 512) if which == "primary" else (self.tail, len(self.tail) - 512)

    def _array_at(self, which: str) -> tuple[bytearray, int]:
        if which == "primary":
            return self.head, 1024
        return self.tail, len(self.tail) - 512 - ARRAY

    def header(self, which: str, **fields: Any) -> None:
        buf, base = self._header_at(which)
        for name, value in fields.items():
            offset, fmt = HEADER_FIELDS[name]
            struct.pack_into(fmt, buf, base + offset, value)

    def get_header(self, which: str, name: str) -> Any:
        buf, base = self._header_at(which)
        offset, fmt = HEADER_FIELDS[name]
        return struct.unpack_from(fmt, buf, base + offset)[0]

    def entry(self, index: int, which: tuple[str, ...] = ("primary", "backup"), **fields: Any):
        for side in which:
            buf, base = self._array_at(side)
            for name, value in fields.items():
                offset, fmt = ENTRY_FIELDS[name]
                struct.pack_into(fmt, buf, base + index * 128 + offset, value)

    def get_entry(self, index: int, name: str) -> Any:
        buf, base = self._array_at("primary")
        offset, fmt = ENTRY_FIELDS[name]
        return struct.unpack_from(fmt, buf, base + index * 128 + offset)[0]

    def array(self, which: str) -> bytearray:
        buf, base = self._array_at(which)
        return buf[base : base + ARRAY]

    def seal(self) -> None:
        """Recompute both array CRCs and both header CRCs, as a writer would."""
        for which in ("primary", "backup"):
            self.header(which, partition_entry_array_crc32=zlib.crc32(self.array(which)))
        self.seal_headers()

    def seal_headers(self) -> None:
        for which in ("primary", "backup"):
            self.header(which, header_crc32=0)
            buf, base = self._header_at(which)
            self.header(which, header_crc32=zlib.crc32(buf[base : base + 92]))


# --- building an image ---------------------------------------------------------------------


@dataclass
class Case:
    """One image of the suite and what a reader must say about it."""

    name: str
    tests: str  # spec section / check
    description: str
    error: str | None = None  # None: valid
    #: Which reader step detects the error: "open" (§11.1: inspect and verify fail),
    #: "tree" (§11.2: verify), "full" (§11.3: only verify --full), "signatures" (§11.5:
    #: verify fails, inspect reports the entry invalid).
    detected_by: str = "open"
    issue: bool = False  # an item of issue 15: the verdict is the one the issue asks for
    inspect_specified: bool = True  # False: the issue leaves inspect's verdict open
    # Inputs
    manifest: dict[str, Any] = field(default_factory=lambda: dict(BASE_MANIFEST))
    manifest_json: bytes | None = None
    tree: str = "basic"
    compressor: str = "zstd"
    block_size: int = 131072
    payload_align: int = 4096
    hash_algorithm: str = "sha256"
    data_block_size: int = 4096
    hash_block_size: int = 4096
    salt: bytes | None = None  # None: derived from the manifest (§14)
    signers: tuple[int, ...] = (0,)
    # Hooks, in the order they run
    payload_hook: Callable[[bytearray], None] | None = None
    #: May return a new root hash (after re-hashing a changed tree).
    verity_hook: Callable[[bytearray, VerityParams], bytes | None] | None = None
    sizes_hook: Callable[[dict[str, int]], None] | None = None
    gpt_hook: Callable[[Gpt], None] | None = None  # then the CRCs are sealed
    gpt_after_seal: Callable[[Gpt], None] | None = None
    statement_hook: Callable[[dict[str, Any]], None] | None = None  # before signing
    signatures_hook: Callable[[list[dict[str, str]], bytes], None] | None = None
    block_hook: Callable[[dict[str, Any]], bytes] | None = None  # the block's JSON bytes
    file_hook: Callable[[bytearray, gpt.DiskLayout], None] | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def file(self) -> str:
        return f"{'valid' if self.valid else 'invalid'}/{self.name}.appimg"


def build(case: Case, payloads: Payloads) -> bytes:
    manifest_json = case.manifest_json
    if manifest_json is None:
        manifest_json = canonical.dumps(case.manifest)
    payload = bytearray(payloads.get(case.tree, case.compressor, case.block_size))
    payload += bytes(-len(payload) % case.payload_align)
    if case.payload_hook:
        case.payload_hook(payload)

    salt = case.salt
    if salt is None:
        salt = hashlib.sha256(b"appimg-verity-salt\0" + manifest_json).digest()
    verity_raw, params = build_hash_tree(
        [bytes(payload)],
        len(payload) // case.data_block_size,
        salt,
        derived_uuid(b"verity", salt).bytes,
        hash_algorithm=case.hash_algorithm,
        data_block_size=case.data_block_size,
        hash_block_size=case.hash_block_size,
    )
    verity = bytearray(verity_raw)
    verity += bytes(-len(verity) % gpt.ALIGNMENT)
    if case.verity_hook and (root := case.verity_hook(verity, params)):
        params = VerityParams.from_json({**params.to_json(), "root_hash": root.hex()})

    sizes = {
        MANIFEST: gpt.align(len(manifest_json)),
        PAYLOAD: len(payload),
        VERITY: len(verity),
        SIGNATURE: SIGNATURE_PARTITION_SIZE,
    }
    if case.sizes_hook:
        case.sizes_hook(sizes)
    seed = (manifest_json, params.root_hash)
    layout = gpt.plan(
        sizes,
        {name: derived_uuid(name.encode(), *seed) for name in gpt.ORDER},
        derived_uuid(b"disk", *seed),
    )
    table = Gpt(gpt.head_bytes(layout), gpt.tail_bytes(layout))
    if case.gpt_hook:
        case.gpt_hook(table)
        table.seal()
    if case.gpt_after_seal:
        case.gpt_after_seal(table)
    head, tail = bytes(table.head), bytes(table.tail)

    statement = build_statement(layout, head, tail, manifest_json, case.manifest, params)
    file_size = len(head) + sum(sizes.values()) + len(tail)  # a hook may have grown the tail
    statement["disk"]["size"] = file_size
    if case.statement_hook:
        case.statement_hook(statement)
    message = canonical.dumps(statement)
    signatures = [keys.sign(signing_key(i), message) for i in case.signers]
    if case.signatures_hook:
        case.signatures_hook(signatures, message)
    block = {"signatures": signatures, "statement": statement}
    body = case.block_hook(block) if case.block_hook else canonical.dumps(block)
    assert len(body) <= sizes[SIGNATURE], case.name

    image = bytearray(head)
    image += manifest_json.ljust(sizes[MANIFEST], b"\0")
    image += payload.ljust(sizes[PAYLOAD], b"\0")
    image += verity.ljust(sizes[VERITY], b"\0")
    image += body.ljust(sizes[SIGNATURE], b"\0")
    image += tail
    assert len(image) == file_size, case.name
    if case.file_hook:
        case.file_hook(image, layout)
    return bytes(image)


# --- small hook makers ---------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A statement hook that sets ``path`` (dotted, list indexes as numbers) to ``value``."""

    def hook(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return hook


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def hook(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[part]
        del target[last]

    return hook


def _edit(**hooks: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def hook(obj: dict[str, Any]) -> None:
        for one in hooks.values():
            one(obj)

    return hook


def _bytes_at(offset: int, data: bytes) -> Callable[[bytearray, Any], None]:
    def hook(buf: bytearray, _: Any) -> None:
        buf[offset : offset + len(data)] = data

    return hook


def _in_partition(name: str, offset: int, data: bytes) -> Callable[[bytearray, Any], None]:
    """A file hook writing ``data`` at ``offset`` in partition ``name`` (negative: from its end)."""

    def hook(image: bytearray, layout: gpt.DiskLayout) -> None:
        part = layout.by_name(name)
        at = (part.offset if offset >= 0 else part.end) + offset
        image[at : at + len(data)] = data

    return hook


def _head(offset: int, data: bytes) -> Callable[[Gpt], None]:
    def hook(table: Gpt) -> None:
        table.head[offset : offset + len(data)] = data

    return hook


def _tail(offset: int, data: bytes) -> Callable[[Gpt], None]:
    def hook(table: Gpt) -> None:
        table.tail[offset : offset + len(data)] = data

    return hook


def _header(which: str, **fields: Any) -> Callable[[Gpt], None]:
    def hook(table: Gpt) -> None:
        table.header(which, **fields)

    return hook


def _last_lba(table: Gpt) -> int:
    return table.get_header("primary", "alternate_lba")


def _entry(index: int, which: tuple[str, ...] = ("primary", "backup"), **fields: Any):
    def hook(table: Gpt) -> None:
        resolved = {k: v(table) if callable(v) else v for k, v in fields.items()}
        table.entry(index, which, **resolved)

    return hook


def _flip_crc(which: str, name: str) -> Callable[[Gpt], None]:
    """After sealing: break one CRC, then fix the header CRC if it was the array's."""

    def hook(table: Gpt) -> None:
        table.header(which, **{name: table.get_header(which, name) ^ 1})
        if name != "header_crc32":
            table.seal_headers()

    return hook


def _rehash_level0(offset: int, data: bytes) -> Callable[[bytearray, VerityParams], bytes]:
    """Change the single level-0 block (a one-level tree) and return the new root hash."""

    def hook(verity: bytearray, params: VerityParams) -> bytes:
        block = params.hash_block_size  # level 0 follows the superblock block
        verity[block + offset : block + offset + len(data)] = data
        top = bytes(verity[block : 2 * block])
        return hashlib.new(params.hash_algorithm, params.salt + top).digest()

    return hook


def _sign_other(signatures: list[dict[str, str]], message: bytes) -> None:
    """Replace the first signature by a well-formed one over other bytes."""
    signatures[0]["signature"] = base64.b64encode(signing_key(0).sign(b"other")).decode()


def _noncanonical_block(**dumps_args: Any) -> Callable[[dict[str, Any]], bytes]:
    def hook(block: dict[str, Any]) -> bytes:
        return json.dumps(block, ensure_ascii=False, **dumps_args).encode()

    return hook


def _block_with(**members: Any) -> Callable[[dict[str, Any]], bytes]:
    def hook(block: dict[str, Any]) -> bytes:
        return canonical.dumps({**block, **members})

    return hook


def _replace_in_block(old: bytes, new: bytes) -> Callable[[dict[str, Any]], bytes]:
    def hook(block: dict[str, Any]) -> bytes:
        body = canonical.dumps(block)
        assert old in body
        return body.replace(old, new, 1)

    return hook


def _manifest_of_size(size: int) -> dict[str, Any]:
    """A valid manifest whose canonical JSON is exactly ``size`` bytes (within §13 limits)."""
    manifest = dict(BASE_MANIFEST, env={})
    base = len(canonical.dumps(manifest))
    index = 0
    while True:
        name = f"V{index:04d}"
        entry = len(f'"{name}":""') + (1 if index else 0)
        room = size - base - entry
        if room <= 0:
            raise ValueError("no room for an exact fit")
        manifest["env"][name] = "x" * min(room, 4096)
        base = len(canonical.dumps(manifest))
        if base == size:
            return manifest
        if room <= 4096:  # the last value overshot its comma arithmetic: trim it
            manifest["env"][name] = "x" * (min(room, 4096) - (base - size))
            assert len(canonical.dumps(manifest)) == size
            return manifest
        index += 1


FULL_MANIFEST: dict[str, Any] = {
    **BASE_MANIFEST,
    "summary": "Every optional member of the manifest",
    "license": "MIT",
    "homepage": "https://example.org/conformance",
    "commands": {"app": "bin/app", "other.tool-2": "bin/app"},
    "env": {"EMPTY": "", "_UNDERSCORE": "value with spaces and = signs"},
    "host": [
        {"path": "/usr/share/fonts", "at": "/usr/share/fonts", "mode": "over"},
        {"path": "/etc/ssl/certs", "at": "/etc/ssl/certs", "mode": "replace"},
        {"path": "/opt/data", "at": "/srv/data", "mode": "under"},
    ],
    "exports": {"desktop": [], "icons": [], "metainfo": [], "mime": [], "dbus": []},
    "permissions": {
        "devices": ["dri", "kvm"],
        "filesystems": ["/srv/media:ro", "xdg-config/app", "xdg-download", "~/Games:create"],
        "share": ["network"],
        "sockets": ["fallback-x11", "pulseaudio", "wayland"],
    },
}
UNICODE_MANIFEST: dict[str, Any] = {
    **BASE_MANIFEST,
    "id": "org.example." + "_Long-Element9." * 16 + "xyz",  # 255 characters
    "name": 'Ünïcödé \U0001f600 名前 \\ "quoted" /slash/ \u2028',
    "version": "1.0~rc1+git.20240101-0ubuntu1",
    "summary": "tab-free text with \u00a0non-breaking space",
}
SMALL_ORDER_PUBLIC = base64.b64encode(b"\x01" + bytes(31)).decode()  # the identity point
SMALL_ORDER_SIGNATURE = base64.b64encode(b"\x01" + bytes(31) + bytes(32)).decode()  # R=id, S=0


def _small_order(signatures: list[dict[str, str]], message: bytes) -> None:
    signatures[:] = [
        {
            "algorithm": "ed25519",
            "key_id": keys.key_id(base64.b64decode(SMALL_ORDER_PUBLIC)),
            "public_key": SMALL_ORDER_PUBLIC,
            "signature": SMALL_ORDER_SIGNATURE,
        }
    ]


def _unused_bits(signatures: list[dict[str, str]], message: bytes) -> None:
    """Set the 2 unused low bits of the public key's last base64 digit: same bytes."""
    text = signatures[0]["public_key"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(text[42])
    assert last & 3 == 0
    signatures[0]["public_key"] = text[:42] + alphabet[last | 1] + text[43:]
    assert base64.b64decode(signatures[0]["public_key"]) == base64.b64decode(text)


def _grow_tail(table: Gpt) -> None:
    """Leave 4096 unused bytes before the backup GPT, with every LBA consistent."""
    table.tail[:0] = bytes(4096)
    last = _last_lba(table) + 8
    table.header("primary", alternate_lba=last, last_usable_lba=last - 33)
    table.header(
        "backup",
        my_lba=last,
        last_usable_lba=last - 33,
        partition_entry_lba=last - 32,
    )
    struct.pack_into("<I", table.head, 446 + 12, last)  # protective record SizeInLBA


def _swap_entries(a: int, b: int) -> Callable[[Gpt], None]:
    def hook(table: Gpt) -> None:
        for which in ("primary", "backup"):
            buf, base = table._array_at(which)
            ea = bytes(buf[base + a * 128 : base + (a + 1) * 128])
            eb = bytes(buf[base + b * 128 : base + (b + 1) * 128])
            buf[base + a * 128 : base + (a + 1) * 128] = eb
            buf[base + b * 128 : base + (b + 1) * 128] = ea

    return hook


def _copy_entry(src: int, dst: int) -> Callable[[Gpt], None]:
    def hook(table: Gpt) -> None:
        for which in ("primary", "backup"):
            buf, base = table._array_at(which)
            buf[base + dst * 128 : base + (dst + 1) * 128] = buf[
                base + src * 128 : base + (src + 1) * 128
            ]

    return hook


# --- the cases -----------------------------------------------------------------------------

S33 = "format.md §3.3 check"
S11 = "format.md §11.1 check"
F, INT, SIG = "FormatError", "IntegrityError", "SignatureError"
OTHER_SHA = hashlib.sha256(b"other").hexdigest()


def valid_cases() -> list[Case]:
    v = Case
    cases = [
        v(
            "minimal",
            "format.md §1, §17",
            "The smallest image: one 4 KiB payload block (n = 1, no tree), one signature.",
        ),
        v(
            "unsigned",
            "format.md §8, §11.5",
            "No signature entry: an unsigned image is valid.",
            signers=(),
        ),
        v(
            "signatures-64",
            "format.md §8, §13.1",
            "64 signature entries by 64 keys (the limit).",
            signers=tuple(range(KEY_COUNT)),
        ),
        v(
            "payload-empty",
            "format.md §5",
            "An empty payload tree (only the root directory).",
            tree="empty",
        ),
        v(
            "names",
            "format.md §5.2, §13.3",
            "Unusual but legal names in the payload: spaces, "
            "newline, tab, backslash, non-ASCII and non-UTF-8 bytes, 255 bytes, a FIFO, "
            "symbolic links.",
            tree="names",
        ),
        v(
            "manifest-full",
            "manifest.md §6",
            "Every optional member of the manifest.",
            manifest=FULL_MANIFEST,
        ),
        v(
            "manifest-unknown-key",
            "README.md §Feature compatibility, manifest.md §6",
            "An unknown top-level member (ancillary): accepted and ignored.",
            manifest=dict(BASE_MANIFEST, color="blue"),
        ),
        v(
            "manifest-permissions-unknown",
            "README.md §Feature compatibility, manifest.md §6",
            "permissions with a socket name and a key this reader does not know "
            "(ancillary): accepted, they grant nothing and are ignored.",
            manifest=dict(
                BASE_MANIFEST,
                permissions={"session-bus": ["org.example.Bus"], "sockets": ["foo", "x11"]},
            ),
        ),
        v(
            "manifest-requires-empty",
            "README.md §Feature compatibility, manifest.md §6",
            "An empty requires list: no critical feature.",
            manifest=dict(BASE_MANIFEST, requires=[]),
        ),
        v(
            "manifest-unicode",
            "manifest.md §2, format.md §10",
            "An app id of the maximum "
            "length, non-ASCII and escaped characters in the manifest's strings.",
            manifest=UNICODE_MANIFEST,
        ),
        v(
            "manifest-largest",
            "format.md §6, §13.1",
            "A manifest of exactly 262144 bytes.",
            manifest=_manifest_of_size(MAX_MANIFEST_BYTES),
        ),
    ]
    for comp in ("zstd", "xz", "lz4", "gzip"):
        cases.append(
            v(
                f"compressor-{comp}",
                "format.md §5.1",
                f"Payload compressed with {comp}; several data blocks and a fragment.",
                tree="blocks",
                compressor=comp,
            )
        )
    for size, label in ((4096, "4k"), (65536, "64k"), (1 << 20, "1m")):
        cases.append(
            v(
                f"block-size-{label}",
                "format.md §5.1",
                f"SquashFS block size {size}.",
                tree="blocks",
                block_size=size,
            )
        )
    cases += [
        v(
            "verity-sha1",
            "format.md §7.1",
            "Verity hash sha1 (20-byte digests in 32-byte slots).",
            tree="large",
            hash_algorithm="sha1",
        ),
        v(
            "verity-sha512",
            "format.md §7.1",
            "Verity hash sha512 (64-byte slots).",
            tree="large",
            hash_algorithm="sha512",
        ),
        v(
            "verity-data-block-512",
            "format.md §7.1",
            "Data blocks of 512 bytes.",
            tree="large",
            data_block_size=512,
        ),
        v(
            "verity-data-block-65536",
            "format.md §5.1, §7.1",
            "Data blocks of 65536 bytes; "
            "the payload is padded to 64 KiB so that the tree covers it exactly (issue: "
            "§5.1 says the payload is padded to 4096).",
            data_block_size=65536,
            payload_align=65536,
            issue=True,
        ),
        v(
            "verity-hash-block-512",
            "format.md §7.1",
            "Hash blocks of 512 bytes.",
            tree="large",
            hash_block_size=512,
        ),
        v(
            "verity-hash-block-65536",
            "format.md §7.1",
            "Hash blocks of 65536 bytes.",
            tree="large",
            hash_block_size=65536,
        ),
        v(
            "verity-levels-3",
            "format.md §7.3",
            "A three-level tree: sha512, 512-byte data and hash blocks (8 slots per block).",
            tree="large",
            hash_algorithm="sha512",
            data_block_size=512,
            hash_block_size=512,
        ),
        v("verity-salt-empty", "format.md §7.1", "An empty salt.", salt=b""),
        v("verity-salt-1", "format.md §7.1", "A one-byte salt.", salt=b"\x5a", tree="large"),
        v(
            "verity-salt-256",
            "format.md §7.1",
            "A salt of 256 bytes (the limit).",
            salt=_noise(256, b"salt"),
            tree="large",
        ),
    ]
    return cases


def invalid_cases() -> list[Case]:
    def bad(name: str, tests: str, error: str, description: str, **kw: Any) -> Case:
        return Case(name, tests, description, error=error, **kw)

    cases = [
        # §3.3: the container
        bad(
            "file-size-unaligned",
            f"{S33} 1",
            F,
            "512 bytes appended: the size is not a multiple of 4096.",
            file_hook=lambda img, _: img.extend(bytes(512)),
        ),
        bad(
            "file-too-small",
            f"{S33} 1",
            F,
            "Only the first 32768 bytes of an image.",
            file_hook=lambda img, _: img.__delitem__(slice(32768, None)),
        ),
        bad(
            "mbr-signature",
            f"{S33} 2",
            F,
            "Sector 0 does not end in 55 AA.",
            gpt_hook=_head(510, b"\x55\xab"),
        ),
        bad(
            "mbr-no-stub",
            f"{S33} 2",
            F,
            "The boot code does not start with '#!/bin/sh\\n'.",
            gpt_hook=_head(0, b"#!/bin/bash\n"),
        ),
        bad(
            "mbr-os-type",
            f"{S33} 2",
            F,
            "Partition record 0 has OSType 0xEF, not 0xEE.",
            gpt_hook=_head(446 + 4, b"\xef"),
        ),
        bad(
            "gpt-primary-signature",
            f"{S33} 3",
            F,
            "Primary header signature 'EFI PARX'.",
            gpt_hook=_header("primary", signature=b"EFI PARX"),
        ),
        bad(
            "gpt-primary-header-size",
            f"{S33} 3",
            F,
            "Primary HeaderSize 96.",
            gpt_hook=_header("primary", header_size=96),
        ),
        bad(
            "gpt-primary-header-crc",
            f"{S33} 3",
            F,
            "Primary HeaderCRC32 wrong.",
            gpt_after_seal=_flip_crc("primary", "header_crc32"),
        ),
        bad(
            "gpt-primary-revision",
            f"{S33} 3",
            F,
            "Primary Revision 0x00010001.",
            gpt_hook=_header("primary", revision=0x00010001),
        ),
        bad(
            "gpt-primary-entry-count",
            f"{S33} 3",
            F,
            "Primary NumberOfPartitionEntries 127.",
            gpt_hook=_header("primary", number_of_partition_entries=127),
        ),
        bad(
            "gpt-primary-entry-size",
            f"{S33} 3",
            F,
            "Primary SizeOfPartitionEntry 256.",
            gpt_hook=_header("primary", size_of_partition_entry=256),
        ),
        bad(
            "gpt-primary-sector-padding",
            f"{S33} 3",
            F,
            "A non-zero byte in bytes 92-511 of the primary header sector.",
            gpt_hook=_head(512 + 200, b"\x01"),
        ),
        bad(
            "gpt-primary-my-lba",
            f"{S33} 4",
            F,
            "Primary MyLBA 2.",
            gpt_hook=_header("primary", my_lba=2),
        ),
        bad(
            "gpt-primary-entry-lba",
            f"{S33} 4",
            F,
            "Primary PartitionEntryLBA 3.",
            gpt_hook=_header("primary", partition_entry_lba=3),
        ),
        bad(
            "gpt-primary-alternate-lba",
            f"{S33} 4",
            F,
            "Primary AlternateLBA N - 2.",
            gpt_hook=lambda t: t.header("primary", alternate_lba=_last_lba(t) - 1),
        ),
        bad(
            "gpt-primary-array-crc",
            f"{S33} 5",
            F,
            "Primary PartitionEntryArrayCRC32 wrong (header CRC correct).",
            gpt_after_seal=_flip_crc("primary", "partition_entry_array_crc32"),
        ),
        bad(
            "gpt-backup-signature",
            f"{S33} 6",
            F,
            "Backup header signature 'EFI PARX'.",
            gpt_hook=_header("backup", signature=b"EFI PARX"),
        ),
        bad(
            "gpt-backup-header-crc",
            f"{S33} 6",
            F,
            "Backup HeaderCRC32 wrong.",
            gpt_after_seal=_flip_crc("backup", "header_crc32"),
        ),
        bad(
            "gpt-backup-array-crc",
            f"{S33} 7",
            F,
            "Backup PartitionEntryArrayCRC32 wrong (header CRC correct).",
            gpt_after_seal=_flip_crc("backup", "partition_entry_array_crc32"),
        ),
        bad(
            "gpt-backup-array-differs",
            f"{S33} 8",
            F,
            "The backup array differs from the "
            "primary one (entry 0's unique GUID), both with correct CRCs.",
            gpt_hook=_entry(0, ("backup",), uuid=bytes(range(16))),
        ),
        bad(
            "gpt-backup-my-lba",
            f"{S33} 8",
            F,
            "Backup MyLBA N - 2.",
            gpt_hook=lambda t: t.header("backup", my_lba=_last_lba(t) - 1),
        ),
        bad(
            "gpt-backup-alternate-lba",
            f"{S33} 8",
            F,
            "Backup AlternateLBA 2.",
            gpt_hook=_header("backup", alternate_lba=2),
        ),
        bad(
            "gpt-first-usable",
            f"{S33} 9",
            F,
            "FirstUsableLBA 35 in both headers.",
            gpt_hook=lambda t: [t.header(w, first_usable_lba=35) for w in ("primary", "backup")],
        ),
        bad(
            "gpt-last-usable",
            f"{S33} 9",
            F,
            "LastUsableLBA N - 35 in both headers.",
            gpt_hook=lambda t: [
                t.header(w, last_usable_lba=_last_lba(t) - 34) for w in ("primary", "backup")
            ],
        ),
        bad(
            "gpt-last-usable-differs",
            f"{S33} 9",
            F,
            "LastUsableLBA differs between the headers.",
            gpt_hook=lambda t: t.header("backup", last_usable_lba=_last_lba(t) - 34),
        ),
        bad(
            "gpt-disk-guid-differs",
            f"{S33} 9",
            F,
            "DiskGUID differs between the headers.",
            gpt_hook=_header("backup", disk_guid=bytes(range(16))),
        ),
        bad(
            "gpt-entry-unknown-type",
            f"{S33} 10",
            F,
            "Entry 0 has an unknown type GUID.",
            gpt_hook=_entry(0, type_guid=bytes(range(16))),
        ),
        bad(
            "gpt-entry-out-of-place",
            f"{S33} 10",
            F,
            "Entries 2 and 3 swapped (the signature partition's entry at index 2).",
            gpt_hook=_swap_entries(2, 3),
        ),
        bad(
            "gpt-entry-reversed",
            f"{S33} 10",
            F,
            "Entry 3 ends before it starts.",
            gpt_hook=_entry(3, ending_lba=lambda t: t.get_entry(3, "starting_lba") - 8),
        ),
        bad(
            "gpt-entry-outside",
            f"{S33} 10",
            F,
            "Entry 3 ends after LastUsableLBA.",
            gpt_hook=_entry(3, ending_lba=lambda t: _last_lba(t) - 33 + 8),
        ),
        bad(
            "gpt-entry-unaligned",
            f"{S33} 10",
            F,
            "Entry 3 ends one sector early: not 4096-aligned.",
            gpt_hook=_entry(3, ending_lba=lambda t: t.get_entry(3, "ending_lba") - 1),
        ),
        bad(
            "gpt-entry-overlap",
            f"{S33} 10",
            F,
            "Entry 2 starts 8 sectors early, inside the payload partition.",
            gpt_hook=_entry(2, starting_lba=lambda t: t.get_entry(2, "starting_lba") - 8),
        ),
        bad(
            "gpt-entry-name",
            f"{S33} 10",
            F,
            "Entry 0 is named 'appimg-manifesx'.",
            gpt_hook=_entry(0, name="appimg-manifesx".encode("utf-16-le").ljust(72, b"\0")),
        ),
        bad(
            "gpt-missing-partition",
            f"{S33} 11",
            F,
            "Entry 3 (the signature partition) is all zero.",
            gpt_hook=_entry(
                3, **{f: 0 if "lba" in f or f == "attributes" else b"" for f in ENTRY_FIELDS}
            ),
        ),
        bad(
            "gpt-extra-partition",
            f"{S33} 10-11",
            F,
            "Entry 4 repeats entry 3: a fifth partition.",
            gpt_hook=_copy_entry(3, 4),
        ),
        bad(
            "gpt-gap-before-backup",
            "format.md §1, §3.3",
            F,
            "4096 unused bytes between "
            "the last partition and the backup array, every LBA and digest consistent: the "
            "tail is not 20480 bytes.",
            gpt_hook=_grow_tail,
        ),
        # §11.1: the statement
        bad(
            "sig-partition-size",
            f"{S11} 3",
            F,
            "The signature partition is 69632 bytes.",
            sizes_hook=lambda s: s.__setitem__(SIGNATURE, 69632),
        ),
        bad(
            "sig-trailing-bytes",
            f"{S11} 4",
            F,
            "A non-zero byte at the end of the signature partition, after the JSON.",
            file_hook=_in_partition(SIGNATURE, -1, b"\x01"),
        ),
        bad(
            "sig-json-whitespace",
            f"{S11} 4, format.md §10",
            F,
            "The signature block is JSON with white space.",
            block_hook=_noncanonical_block(sort_keys=True),
        ),
        bad(
            "sig-json-unsorted",
            f"{S11} 4, format.md §10",
            F,
            "The signature block's members are not sorted.",
            block_hook=_noncanonical_block(separators=(",", ":")),
        ),
        bad(
            "sig-json-escape",
            f"{S11} 4, format.md §10",
            F,
            "A needless escape (\\u0061) in the statement.",
            block_hook=_replace_in_block(b'"ed25519"', b'"\\u0065d25519"'),
        ),
        bad(
            "sig-json-float",
            f"{S11} 4, format.md §10",
            F,
            "format_version written 1.0.",
            block_hook=_replace_in_block(b'"format_version":1,', b'"format_version":1.0,'),
        ),
        bad(
            "sig-block-extra-member",
            f"{S11} 4",
            F,
            "The signature block has a third member.",
            block_hook=_block_with(comment="x"),
        ),
        bad(
            "sig-statement-not-object",
            f"{S11} 4",
            F,
            "statement is a string.",
            block_hook=_block_with(statement="appimg-statement"),
        ),
        bad(
            "statement-type",
            f"{S11} 4",
            F,
            "statement.type is 'appimg-statement-2'.",
            statement_hook=_set("type", "appimg-statement-2"),
        ),
        bad(
            "format-version-2",
            f"{S11} 5",
            F,
            "statement.format_version 2.",
            statement_hook=_set("format_version", 2),
        ),
        bad(
            "format-version-string",
            f"{S11} 5",
            F,
            'statement.format_version "1".',
            statement_hook=_set("format_version", "1"),
        ),
        bad(
            "format-version-bool",
            f"{S11} 5",
            F,
            "statement.format_version true.",
            statement_hook=_set("format_version", True),
        ),
        bad(
            "signatures-not-array",
            f"{S11} 6",
            F,
            "signatures is an object.",
            block_hook=_block_with(signatures={}),
        ),
        bad(
            "signatures-65",
            f"{S11} 6",
            F,
            "65 signature entries.",
            signers=tuple(range(KEY_COUNT + 1)),
        ),
        bad(
            "statement-extra-member",
            f"{S11} 7",
            F,
            "The statement has a ninth member.",
            statement_hook=_set("comment", "x"),
        ),
        bad(
            "statement-missing-member",
            f"{S11} 7",
            F,
            "The statement has no app_version.",
            statement_hook=_delete("app_version"),
        ),
        bad(
            "sig-entry-extra-member",
            f"{S11} 8",
            F,
            "A signature entry with a fifth member.",
            signatures_hook=lambda s, m: s[0].update(comment="x"),
        ),
        bad(
            "sig-entry-missing-member",
            f"{S11} 8",
            F,
            "A signature entry without key_id.",
            signatures_hook=lambda s, m: s[0].pop("key_id"),
        ),
        bad(
            "sig-entry-not-string",
            f"{S11} 8",
            F,
            "A signature entry whose key_id is a number.",
            signatures_hook=lambda s, m: s[0].update(key_id=1),
        ),
        bad(
            "sig-entry-algorithm",
            f"{S11} 8",
            F,
            "A signature entry with algorithm 'ed448'.",
            signatures_hook=lambda s, m: s[0].update(algorithm="ed448"),
        ),
        bad(
            "sig-entry-not-object",
            f"{S11} 8",
            F,
            "A signature entry that is a string.",
            signatures_hook=lambda s, m: s.__setitem__(0, "ed25519"),
        ),
        bad(
            "disk-not-object",
            f"{S11} 9",
            F,
            "statement.disk is a string.",
            statement_hook=_set("disk", "disk"),
        ),
        bad(
            "disk-size",
            f"{S11} 10",
            INT,
            "disk.size is 4096 more than the file size.",
            statement_hook=lambda st: st["disk"].update(size=st["disk"]["size"] + 4096),
        ),
        bad(
            "head-digest",
            f"{S11} 11",
            INT,
            "disk.head_sha256 is another digest.",
            statement_hook=_set("disk.head_sha256", OTHER_SHA),
        ),
        bad(
            "tail-digest",
            f"{S11} 12",
            INT,
            "disk.tail_sha256 is another digest.",
            statement_hook=_set("disk.tail_sha256", OTHER_SHA),
        ),
        bad(
            "partitions-uuid",
            f"{S11} 13",
            INT,
            "statement.partitions[1].uuid differs from the GPT.",
            statement_hook=_set("partitions.1.uuid", "00000000-0000-4000-8000-000000000000"),
        ),
        bad(
            "partitions-size",
            f"{S11} 13",
            INT,
            "statement.partitions[3].size differs from the GPT.",
            statement_hook=_set("partitions.3.size", 61440),
        ),
        bad(
            "partitions-order",
            f"{S11} 13",
            INT,
            "statement.partitions lists two partitions swapped.",
            statement_hook=lambda st: st["partitions"].reverse(),
        ),
        bad(
            "partitions-extra-member",
            f"{S11} 13",
            F,
            "A statement.partitions entry has a sixth member (an unknown member: §8.2).",
            statement_hook=_set("partitions.0.flags", 0),
        ),
        bad(
            "manifest-size-zero",
            f"{S11} 14",
            F,
            "manifest.size 0.",
            statement_hook=_set("manifest.size", 0),
        ),
        bad(
            "manifest-size-string",
            f"{S11} 14",
            F,
            "manifest.size is a string.",
            statement_hook=lambda st: st["manifest"].update(size=str(st["manifest"]["size"])),
        ),
        bad(
            "manifest-size-beyond-partition",
            f"{S11} 14",
            F,
            "manifest.size is larger than the manifest partition.",
            statement_hook=_set("manifest.size", 4097),
        ),
        bad(
            "manifest-too-large",
            f"{S11} 14, format.md §13.1",
            F,
            "A manifest of 262145 bytes (one over the limit).",
            manifest=_manifest_of_size(MAX_MANIFEST_BYTES + 1),
        ),
        bad(
            "manifest-digest",
            f"{S11} 15",
            INT,
            "manifest.sha256 is another digest.",
            statement_hook=_set("manifest.sha256", OTHER_SHA),
        ),
        bad(
            "manifest-padding",
            f"{S11} 15",
            INT,
            "A non-zero byte in the manifest partition after the JSON.",
            file_hook=_in_partition(MANIFEST, -1, b"\x01"),
        ),
        bad(
            "manifest-not-canonical",
            f"{S11} 16, format.md §10",
            F,
            "The manifest is JSON with white space (digest and size match it).",
            manifest_json=json.dumps(BASE_MANIFEST, sort_keys=True).encode(),
        ),
        bad(
            "manifest-invalid-utf8",
            f"{S11} 16, format.md §10",
            F,
            "The manifest's name contains a byte that is not UTF-8.",
            manifest_json=canonical.dumps(BASE_MANIFEST).replace(
                b'Conformance"', b'Conf\xffrmance"', 1
            ),
        ),
        bad(
            "manifest-not-object",
            f"{S11} 16",
            F,
            "The manifest is a JSON array.",
            manifest_json=b"[]",
        ),
        bad(
            "manifest-unknown-key-name",
            f"{S11} 16, manifest.md §6",
            F,
            "An unknown top-level member whose name is not a key name ('Color').",
            manifest=dict(BASE_MANIFEST, Color="blue"),
        ),
        bad(
            "manifest-requires-unknown",
            f"{S11} 16, README.md §Feature compatibility",
            F,
            "requires names a critical feature this reader does not implement.",
            manifest=dict(BASE_MANIFEST, requires=["some-feature"]),
        ),
        bad(
            "manifest-requires-type",
            f"{S11} 16, manifest.md §6",
            F,
            "requires is a string, not a list.",
            manifest=dict(BASE_MANIFEST, requires="some-feature"),
        ),
        bad(
            "manifest-permissions-type",
            f"{S11} 16, manifest.md §6",
            F,
            "permissions.sockets is a string, not a list.",
            manifest=dict(BASE_MANIFEST, permissions={"sockets": "x11"}),
        ),
        bad(
            "manifest-host-unknown-member",
            f"{S11} 16, manifest.md §6",
            F,
            "A host rule has a fourth member (host rules stay strict: unsafe to ignore).",
            manifest=dict(
                BASE_MANIFEST, host=[{"path": "/usr", "at": "/usr", "mode": "under", "uid": 0}]
            ),
        ),
        bad(
            "manifest-bad-id",
            f"{S11} 16, manifest.md §2",
            F,
            "The app id has two elements.",
            manifest=dict(BASE_MANIFEST, id="example.Conformance"),
        ),
        bad(
            "manifest-format-version",
            f"{S11} 16, manifest.md §6",
            F,
            "The manifest's format_version is 2.",
            manifest=dict(BASE_MANIFEST, format_version=2),
        ),
        bad(
            "manifest-format-version-bool",
            f"{S11} 16, manifest.md §6",
            F,
            "The manifest's format_version is true.",
            manifest=dict(BASE_MANIFEST, format_version=True),
        ),
        bad(
            "manifest-entrypoint-absolute",
            f"{S11} 16, manifest.md §1",
            F,
            "The entrypoint is an absolute path.",
            manifest=dict(BASE_MANIFEST, entrypoint="/bin/app"),
        ),
        bad(
            "manifest-host-not-normalised",
            f"{S11} 16, manifest.md §1",
            F,
            "A host rule path '/usr/./share'.",
            manifest=dict(
                BASE_MANIFEST,
                host=[{"path": "/usr/./share", "at": "/usr/./share", "mode": "replace"}],
            ),
        ),
        bad(
            "app-id-differs",
            f"{S11} 17",
            INT,
            "statement.app_id differs from the manifest's id.",
            statement_hook=_set("app_id", "org.example.Other"),
        ),
        bad(
            "app-version-differs",
            f"{S11} 17",
            INT,
            "statement.app_version differs from the manifest's version.",
            statement_hook=_set("app_version", "2.0"),
        ),
        bad(
            "verity-extra-member",
            f"{S11} 18",
            F,
            "statement.verity has an eighth member.",
            statement_hook=_set("verity.hash_type", 1),
        ),
        bad(
            "verity-missing-member",
            f"{S11} 18",
            F,
            "statement.verity has no salt.",
            statement_hook=_delete("verity.salt"),
        ),
        bad(
            "verity-algorithm",
            f"{S11} 18",
            F,
            "verity.hash_algorithm 'md5'.",
            statement_hook=_set("verity.hash_algorithm", "md5"),
        ),
        bad(
            "verity-root-hash-uppercase",
            f"{S11} 18",
            F,
            "verity.root_hash in uppercase hex.",
            statement_hook=lambda st: st["verity"].update(
                root_hash=st["verity"]["root_hash"].upper()
            ),
        ),
        bad(
            "verity-root-hash-length",
            f"{S11} 18",
            F,
            "verity.root_hash of 31 bytes.",
            statement_hook=lambda st: st["verity"].update(root_hash=st["verity"]["root_hash"][:62]),
        ),
        bad(
            "verity-salt-odd",
            f"{S11} 18",
            F,
            "verity.salt has an odd number of digits.",
            statement_hook=lambda st: st["verity"].update(salt=st["verity"]["salt"][:-1]),
        ),
        bad(
            "verity-salt-too-long",
            f"{S11} 18",
            F,
            "verity.salt of 257 bytes.",
            statement_hook=_set("verity.salt", "ab" * 257),
        ),
        bad(
            "verity-data-block-256",
            f"{S11} 18",
            F,
            "verity.data_block_size 256.",
            statement_hook=_set("verity.data_block_size", 256),
        ),
        bad(
            "verity-data-block-not-power",
            f"{S11} 18",
            F,
            "verity.data_block_size 3072.",
            statement_hook=_set("verity.data_block_size", 3072),
        ),
        bad(
            "verity-hash-block-131072",
            f"{S11} 18",
            F,
            "verity.hash_block_size 131072.",
            statement_hook=_set("verity.hash_block_size", 131072),
        ),
        bad(
            "verity-data-blocks-zero",
            f"{S11} 18",
            F,
            "verity.data_blocks 0.",
            statement_hook=_set("verity.data_blocks", 0),
        ),
        bad(
            "verity-data-blocks-string",
            f"{S11} 18",
            F,
            'verity.data_blocks "1".',
            statement_hook=_set("verity.data_blocks", "1"),
        ),
        bad(
            "verity-uuid-uppercase",
            f"{S11} 18",
            F,
            "verity.uuid in uppercase.",
            statement_hook=lambda st: st["verity"].update(uuid=st["verity"]["uuid"].upper()),
        ),
        bad(
            "verity-size-mismatch",
            f"{S11} 19",
            INT,
            "verity.data_blocks is one more than the payload partition holds.",
            statement_hook=_set("verity.data_blocks", 2),
        ),
        bad(
            "verity-partition-short",
            f"{S11} 20",
            F,
            "Hash blocks of 65536 bytes but a verity partition of 4096: not one whole hash block.",
            hash_block_size=65536,
            verity_hook=lambda buf, p: buf.__delitem__(slice(4096, None)),
        ),
        bad(
            "verity-sb-signature",
            f"{S11} 20",
            F,
            "Superblock signature 'verity\\0\\1'.",
            verity_hook=_bytes_at(0, b"verity\0\1"),
        ),
        bad(
            "verity-sb-version",
            f"{S11} 20",
            F,
            "Superblock version 2.",
            verity_hook=_bytes_at(8, struct.pack("<I", 2)),
        ),
        bad(
            "verity-sb-hash-type",
            f"{S11} 20",
            F,
            "Superblock hash_type 0 (Chrome OS).",
            verity_hook=_bytes_at(12, struct.pack("<I", 0)),
        ),
        bad(
            "verity-sb-uuid",
            f"{S11} 20",
            INT,
            "Superblock uuid differs from verity.uuid.",
            verity_hook=_bytes_at(16, b"\0" * 4),
        ),
        bad(
            "verity-sb-algorithm",
            f"{S11} 20",
            INT,
            "Superblock algorithm 'sha512'.",
            verity_hook=_bytes_at(32, b"sha512"),
        ),
        bad(
            "verity-sb-data-blocks",
            f"{S11} 20",
            INT,
            "Superblock data_blocks 2.",
            verity_hook=_bytes_at(72, struct.pack("<Q", 2)),
        ),
        bad(
            "verity-sb-salt",
            f"{S11} 20",
            INT,
            "Superblock salt differs from verity.salt.",
            verity_hook=_bytes_at(88, b"\0"),
        ),
        bad(
            "verity-sb-unused-salt",
            f"{S11} 20",
            INT,
            "A non-zero byte in the superblock's salt field after the salt.",
            verity_hook=_bytes_at(88 + 32, b"\x01"),
        ),
        bad(
            "verity-sb-padding",
            f"{S11} 20",
            INT,
            "A non-zero byte in pad2 of the superblock.",
            verity_hook=_bytes_at(400, b"\x01"),
        ),
        bad(
            "verity-sb-block-padding",
            f"{S11} 20",
            INT,
            "A non-zero byte in the superblock's hash block after its 512 bytes.",
            verity_hook=_bytes_at(1000, b"\x01"),
        ),
        # §11.2: the tree
        bad(
            "tree-content-too-large",
            f"{S11} 20",
            F,
            "A tree over 11 data "
            "blocks in a verity partition that holds only the superblock block: refused at "
            "opening (the partition must be exactly align(content)).",
            tree="large",
            verity_hook=lambda buf, p: buf.__delitem__(slice(4096, None)),
        ),
        bad(
            "tree-top-block",
            "format.md §11.2 step 3",
            INT,
            "A level-0 digest changed: the top block does not hash to the root hash.",
            detected_by="tree",
            tree="large",
            verity_hook=_bytes_at(4096 + 40, b"\xff"),
        ),
        bad(
            "tree-level",
            "format.md §11.2 step 3",
            INT,
            "A level-0 digest changed in a three-level tree: level 1 does not match it.",
            detected_by="tree",
            tree="large",
            hash_algorithm="sha512",
            data_block_size=512,
            hash_block_size=512,
            verity_hook=lambda buf, p: buf.__setitem__(len(buf.rstrip(b"\0")) - 1, 0),
        ),
        bad(
            "tree-unused-slot",
            "format.md §11.2 step 3",
            INT,
            "An unused level-0 slot is not zero; the root hash is recomputed over it.",
            detected_by="tree",
            tree="large",
            verity_hook=_rehash_level0(100 * 32, b"\x01"),
        ),
        bad(
            "tree-slot-padding",
            "format.md §11.2 step 3",
            INT,
            "sha1: the padding of a "
            "level-0 slot (bytes 20-31) is not zero; the root hash is recomputed over it.",
            detected_by="tree",
            tree="large",
            hash_algorithm="sha1",
            verity_hook=_rehash_level0(25, b"\x01"),
        ),
        bad(
            "tree-trailing-bytes",
            "format.md §11.2 step 4",
            INT,
            "Hash blocks of 512 bytes: a non-zero byte in the verity partition after the content.",
            detected_by="tree",
            hash_block_size=512,
            verity_hook=_bytes_at(4095, b"\x01"),
        ),
        # §11.3: the payload
        bad(
            "payload-block",
            "format.md §11.3",
            INT,
            "A payload byte changed: data block 3 does not match its level-0 slot.",
            detected_by="full",
            tree="large",
            file_hook=_in_partition(PAYLOAD, 3 * 4096 + 7, b"\x00"),
        ),
        bad(
            "payload-single-block",
            "format.md §11.3",
            INT,
            "n = 1: the only data block does not hash to the root hash.",
            detected_by="full",
            file_hook=_in_partition(PAYLOAD, -1, b"\x01"),
        ),
        # §11.5 / §8.3: signatures
        bad(
            "sig-invalid",
            "format.md §8.3, §11.5",
            SIG,
            "A well-formed signature over other bytes.",
            detected_by="signatures",
            signatures_hook=_sign_other,
        ),
        bad(
            "sig-one-of-two-invalid",
            "format.md §11.5, §12.1",
            SIG,
            "Two entries: one valid, one over other bytes.",
            detected_by="signatures",
            signers=(0, 1),
            signatures_hook=lambda s, m: _sign_other(s[1:], m),
        ),
        bad(
            "sig-key-id",
            "format.md §8.3",
            SIG,
            "A valid signature whose key_id is another key's.",
            detected_by="signatures",
            signatures_hook=lambda s, m: s[0].update(
                key_id=keys.key_id(signing_key(1).public_key())
            ),
        ),
        bad(
            "sig-base64-alphabet",
            "format.md §8.3",
            SIG,
            "The signature uses the URL-safe base64 alphabet.",
            detected_by="signatures",
            signatures_hook=lambda s, m: s[0].update(
                signature=s[0]["signature"].replace("+", "-").replace("/", "_")
                if ("+" in s[0]["signature"] or "/" in s[0]["signature"])
                else "-" + s[0]["signature"][1:]
            ),
        ),
        bad(
            "sig-base64-padding",
            "format.md §8.3",
            SIG,
            "The public key's base64 without its '=' padding.",
            detected_by="signatures",
            signatures_hook=lambda s, m: s[0].update(public_key=s[0]["public_key"].rstrip("=")),
        ),
        bad(
            "sig-public-key-length",
            "format.md §8.3",
            SIG,
            "A public key of 31 bytes.",
            detected_by="signatures",
            signatures_hook=lambda s, m: s[0].update(
                public_key=base64.b64encode(base64.b64decode(s[0]["public_key"])[:31]).decode()
            ),
        ),
    ]
    return cases


def issue_cases() -> list[Case]:
    """The items of issue 15, with the verdict the issue asks for (``issue`` in the index)."""

    def bad(name: str, tests: str, error: str, description: str, **kw: Any) -> Case:
        return Case(name, tests, description, error=error, issue=True, **kw)

    return [
        bad(
            "small-order-key",
            "format.md §8.3 (issue 15: small-order Ed25519 keys)",
            SIG,
            "The public key is the identity point, R is the identity and S = 0: OpenSSL's "
            "check accepts it for any message, libsodium's refuses it.",
            detected_by="signatures",
            signatures_hook=_small_order,
        ),
        bad(
            "base64-unused-bits",
            "format.md §8.3 (issue 15: canonical base64)",
            SIG,
            "The public key's base64 has non-zero unused bits (it decodes to the same key).",
            detected_by="signatures",
            signatures_hook=_unused_bits,
        ),
        bad(
            "squashfs-magic",
            "format.md §5.1, §11.3 (issue 15: payload checked as SquashFS)",
            F,
            "The payload's SquashFS magic is broken; tree and signature are consistent.",
            detected_by="full",
            inspect_specified=False,
            payload_hook=lambda buf: buf.__setitem__(slice(0, 4), b"hsqx"),
        ),
        bad(
            "squashfs-compressor",
            "format.md §5.1, §11.3 (issue 15: payload checked as SquashFS)",
            F,
            "The payload's superblock names compressor id 99.",
            detected_by="full",
            inspect_specified=False,
            payload_hook=lambda buf: buf.__setitem__(slice(20, 22), struct.pack("<H", 99)),
        ),
        bad(
            "disk-unknown-member",
            f"{S11} 9, §8.2 (issue 15: unknown members)",
            F,
            "statement.disk has a fifth member.",
            statement_hook=_set("disk.comment", "x"),
        ),
        bad(
            "manifest-unknown-member",
            f"{S11} 14, §8.2 (issue 15: unknown members)",
            F,
            "statement.manifest has a third member.",
            statement_hook=_set("manifest.comment", "x"),
        ),
        bad(
            "disk-guid-differs",
            f"{S11} (issue 15: disk GUID compared)",
            INT,
            "disk.guid is another GUID than the GPT's DiskGUID (head digest consistent).",
            statement_hook=_set("disk.guid", "00000000-0000-4000-8000-000000000000"),
        ),
        bad(
            "disk-guid-uppercase",
            f"{S11} (issue 15: disk GUID compared)",
            F,
            "disk.guid is the GPT's DiskGUID spelt in uppercase: not the lowercase form §8.2 "
            "requires.",
            statement_hook=lambda st: st["disk"].update(guid=st["disk"]["guid"].upper()),
        ),
        bad(
            "disk-head-missing",
            f"{S11} 9 (issue 15: error class of missing members)",
            F,
            "statement.disk has no head_sha256.",
            statement_hook=_delete("disk.head_sha256"),
        ),
        bad(
            "disk-size-string",
            f"{S11} 10 (issue 15: error class of wrongly typed members)",
            F,
            "disk.size is the right number as a string.",
            statement_hook=lambda st: st["disk"].update(size=str(st["disk"]["size"])),
        ),
        bad(
            "disk-size-bool",
            f"{S11} 10 (issue 15: booleans are not integers)",
            F,
            "disk.size is true.",
            statement_hook=_set("disk.size", True),
        ),
        bad(
            "manifest-size-bool",
            f"{S11} 14 (issue 15: booleans are not integers)",
            F,
            "manifest.size is true.",
            statement_hook=_set("manifest.size", True),
        ),
        bad(
            "verity-data-blocks-bool",
            f"{S11} 18 (issue 15: booleans are not integers)",
            F,
            "verity.data_blocks is true (the payload holds one block).",
            statement_hook=_set("verity.data_blocks", True),
        ),
        bad(
            "gpt-attributes",
            "format.md §3.2, §3.3 (issue 15: fields bound only by digests)",
            F,
            "Entry 1 has attribute bit 0 set as well as bit 60; digests consistent.",
            gpt_hook=_entry(1, attributes=(1 << 60) | 1),
        ),
        bad(
            "gpt-backup-entry-lba",
            "format.md §3.1, §3.3 (issue 15: fields bound only by digests)",
            F,
            "Backup PartitionEntryLBA is 2; CRCs and digests consistent.",
            gpt_hook=_header("backup", partition_entry_lba=2),
        ),
        bad(
            "gpt-header-reserved",
            "format.md §3.1, §3.3 (issue 15: fields bound only by digests)",
            F,
            "Primary header Reserved (offset 20) is 1; CRCs and digests consistent.",
            gpt_hook=_header("primary", reserved=1),
        ),
        bad(
            "mbr-stub-text",
            "format.md §2.1, §3.3 (issue 15: fields bound only by digests)",
            F,
            "The stub's second line reads appimg(8) instead of appimg(1).",
            gpt_hook=lambda t: t.head.__setitem__(
                slice(0, 440), t.head[:440].replace(b"appimg(1)", b"appimg(8)")
            ),
        ),
        bad(
            "mbr-record-1",
            "format.md §2, §3.3 (issue 15: fields bound only by digests)",
            F,
            "MBR partition record 1 is not zero (OSType 0x83).",
            gpt_hook=_head(462 + 4, b"\x83"),
        ),
        bad(
            "head-gap",
            "format.md §1, §3.3 (issue 15: fields bound only by digests)",
            F,
            "A non-zero byte in the zero sectors 34-39.",
            gpt_hook=_head(17408 + 100, b"\x01"),
        ),
        bad(
            "tail-gap",
            "format.md §1, §3.3 (issue 15: fields bound only by digests)",
            F,
            "A non-zero byte in the 3584-byte gap before the backup array.",
            gpt_hook=_tail(100, b"\x01"),
        ),
        bad(
            "manifest-partition-oversized",
            "format.md §6 (issue 15: partition sizes)",
            F,
            "The manifest partition is align(size) + 4096 bytes, zero padded.",
            sizes_hook=lambda s: s.__setitem__(MANIFEST, s[MANIFEST] + 4096),
        ),
        bad(
            "verity-partition-oversized",
            "format.md §7.3 (issue 15: partition sizes)",
            F,
            "The verity partition is align(content) + 4096 bytes, zero padded.",
            sizes_hook=lambda s: s.__setitem__(VERITY, s[VERITY] + 4096),
        ),
        bad(
            "host-path-double-slash",
            f"{S11} 16, manifest.md §1 (issue 15: '//' paths)",
            F,
            "A host rule path '//usr'.",
            manifest=dict(BASE_MANIFEST, host=[{"path": "//usr", "at": "/usr", "mode": "over"}]),
        ),
    ]


# --- writing the suite ---------------------------------------------------------------------


def index_entry(case: Case) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": case.file,
        "tests": case.tests,
        "description": case.description,
        "verdict": "valid" if case.valid else "invalid",
    }
    if case.valid:
        entry["exit_status"] = 0
        entry["signed_by"] = [
            {"key_id": keys.key_id(signing_key(i).public_key()), "key": key_file(i)}
            for i in case.signers
        ]
    else:
        entry["error"] = case.error
        entry["exit_status"] = EXIT[case.error or ""]
        entry["detected_by"] = case.detected_by
        inspect = case.detected_by == "open"
        entry["inspect_exit_status"] = (
            (entry["exit_status"] if inspect else 0) if case.inspect_specified else None
        )
    if case.issue:
        entry["issue"] = True
    return entry


def all_cases() -> list[Case]:
    cases = valid_cases() + invalid_cases() + issue_cases()
    names = [c.file for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def generate(out: Path, only: set[str] | None = None) -> list[Case]:
    """Write the suite (or only the named cases' images) to ``out``; return the cases."""
    cases = all_cases()
    for sub in ("valid", "invalid", "keys"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_keys(out)
    with tempfile.TemporaryDirectory(prefix="appimg-conformance-") as tmp:
        payloads = Payloads(Path(tmp))
        for case in cases:
            if only is not None and case.name not in only:
                continue
            target = out / case.file
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(build(case, payloads))
    index = {
        "format_version": 1,
        "description": "appimg format v1 conformance suite; see README.md",
        "exit_statuses": {"valid": 0, **EXIT},
        "images": [index_entry(c) for c in cases],
    }
    text = json.dumps(index, indent=1, ensure_ascii=False) + "\n"
    (out / "index.json").write_text(text, encoding="utf-8")
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/conformance", description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "spec" / "conformance")
    parser.add_argument("--only", action="append", help="build only this case (repeatable)")
    args = parser.parse_args(argv)
    cases = generate(args.out, set(args.only) if args.only else None)
    print(f"{args.out}: {len(cases)} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
