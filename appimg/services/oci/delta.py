"""Delta updates: assemble the new image from the installed one and byte ranges of the
new blob (spec/distribution.md §7.2).

The new image's chunk index is found among the referrers of its manifest; the
installed image is cut into chunks the same way (:mod:`.chunks`); every chunk the
installed image also has is copied from it, and the others are fetched with HTTP
range requests on the new blob, adjacent ones in one request. Each fetched chunk is
checked against the index as it arrives, and the whole file against the manifest's
layer digest before anything looks at it: the index only says where to find bytes,
never what they must be. Without an index, or from a server that ignores ``Range``,
:func:`assemble` returns None and the caller downloads the whole blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appimg.errors import FormatError, IntegrityError
from appimg.services.oci import artifact, chunks
from appimg.services.oci.client import Progress, RangeNotSupported, Registry


@dataclass
class Transfer:
    """What an update moved: bytes fetched from the registry and reused from the
    installed image (``delta`` false: the whole blob was downloaded)."""

    size: int
    fetched: int = 0
    reused: int = 0
    requests: int = 0
    delta: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Step:
    """Write ``length`` bytes at the new file's current end: copied from the installed
    image at ``source`` (``fetch`` false) or fetched, chunk by chunk (``chunks``)."""

    fetch: bool
    source: int
    length: int
    chunks: tuple[chunks.Chunk, ...]


def find_index(registry: Registry, manifest_digest: str,
               layer: artifact.Descriptor) -> list[chunks.Chunk] | None:  # fmt: skip
    """The chunk index published for the image manifest, or None if there is none (or
    it is malformed: it is only a hint)."""
    found = registry.referrers(manifest_digest, chunks.INDEX_TYPE)
    for descriptor in reversed(found):  # the latest pushed first
        digest = descriptor.get("digest")
        if not isinstance(digest, str):
            continue
        where = f"{registry.ref}: chunk index {digest}"
        try:
            raw = registry.raw_manifest(digest, artifact.MANIFEST_TYPE)
            if raw is None:
                continue
            blob = artifact.blob_of(raw, chunks.INDEX_TYPE, where)
            if blob.size > chunks.MAX_INDEX:
                continue
            data = registry.read_blob(blob.digest, blob.size)
            return chunks.parse_index(data, layer.digest, layer.size, where)
        except FormatError:
            continue
    return None


def plan(new: list[chunks.Chunk], have: dict[str, int]) -> list[Step]:
    """Steps that write ``new`` in order: runs of chunks found in the installed image at
    consecutive offsets become one copy, runs of missing chunks one range request."""
    steps: list[Step] = []
    for chunk in new:
        source = have.get(chunk.sha256)
        fetch = source is None
        start = chunk.offset if fetch else source
        last = steps[-1] if steps else None
        if last and last.fetch == fetch and last.source + last.length == start:
            steps[-1] = Step(fetch, last.source, last.length + chunk.length,
                             (*last.chunks, chunk))  # fmt: skip
        else:
            steps.append(Step(fetch, start, chunk.length, (chunk,)))  # type: ignore[arg-type]
    return steps


def assemble(registry: Registry, manifest_digest: str, layer: artifact.Descriptor,
             base: Path, target: Path, progress: Progress) -> Transfer | None:  # fmt: skip
    """Write the new image into the new file ``target`` from ``base`` and ranges of the
    layer blob; None (and no file) if the registry offers no delta."""
    new = find_index(registry, manifest_digest, layer)
    if new is None:
        return None
    with open(base, "rb") as old:
        have: dict[str, int] = {}
        for chunk in chunks.chunk_file(old, os.fstat(old.fileno()).st_size):
            have.setdefault(chunk.sha256, chunk.offset)
        steps = plan(new, have)
        transfer = Transfer(layer.size, delta=True)
        what = f"{registry.ref}: {layer.digest}"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)  # fmt: skip
        try:
            with os.fdopen(fd, "wb") as out:
                whole = hashlib.sha256()
                for step in steps:
                    if step.fetch:
                        _fetch(registry, layer.digest, step, out, whole, what)
                        transfer.fetched += step.length
                        transfer.requests += 1
                    else:
                        data = os.pread(old.fileno(), step.length, step.source)
                        if len(data) != step.length:
                            raise IntegrityError(f"{base}: the installed image changed "
                                                 "while it was read: refused")  # fmt: skip
                        whole.update(data)
                        out.write(data)
                        transfer.reused += step.length
                    progress(transfer.fetched + transfer.reused, layer.size)
                if "sha256:" + whole.hexdigest() != layer.digest:
                    raise IntegrityError(f"{what}: the assembled image does not match the "
                                         "digest: refused")  # fmt: skip
                out.flush()
                os.fsync(out.fileno())
        except RangeNotSupported:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise
    return transfer


def _fetch(registry: Registry, digest: str, step: Step, out: Any, whole: Any,
           what: str) -> None:  # fmt: skip
    """One range request for a run of missing chunks, each checked against the index."""
    pending = list(step.chunks)
    current = hashlib.sha256()
    filled = 0
    for piece in registry.iter_range(digest, step.source, step.source + step.length):
        view = memoryview(piece)
        while view:
            take = min(len(view), pending[0].length - filled)
            current.update(view[:take])
            filled += take
            view = view[take:]
            if filled == pending[0].length:
                if current.hexdigest() != pending[0].sha256:
                    raise IntegrityError(f"{what}: the registry served a chunk at offset "
                                         f"{pending[0].offset} that does not match the chunk "
                                         "index: refused")  # fmt: skip
                pending.pop(0)
                current, filled = hashlib.sha256(), 0
        whole.update(piece)
        out.write(piece)
