"""``appimg verify`` as a library call (spec/format.md §11 Verification, errors.md).

Without ``full`` it reads the GPT, the statement, the manifest and the verity
tree, never the payload, so its cost does not depend on the payload's bytes.
Signatures are judged by the one trust rule (:func:`appimg.host.trust.decide`)
with unsigned and untrusted images allowed: ``verify`` reports trust but does
not require it, and refuses an invalid signature as every command does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appimg.errors import SignatureError
from appimg.format.image import Image, SignatureStatus
from appimg.host.dirs import UserDirs
from appimg.host.trust import decide


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
    dirs: UserDirs,
    *,
    full: bool = False,
    required_key_ids: Collection[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check an image; raise the first failure as an AppimgError naming what failed."""
    with Image.open(path) as image:
        image.check_tree()
        if full:
            image.check_payload(progress)
        report = Report(image.verity.root_hash.hex(), image.verity.data_blocks, full)
        verdict = decide(image, dirs, allow_unsigned=True, allow_untrusted=True)
        report.signatures = verdict.statuses
    if required_key_ids and not set(required_key_ids) & {s.key_id for s in report.signatures}:
        raise SignatureError("not signed by any of the given keys")
    return report
