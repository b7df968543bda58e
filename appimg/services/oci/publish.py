"""``appimg push``: publish an image file as an OCI artifact (spec/distribution.md §3, §4).

The image is checked first (the O(1) checks and the whole hash tree, and every
signature must be valid), so that a registry never carries a damaged image under
an appimg artifact type; then the empty config and the image are uploaded as
blobs (skipped when the repository has them) and the manifest is put under the tag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appimg.errors import SignatureError
from appimg.services.oci import artifact
from appimg.services.oci.client import Registry
from appimg.services.oci.reference import Reference


def push(source: Path, ref: Reference, *, plain_http: bool = False,
         env: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Upload ``source`` to ``ref``'s tag; returns what was published."""
    from appimg.format.image import Image

    with Image.open(source) as image:
        image.check_tree()
        bad = [s.key_id for s in image.signatures() if not s.valid]
        if bad:
            raise SignatureError(f"{source}: invalid signature by {bad[0]}: not pushed")
        manifest = image.manifest
        key_ids = [s.key_id for s in image.signatures()]
        size = image.layout.file_size
    with open(source, "rb") as handle:
        digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
        title = {artifact.ANNOTATION_TITLE: f"{manifest['id']}.appimg"}
        layer = artifact.Descriptor(artifact.LAYER_TYPE, digest, size, title)
        with Registry(ref, plain_http=plain_http, env=env) as registry:
            registry.put_blob(artifact.EMPTY_BLOB, artifact.EMPTY_DIGEST, len(artifact.EMPTY_BLOB))
            handle.seek(0)
            registry.put_blob(handle, digest, size)
            body = artifact.image_manifest(layer, artifact.annotations_for(manifest, key_ids))
            manifest_digest = registry.put_manifest(body, ref.tag)
    return {
        "reference": str(ref),
        "id": manifest["id"],
        "version": manifest["version"],
        "key_ids": key_ids,
        "manifest_digest": manifest_digest,
        "image_digest": digest,
        "size": size,
    }
