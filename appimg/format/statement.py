"""The signed statement and the signature partition (spec/format.md §Signature partition).

The statement binds everything but the payload's bytes: the exact bytes before
the first partition (MBR, primary GPT) and after the last (backup GPT), the
partition table, the manifest's digest, and the verity parameters including the
root hash, which in turn covers every payload block. The partition holds
``{"statement": ..., "signatures": [...]}`` as canonical JSON, zero padded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from appimg import FORMAT_VERSION
from appimg.errors import FormatError
from appimg.format import canonical
from appimg.format.container.gpt import DiskLayout
from appimg.format.limits import MAX_SIGNATURES, SIGNATURE_PARTITION_SIZE
from appimg.format.verity.hashtree import VerityParams

STATEMENT_TYPE = "appimg-statement"
STATEMENT_KEYS = {
    "type", "format_version", "app_id", "app_version", "disk", "partitions", "manifest", "verity",
}  # fmt: skip
SIGNATURE_KEYS = {"algorithm", "key_id", "public_key", "signature"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_statement(
    layout: DiskLayout,
    head: bytes,
    tail: bytes,
    manifest_json: bytes,
    manifest: dict[str, Any],
    verity: VerityParams,
) -> dict[str, Any]:
    return {
        "type": STATEMENT_TYPE,
        "format_version": FORMAT_VERSION,
        "app_id": manifest["id"],
        "app_version": manifest["version"],
        "disk": {
            "size": layout.file_size,
            "guid": str(layout.disk_guid),
            "head_sha256": sha256(head),
            "tail_sha256": sha256(tail),
        },
        "partitions": [part.to_json() for part in layout.partitions],
        "manifest": {"size": len(manifest_json), "sha256": sha256(manifest_json)},
        "verity": verity.to_json(),
    }


@dataclass
class SignatureBlock:
    """The decoded signature partition."""

    statement: dict[str, Any]
    signatures: list[dict[str, str]] = field(default_factory=list)

    @property
    def message(self) -> bytes:
        """The bytes every signature signs: the statement in canonical JSON."""
        return canonical.dumps(self.statement)

    def encode(self) -> bytes:
        body = canonical.dumps({"statement": self.statement, "signatures": self.signatures})
        if len(body) > SIGNATURE_PARTITION_SIZE:
            raise FormatError("signature partition: too many signatures to fit")
        return body.ljust(SIGNATURE_PARTITION_SIZE, b"\0")


def decode(partition: bytes) -> SignatureBlock:
    """Parse the signature partition; FormatError for anything a v1 writer would not write."""
    end = partition.find(b"\0")
    body = partition if end < 0 else partition[:end]
    if any(partition[len(body) :]):
        raise FormatError("signature partition: bytes after the JSON are not zero")
    value = canonical.loads(body, "signature partition")
    if not isinstance(value, dict) or set(value) != {"statement", "signatures"}:
        raise FormatError("signature partition: expected an object with statement and signatures")
    statement, signatures = value["statement"], value["signatures"]
    if not isinstance(statement, dict) or statement.get("type") != STATEMENT_TYPE:
        raise FormatError("signature partition: no appimg statement")
    version = statement.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise FormatError(
            f"unknown format version {version!r} (this appimg reads {FORMAT_VERSION})"
        )
    if not isinstance(signatures, list) or len(signatures) > MAX_SIGNATURES:
        raise FormatError(f"signature partition: signatures must be a list of <= {MAX_SIGNATURES}")
    if set(statement) != STATEMENT_KEYS:
        raise FormatError("signature partition: the statement's fields are not those of v1")
    for entry in signatures:
        if (
            not isinstance(entry, dict)
            or set(entry) != SIGNATURE_KEYS
            or not all(isinstance(v, str) for v in entry.values())
        ):
            raise FormatError("signature partition: malformed signature entry")
        if entry["algorithm"] != "ed25519":
            raise FormatError(f"signature partition: unknown algorithm {entry['algorithm']!r}")
    return SignatureBlock(statement, signatures)
