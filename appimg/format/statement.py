"""The signed statement and the signature partition (spec/format.md §Signature partition).

The statement binds everything but the payload's bytes: the exact bytes before
the first partition (MBR, primary GPT) and after the last (backup GPT), the
partition table, the manifest's digest, and the verity parameters including the
root hash, which in turn covers every payload block. The partition holds
``{"statement": ..., "signatures": [...]}`` as canonical JSON, zero padded.

The error-class rule of §8.2: a member missing, unknown, or not of the type and
form §8.2 gives it is a ``FormatError`` (checked here, before any comparison); a
well-formed value that contradicts the file is an ``IntegrityError`` (checked by
:mod:`appimg.format.image`).
"""

from __future__ import annotations

import re
from typing import Any

from appimg import FORMAT_VERSION, digests
from appimg.errors import FormatError
from appimg.format import canonical
from appimg.format.container.gpt import DiskLayout
from appimg.format.guid import Guid
from appimg.format.limits import MAX_SIGNATURES, SIGNATURE_PARTITION_SIZE
from appimg.format.verity.hashtree import VerityParams
from appimg.values import Fields

STATEMENT_TYPE = "appimg-statement"
STATEMENT_KEYS = {
    "type", "format_version", "app_id", "app_version", "disk", "partitions", "manifest", "verity",
}  # fmt: skip
SIGNATURE_KEYS = {"algorithm", "key_id", "public_key", "signature"}
#: The members of ``disk``, ``manifest`` and each ``partitions`` entry (§8.2).
DISK_KEYS = {"size", "guid", "head_sha256", "tail_sha256"}
MANIFEST_KEYS = {"size", "sha256"}
PARTITION_KEYS = {"name", "type_guid", "uuid", "offset", "size"}

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    return digests.sha256(data).hexdigest()


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


def is_int(value: object) -> bool:
    """A JSON integer: booleans are not integers (§8.2)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def _is_guid(value: object) -> bool:
    """The lowercase 8-4-4-4-12 form; any other spelling of a GUID is malformed."""
    return Guid.parse(value) is not None


def _members(value: object, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise FormatError(f"statement: {what} must be an object with exactly {sorted(keys)}")
    return value


def check_disk(value: object) -> dict[str, Any]:
    """§11.1 check 9: ``disk`` has its four members, each well formed."""
    disk = _members(value, DISK_KEYS, "disk")
    if not is_int(disk["size"]) or disk["size"] < 0:
        raise FormatError("statement: disk.size must be a non-negative integer")
    if not _is_guid(disk["guid"]):
        raise FormatError("statement: disk.guid must be a lowercase 8-4-4-4-12 GUID")
    for name in ("head_sha256", "tail_sha256"):
        if not _is_sha256(disk[name]):
            raise FormatError(f"statement: disk.{name} must be 64 lowercase hex digits")
    return disk


def check_partitions(value: object) -> list[dict[str, Any]]:
    """§11.1 check 13, first half: four partition objects, each well formed."""
    if not isinstance(value, list) or len(value) != 4:
        raise FormatError("statement: partitions must be an array of 4 objects")
    for index, entry in enumerate(value):
        part = _members(entry, PARTITION_KEYS, f"partitions[{index}]")
        if not isinstance(part["name"], str):
            raise FormatError(f"statement: partitions[{index}].name must be a string")
        if not (_is_guid(part["type_guid"]) and _is_guid(part["uuid"])):
            raise FormatError(f"statement: partitions[{index}] GUIDs must be lowercase GUIDs")
        if not (is_int(part["offset"]) and is_int(part["size"])):
            raise FormatError(f"statement: partitions[{index}] offset and size must be integers")
    return value


def check_manifest_info(value: object) -> dict[str, Any]:
    """§11.1 check 14, first half: ``manifest`` has an integer size and a SHA-256."""
    info = _members(value, MANIFEST_KEYS, "manifest")
    if not is_int(info["size"]):
        raise FormatError("statement: manifest.size must be an integer")
    if not _is_sha256(info["sha256"]):
        raise FormatError("statement: manifest.sha256 must be 64 lowercase hex digits")
    return info


class SignatureBlock(Fields):
    """The decoded signature partition.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    __slots__ = ("signatures", "statement")
    _FIELDS = ("statement", "signatures")  # the repr's order

    def __init__(
        self, statement: dict[str, Any], signatures: list[dict[str, str]] | None = None
    ) -> None:
        self.statement = statement
        self.signatures = [] if signatures is None else signatures

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
    if not is_int(version) or version != FORMAT_VERSION:
        raise FormatError(
            f"unknown format version {version!r} (this appimg reads {FORMAT_VERSION})"
        )
    if not isinstance(signatures, list) or len(signatures) > MAX_SIGNATURES:
        raise FormatError(f"signature partition: signatures must be a list of <= {MAX_SIGNATURES}")
    if set(statement) != STATEMENT_KEYS:
        raise FormatError("signature partition: the statement's fields are not those of v1")
    if not (isinstance(statement["app_id"], str) and isinstance(statement["app_version"], str)):
        raise FormatError("statement: app_id and app_version must be strings")
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
