"""The OCI artifact that carries one image file (spec/distribution.md §3).

An image manifest (OCI image spec 1.1) with ``artifactType``
:data:`ARTIFACT_TYPE`, the empty config, and exactly one layer: the image file,
byte for byte (:data:`LAYER_TYPE`), so its signatures and verity tree travel
untouched and the layer digest pins every byte. Annotations repeat the manifest's
id and version and the signing key ids, so that ``update --check`` can tell what a
tag offers from the manifest alone; they are hints, never trusted: the downloaded
image is judged by its own signed statement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from appimg.errors import FormatError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
ARTIFACT_TYPE = "application/vnd.appimg.image.v1"
LAYER_TYPE = "application/vnd.appimg.image.v1+gpt"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

ANNOTATION_ID = "org.appimg.id"
ANNOTATION_VERSION = "org.appimg.version"
ANNOTATION_KEY_IDS = "org.appimg.key-ids"
ANNOTATION_OCI_VERSION = "org.opencontainers.image.version"
ANNOTATION_TITLE = "org.opencontainers.image.title"

#: Larger manifests are refused before parsing (the distribution spec's 4 MiB).
MAX_MANIFEST = 4 << 20
#: The largest image a descriptor may announce (a download is capped at its size).
MAX_IMAGE = 1 << 40
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}  # fmt: skip
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def image_manifest(layer: Descriptor, annotations: dict[str, str]) -> bytes:
    """The manifest of an image artifact, serialised (its digest is of these bytes)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY_BLOB)},
        "layers": [layer.to_json()],
        "annotations": annotations,
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def annotations_for(manifest: dict[str, Any], key_ids: list[str]) -> dict[str, str]:
    return {
        ANNOTATION_ID: manifest["id"],
        ANNOTATION_VERSION: manifest["version"],
        ANNOTATION_OCI_VERSION: manifest["version"],
        ANNOTATION_KEY_IDS: ",".join(key_ids),
    }


@dataclass(frozen=True)
class ImageArtifact:
    """What a registry's manifest says about the image it carries."""

    digest: str  # of the manifest
    layer: Descriptor
    annotations: dict[str, str]

    @property
    def app_id(self) -> str:
        return self.annotations.get(ANNOTATION_ID, "")

    @property
    def version(self) -> str:
        return self.annotations.get(ANNOTATION_VERSION, "")


def parse_manifest(data: bytes, digest: str, where: str) -> ImageArtifact:
    """The image layer of an appimg artifact manifest; anything else is a FormatError."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{where}: the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
        raise FormatError(f"{where}: not an OCI image manifest")
    if manifest.get("mediaType") == INDEX_TYPE or "manifests" in manifest:
        raise FormatError(f"{where}: an image index (a container image?), not an appimg image")
    if manifest.get("artifactType") != ARTIFACT_TYPE and (
        manifest.get("config", {}).get("mediaType") != ARTIFACT_TYPE
    ):
        kind = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")
        raise FormatError(f"{where}: not an appimg image (artifact type {kind!r})")
    layers = manifest.get("layers")
    found = [d for d in layers if isinstance(d, dict) and d.get("mediaType") == LAYER_TYPE] \
        if isinstance(layers, list) else []  # fmt: skip
    if len(found) != 1:
        raise FormatError(f"{where}: the manifest must have exactly one {LAYER_TYPE} layer")
    raw = found[0]
    size, layer_digest = raw.get("size"), raw.get("digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_IMAGE:
        raise FormatError(f"{where}: the image layer has no valid size")
    if not isinstance(layer_digest, str) or not _DIGEST.match(layer_digest):
        raise FormatError(f"{where}: the image layer's digest is not sha256:<64 hex digits>")
    annotations = manifest.get("annotations")
    annotations = (
        {k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(annotations, dict) else {}
    )  # fmt: skip
    layer = Descriptor(LAYER_TYPE, layer_digest, size, {})
    return ImageArtifact(digest, layer, annotations)


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for a manifest digest (distribution spec 1.1)."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def referring_manifest(artifact_type: str, blob: Descriptor, subject: Descriptor) -> bytes:
    """A manifest of type ``artifact_type`` carrying one blob, referring to ``subject``."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY_BLOB)},
        "layers": [blob.to_json()],
        "subject": subject.to_json(),
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"


def index_manifests(data: bytes) -> list[dict[str, Any]]:
    """The descriptors an image index lists (an empty list for anything else)."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []
    manifests = body.get("manifests") if isinstance(body, dict) else None
    return [d for d in manifests if isinstance(d, dict)] if isinstance(manifests, list) else []


def with_referrer(data: bytes | None, descriptor: dict[str, Any]) -> bytes:
    """The referrers tag's image index with ``descriptor`` added (once)."""
    manifests = [d for d in index_manifests(data or b"") if d.get("digest") != descriptor["digest"]]
    body = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [*manifests, descriptor]}
    return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def blob_of(data: bytes, media_type: str, where: str) -> Descriptor:
    """The one layer of type ``media_type`` of a referring manifest (FormatError else)."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{where}: the manifest is not JSON") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    found = [d for d in layers if isinstance(d, dict) and d.get("mediaType") == media_type] \
        if isinstance(layers, list) else []  # fmt: skip
    if len(found) != 1:
        raise FormatError(f"{where}: the manifest must have exactly one {media_type} layer")
    size, digest = found[0].get("size"), found[0].get("digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_IMAGE:
        raise FormatError(f"{where}: the {media_type} layer has no valid size")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise FormatError(f"{where}: the {media_type} layer's digest is not sha256:<64 hex>")
    return Descriptor(media_type, digest, size, {})
