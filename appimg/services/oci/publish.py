"""``appimg push``: publish an image file as an OCI artifact (spec/distribution.md §3, §4).

The image is checked first (the O(1) checks and the whole hash tree, and every
signature must be valid), so that a registry never carries a damaged image under
an appimg artifact type; then the empty config and the image are uploaded as
blobs (skipped when the repository has them) and the manifest is put under the tag.
Last, the image's chunk index (:mod:`.chunks`) is published as an artifact whose
``subject`` is that manifest (§7.1), for delta updates: found through the referrers
API, or, on a registry without it, through the referrers tag the pusher keeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appimg.errors import SignatureError
from appimg.services.oci import artifact, chunks
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
            subject = artifact.Descriptor(artifact.MANIFEST_TYPE, manifest_digest, len(body), {})
            handle.seek(0)
            index_digest = publish_index(registry, subject, digest, size,
                                         chunks.chunk_file(handle, size))  # fmt: skip
    return {
        "reference": str(ref),
        "id": manifest["id"],
        "version": manifest["version"],
        "key_ids": key_ids,
        "manifest_digest": manifest_digest,
        "image_digest": digest,
        "size": size,
        "chunk_index": index_digest,
    }


def publish_index(registry: Registry, subject: artifact.Descriptor, digest: str, size: int,
                  found: list[chunks.Chunk]) -> str:  # fmt: skip
    """Put the chunk index of the image ``digest`` as an artifact referring to the image
    manifest ``subject``; returns the index manifest's digest (§7.1)."""
    blob = chunks.index_json(digest, size, found)
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    registry.put_blob(artifact.EMPTY_BLOB, artifact.EMPTY_DIGEST, len(artifact.EMPTY_BLOB))
    registry.put_blob(blob, blob_digest, len(blob))
    layer = artifact.Descriptor(chunks.INDEX_TYPE, blob_digest, len(blob), {})
    body = artifact.referring_manifest(chunks.INDEX_TYPE, layer, subject)
    body_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    answer: dict[str, str] = {}
    registry.put_manifest(body, body_digest, headers=answer)
    if not any(k.lower() == "oci-subject" for k in answer):
        # No referrers API: add the index to the subject's referrers tag (distribution
        # spec 1.1, "Pushing Manifests with Subject"), read-modify-write.
        tag = artifact.referrers_tag(subject.digest)
        current = registry.raw_manifest(tag, artifact.INDEX_TYPE)
        entry = {"mediaType": artifact.MANIFEST_TYPE, "digest": body_digest,
                 "size": len(body), "artifactType": chunks.INDEX_TYPE}  # fmt: skip
        registry.put_manifest(artifact.with_referrer(current, entry), tag, artifact.INDEX_TYPE)
    return body_digest
