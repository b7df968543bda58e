"""Before mounting: open and check an image, decide trust, host rules and backend
(spec/overlay-rules.md §7-§8).

:func:`prepare` turns an image path into a :class:`Prepared`: the opened
image, whether its signature lets it mount (:func:`check_trust`), the host
rules the view will carry and the mount's default name. :func:`choose_backend`
then picks FUSE or kernel mounts for it. Nothing here mounts or writes state.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING

from appimg.errors import PolicyError, UsageError
from appimg.format.image import Image
from appimg.host.app_rules import host_rules
from appimg.host.dirs import UserDirs
from appimg.host.rules import Resolution, Rule
from appimg.host.trust import decide
from appimg.values import Fields

if TYPE_CHECKING:
    from appimg.host.trust import Verdict

BACKENDS = ("auto", "fuse", "kernel")


class Prepared(Fields):
    """An opened, checked image and what its mount will show.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    _FIELDS = ("image", "root_hash", "resolution", "warnings", "name")
    __slots__ = _FIELDS

    def __init__(
        self, image: Image, root_hash: str, resolution: Resolution, warnings: list[str], name: str
    ) -> None:
        self.image = image
        self.root_hash = root_hash
        self.resolution = resolution
        self.warnings = warnings
        #: the mount's default name: <app id>-<root hash prefix>[-<view fingerprint>]
        self.name = name

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.resolution.granted


def check_trust(image: Image, dirs: UserDirs, allow_untrusted: bool, allow_unsigned: bool,
                pinned: Collection[str] = ()) -> list[str]:  # fmt: skip
    """The trust rule (:func:`appimg.host.trust.decide`) for a mount: unsigned images
    mount only with ``allow_unsigned``, untrusted ones only with ``allow_untrusted``
    (or a key the installed app is pinned to), each with a warning. Returns warnings."""
    verdict = decide(image, dirs, allow_unsigned=allow_unsigned,
                     allow_untrusted=allow_untrusted, pinned=pinned, remember=True)  # fmt: skip
    return [verdict.warning] if verdict.warning else []


def prepare(
    path: str | os.PathLike[str],
    dirs: UserDirs,
    *,
    strict: bool = False,
    allow_untrusted: bool = False,
    allow_unsigned: bool = False,
    pinned: Collection[str] | None = None,
    no_host: bool = False,
    opened: tuple[Image, Verdict] | None = None,
) -> Prepared:
    """Open the image and decide everything about its mount, without mounting.

    ``pinned``: the keys the installed app of the image's id is pinned to; None: look
    them up in the user's store (an image signed by one needs no --allow-untrusted).
    ``opened``: the image of ``path``, already open, and the verdict
    :func:`~appimg.host.trust.decide` gave it with these same allowances and
    ``pinned`` (``appimg run`` judges it first, for the data directory): trust is
    then not decided twice. The image stays the caller's to close (also on failure)."""
    if opened is not None:
        image, verdict = opened
    else:
        image, verdict = Image.open(path), None
    try:
        if verdict is not None:
            warnings = [verdict.warning] if verdict.warning else []
        else:
            if pinned is None:
                from appimg.services.store import installed_state

                pinned = installed_state(dirs, image.manifest["id"])[0] or ()
            warnings = check_trust(image, dirs, allow_untrusted, allow_unsigned, pinned)
        resolution = host_rules(image.manifest, dirs, no_host=no_host)
        refusals = resolution.refusals()
        if strict and refusals:
            raise PolicyError(f"--strict: {'; '.join(refusals)}")
        warnings += resolution.notices()
        root = image.verity.root_hash.hex()
        name = f"{image.manifest['id']}-{root[:12]}"
        if resolution.granted:
            name += f"-{resolution.fingerprint()[:8]}"
        return Prepared(image, root, resolution, warnings, name)
    except BaseException:
        if opened is None:
            image.close()
        raise


def choose_backend(prep: Prepared, requested: str) -> tuple[str, str]:
    """The backend to use and why."""
    if requested == "fuse":
        return "fuse", "requested"
    # Loaded here, not at import: kernel and view pull in the payload reader, which
    # `appimg mounts` and `appimg umount` never need.
    from appimg.services.mount import kernel

    why_not = kernel.unavailable()
    from appimg.services.view import View

    if requested == "kernel":
        if why_not:
            raise UsageError(f"--backend kernel: the kernel backend {why_not}")
        reason = kernel.describe_plan(View(prep.image.payload, prep.rules), prep.rules)
        if reason:
            raise kernel.Unsupported(
                f"--backend kernel cannot show this view exactly: {reason} (use --backend fuse)"
            )
        return "kernel", "requested"
    if why_not:
        return "fuse", f"kernel backend: {why_not}"
    if not kernel.dm_verity_available():
        return "fuse", "kernel backend: no device-mapper, the kernel could not verify reads"
    reason = kernel.describe_plan(View(prep.image.payload, prep.rules), prep.rules)
    if reason:
        return "fuse", f"kernel backend cannot show this view: {reason}"
    return "kernel", "privileged caller with dm-verity"
