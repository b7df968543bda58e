"""The four appimg partitions and their frozen type GUIDs (spec/format.md §Partitions)."""

from __future__ import annotations

from typing import NamedTuple

from appimg.format.guid import Guid

MANIFEST = "appimg-manifest"
PAYLOAD = "appimg-payload"
VERITY = "appimg-verity"
SIGNATURE = "appimg-signature"

#: Partition names in on-disk order; v1 images hold exactly these four.
ORDER = (MANIFEST, PAYLOAD, VERITY, SIGNATURE)

#: Frozen by the v1 spec: a partition is recognised by its type GUID, not its name.
TYPE_GUIDS: dict[str, Guid] = {
    MANIFEST: Guid(bytes.fromhex("caf4a4625a81423fabacbc79474791df")),
    PAYLOAD: Guid(bytes.fromhex("5f7579d18e7941fe8daddeb84a622a4b")),
    VERITY: Guid(bytes.fromhex("23d8bb1f4308473a862dcbf765e2e370")),
    SIGNATURE: Guid(bytes.fromhex("227b002cdd1545348990f02f30d46ce1")),
}
NAMES_BY_TYPE = {guid: name for name, guid in TYPE_GUIDS.items()}

#: GPT attribute bit 60: read-only (as in the Discoverable Partitions Specification).
ATTR_READ_ONLY = 1 << 60


# A NamedTuple, not a frozen dataclass: defined at import on the launch path, it
# costs ~70 us instead of ~500 us.
class Partition(NamedTuple):
    """A partition as located in an image file: byte offset and size."""

    name: str
    type_guid: Guid
    uuid: Guid  # or a uuid.UUID, where a writer made it
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type_guid": str(self.type_guid),
            "uuid": str(self.uuid),
            "offset": self.offset,
            "size": self.size,
        }
