"""``appimg verify`` as a library call (spec/format.md §Verification).

Without ``full`` it reads the GPT, the statement, the manifest and the verity
tree, never the payload, so its cost does not depend on the payload's bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appimg.errors import SignatureError
from appimg.format.image import Image, SignatureStatus


@dataclass
class Report:
    root_hash: str
    data_blocks: int
    full: bool
    signatures: list[SignatureStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "root_hash": self.root_hash,
            "data_blocks": self.data_blocks,
            "full": self.full,
            "signatures": [s.to_json() for s in self.signatures],
        }


def verify(
    path: Path,
    *,
    full: bool = False,
    required_key_ids: Collection[str] = (),
    trusted: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check an image; raise the first failure as an AppimgError naming what failed."""
    with Image.open(path) as image:
        image.check_tree()
        if full:
            image.check_payload(progress)
        report = Report(image.verity.root_hash.hex(), image.verity.data_blocks, full)
        report.signatures = image.signatures(dict(trusted or {}))
    bad = [s.key_id for s in report.signatures if not s.valid]
    if bad:
        raise SignatureError(f"invalid signature by key {', '.join(bad)}")
    if required_key_ids and not set(required_key_ids) & {s.key_id for s in report.signatures}:
        raise SignatureError("not signed by any of the given keys")
    return report
