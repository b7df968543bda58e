"""What ``appimg pack`` checks besides the manifest's own rules (spec/manifest.md §8).

An image that packs but that ``appimg install`` or ``appimg run`` would refuse
costs a packager a round trip: these checks report it at pack time.
:func:`check_tree` looks at the app directory before packing (the profile
exists, the entry point can start under it, desktop files are exported, the
ELF files' libraries and glibc version); :func:`check_image` applies the very
export rules of ``appimg install`` (:func:`~appimg.services.exports.plan.plan_exports`)
to the packed image, before it is renamed into place.

A finding is an ``error`` (install or run would refuse it: pack fails, unless
``--warn``), a ``warning`` (it will not work on this host) or ``info``.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appimg.errors import AppimgError, FormatError
from appimg.host.dirs import UserDirs
from appimg.services.authoring import elf, tree

#: ELF files looked at for libraries and glibc versions; a bigger app is sampled.
MAX_ELF_FILES = 2000


@dataclass(frozen=True)
class Finding:
    level: str  # "error", "warning" or "info"
    message: str


def _known_profiles(dirs: UserDirs) -> list[str]:
    from appimg.host.profile_dirs import SYSTEM_PROFILE_DIR, user_profile_dir
    from appimg.host.profiles import shipped_profiles

    names = set(shipped_profiles())
    for folder in (user_profile_dir(dirs), SYSTEM_PROFILE_DIR):
        with contextlib.suppress(OSError):
            names.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    return sorted(names)


def check_profile(name: str, dirs: UserDirs) -> list[Finding]:
    from appimg.host.profiles import load_profile

    try:
        if load_profile(name, dirs) is not None:
            return []
    except AppimgError as exc:
        return [Finding("error", f"profile {name!r}: {exc}")]
    known = _known_profiles(dirs)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return [Finding("error", f"profile {name!r} is not a profile of this host{hint}; "
                          f"known: {', '.join(known)}")]  # fmt: skip


def _program_findings(app_dir: Path, key: str, rel: str, profile: str) -> list[Finding]:
    path = tree.resolve(app_dir, rel)
    if path is None or not path.is_file() or profile != "none":
        return []
    if elf.is_elf(path):
        try:
            info = elf.read_elf(path)
        except FormatError as exc:
            return [Finding("error", f"{key}: {exc}")]
        if info.interp and tree.resolve(app_dir, info.interp) is None:
            return [Finding("error", f"{key}: {rel} is dynamically linked (it needs "
                                  f"{info.interp}), but profile \"none\" shows it no host "
                                  'libraries: use profile = "host"')]  # fmt: skip
        return []
    head = tree.head(app_dir, rel)
    if head.startswith(b"#!"):
        interp = head[2:].split(b"\n", 1)[0].split()
        program = interp[0].decode("utf-8", "replace") if interp else ""
        if program and tree.resolve(app_dir, program) is None:
            # A warning only: the script may be started some other way (a command of its own).
            return [Finding("warning", f"{key}: {rel} is a script for {program}, which profile "
                                  '"none" does not show it: use profile = "host"')]  # fmt: skip
    return []


def _desktop_files(files: list[str]) -> list[str]:
    return [f for f in files if re.search(r"(^|/)share/applications/.+\.desktop\Z", f)]


def check_tree(app_dir: Path, manifest: Mapping[str, Any], dirs: UserDirs) -> list[Finding]:
    """Findings about the app directory whose compiled manifest is ``manifest``."""
    profile = manifest["profile"]
    found = check_profile(profile, dirs)
    programs = [("entrypoint", manifest["entrypoint"])]
    programs += [(f"commands.{n}", p) for n, p in sorted(manifest.get("commands", {}).items())]
    for key, rel in programs:
        found += _program_findings(app_dir, key, rel, profile)
    files = list(tree.walk(app_dir, strict=False))  # a sample of a huge tree is enough
    desktop = _desktop_files(files)
    if desktop and not manifest.get("exports", {}).get("desktop"):
        found.append(Finding("error", f"the app has desktop files ({desktop[0]}"
                                   f"{', ...' if len(desktop) > 1 else ''}) but exports none: "
                                   "install exports only files named after the app id "
                                   "under share/ (`appimg init DIR --from TREE` renames "
                                   "them)"))  # fmt: skip
    found += _elf_findings(app_dir, files, profile)
    return found


def _elf_findings(app_dir: Path, files: list[str], profile: str) -> list[Finding]:
    """The newest glibc symbol version the ELF files need against the host's (as
    appimagelint reports it), and libraries neither the app nor the host provides."""
    names = {f.rsplit("/", 1)[-1] for f in files}
    host = elf.host_libraries() if profile != "none" else frozenset()
    newest: tuple[tuple[int, ...], str] | None = None
    missing: dict[str, list[str]] = {}
    count = 0
    for rel in files:
        path = app_dir / rel
        if not elf.is_elf(path):
            continue
        count += 1
        if count > MAX_ELF_FILES:
            break
        try:
            info = elf.read_elf(path)
        except FormatError:
            continue  # not a program the loader would take either
        if info.glibc and (newest is None or info.glibc > newest[0]):
            newest = (info.glibc, rel)
        if profile == "none" and info.interp and tree.resolve(app_dir, info.interp) is None:
            continue  # it cannot start at all: the entry point's finding says why
        for lib in info.needed:
            if lib not in names and (host is None or lib not in host):
                missing.setdefault(lib, []).append(rel)
    found = []
    for lib, users in sorted(missing.items()):
        where = "is not in the app" if profile == "none" else "is in neither the app nor this host"
        more = f" and {len(users) - 1} more" if len(users) > 1 else ""
        found.append(Finding("warning", f"{lib} (needed by {users[0]}{more}) {where}: "
                                        "it will not start here"))  # fmt: skip
    if newest is not None:
        host_version = elf.host_glibc()
        needs = f"GLIBC_{elf.glibc_text(newest[0])}"
        if host_version is None:
            found.append(Finding("info", f"needs {needs} ({newest[1]}); this host's C library "
                                        "is not glibc"))  # fmt: skip
        else:
            older = " (too old: it will not start here)" if host_version < newest[0] else ""
            level = "warning" if older else "info"
            found.append(Finding(level, f"needs {needs} ({newest[1]}), this host has "
                                        f"{elf.glibc_text(host_version)}{older}"))  # fmt: skip
    return found


def check_image(image_path: Path) -> list[Finding]:
    """``appimg install``'s export rules applied to a packed image."""
    from appimg.format.image import Image
    from appimg.services.exports.plan import Context, plan_exports

    with Image.open(image_path) as image:
        manifest = image.manifest
        ctx = Context(app_id=manifest["id"], version=manifest["version"],
                      launcher="/usr/bin/appimg", image_path=str(image_path))  # fmt: skip
        plan = plan_exports(image.payload, manifest, ctx)
    return [
        Finding("error", f"exports: {r['path']}: {r['reason']} (appimg install would refuse it)")
        for r in plan.refused
    ]
