"""Installing and updating from a registry (spec/distribution.md §5).

:func:`resolve` reads the manifest a reference names (a tag is resolved to the
manifest digest once, here); :func:`remote` turns it into the
:class:`~appimg.services.store.ops.Remote` the store installs: the image layer is
streamed into the store's staging area, capped at the descriptor's size and
checked against its digest before the store looks at it, then judged like a
file (trust, pinning, versions, exports). An update is assembled from the
installed image and byte ranges where the registry has a chunk index
(:mod:`.delta`, §7). :func:`origin` is what the store
records to follow the tag later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appimg.host.dirs import UserDirs
from appimg.services.oci.artifact import ImageArtifact
from appimg.services.oci.client import Progress, Registry
from appimg.services.oci.delta import Transfer, assemble
from appimg.services.oci.reference import Reference
from appimg.services.store.ops import Remote


def resolve(ref: Reference, *, plain_http: bool, env: Mapping[str, str]) -> ImageArtifact:
    with Registry(ref, plain_http=plain_http, env=env) as registry:
        return registry.manifest()


def origin(ref: Reference, found: ImageArtifact, *, plain_http: bool) -> dict[str, Any]:
    """The app's ``origin`` in the index: where to look for updates (the tag, never a
    digest), and the manifest last installed from it."""
    followed = Reference(ref.host, ref.repository, ref.tag)
    return {"reference": str(followed), "plain_http": plain_http, "manifest": found.digest}


class Download:
    """Writes the image layer into the staging file it is called with: assembled from
    ``base`` (the installed image) and ranges of the blob when the registry has a chunk
    index for it (spec/distribution.md §7.2), else the whole blob. ``transfer`` then
    says what was fetched and reused."""

    def __init__(self, ref: Reference, found: ImageArtifact, *, plain_http: bool,
                 env: Mapping[str, str], progress: Progress | None,
                 base: Path | None) -> None:  # fmt: skip
        self.ref, self.found, self.plain_http, self.env = ref, found, plain_http, env
        self.progress = progress or (lambda _done, _total: None)
        self.base = base
        self.transfer: Transfer | None = None

    def __call__(self, target: Path) -> None:
        layer = self.found.layer
        with Registry(self.ref, plain_http=self.plain_http, env=self.env) as registry:
            if self.base is not None:
                self.transfer = assemble(registry, self.found.digest, layer, self.base, target,
                                         self.progress)  # fmt: skip
                if self.transfer is not None:
                    return
            registry.download_blob(layer.digest, layer.size, target, self.progress)
            self.transfer = Transfer(layer.size, fetched=layer.size, requests=1)


def remote(ref: Reference, found: ImageArtifact, *, plain_http: bool,
           env: Mapping[str, str], progress: Progress | None = None,
           base: Path | None = None) -> Remote:  # fmt: skip
    """The image ``found`` as the store installs it; with ``base`` (the installed image
    of the app being updated) by a delta where the registry offers one."""
    download = Download(ref, found, plain_http=plain_http, env=env, progress=progress,
                        base=base)  # fmt: skip
    return Remote(f"{ref}", found.layer.digest, origin(ref, found, plain_http=plain_http),
                  download)  # fmt: skip


def installed_image(dirs: UserDirs, version: dict[str, Any]) -> Path:
    from appimg.services.store.layout import StoreLayout

    return StoreLayout.from_dirs(dirs).image_file(version["file"])


def followed(dirs: UserDirs, ids: list[str]) -> list[tuple[str, dict[str, Any], Reference]]:
    """The apps ``ids`` (all apps installed from a registry if empty) with their active
    version and the reference they follow; UsageError for one that follows none."""
    from appimg.errors import UsageError
    from appimg.services.store import index as index_mod
    from appimg.services.store.layout import StoreLayout

    apps = index_mod.load(StoreLayout.from_dirs(dirs))["apps"]
    if not ids:
        ids = sorted(app_id for app_id, app in apps.items() if app.get("origin"))
    out = []
    for app_id in ids:
        app = apps.get(app_id)
        if app is None:
            raise UsageError(f"{app_id} is not installed")
        if not app.get("origin"):
            raise UsageError(f"{app_id} was not installed from a registry: update it from "
                             "a file (appimg update FILE) or an oci:// reference")  # fmt: skip
        out.append((app_id, app, Reference.parse(app["origin"]["reference"])))
    return out


def installed_digest(dirs: UserDirs, version: dict[str, Any]) -> str:
    """The sha256 digest of an installed image: recorded when it came from a registry,
    else computed (an image installed or updated from a file)."""
    import hashlib

    from appimg.services.store.layout import StoreLayout

    if version.get("digest"):
        return str(version["digest"])
    path = StoreLayout.from_dirs(dirs).image_file(version["file"])
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
