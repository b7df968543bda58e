"""Issue 13: delta updates from a registry (spec/distribution.md §7).

Bytes an update fetches / the new image's size, computed exactly as ``appimg
update`` plans it (chunks of the new image that the installed one lacks, coalesced
ranges), for (a) one small file changed, (b) one file added in the middle of the
tree, (c) a new release of a real program: two versions of Debian's ``git``
package (``apt-get download``), unpacked and packed as apps. The peer column is the
same measure with fixed 64 KiB blocks (what a delta over fixed-offset blocks, such
as the verity tree's, would fetch), which shows why the chunking is content-defined.
No registry is involved: the figures are the plan's; tests/system/test_oci.py
checks a real registry serves what the plan says.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

from appimg.services.oci import chunks
from appimg.services.oci.delta import plan

from .common import APPIMG, Report, Row, make_tree, run

FIXED = 64 << 10
#: Two versions of a real program that the Debian archive carries side by side.
PACKAGE = "git"


def _pack(tree: Path, out: Path) -> Path:
    run([*APPIMG, "pack", str(tree), "-o", str(out)], env={"SOURCE_DATE_EPOCH": "0",
                                                            "PATH": "/usr/bin:/bin"})  # fmt: skip
    return out


def fetched_fraction(old: Path, new: Path) -> tuple[float, float, int]:
    """(content-defined, fixed 64 KiB) bytes to fetch / new size, and range requests."""
    with open(old, "rb") as handle:
        have = {c.sha256: c.offset for c in chunks.chunk_file(handle)}
    with open(new, "rb") as handle:
        wanted = chunks.chunk_file(handle)
    size = new.stat().st_size
    steps = [s for s in plan(wanted, have) if s.fetch]
    cdc = sum(s.length for s in steps) / size
    old_blocks = _fixed(old.read_bytes())
    data = new.read_bytes()
    missing = sum(len(data[i : i + FIXED]) for i in range(0, len(data), FIXED)
                  if hashlib.sha256(data[i : i + FIXED]).digest() not in old_blocks)  # fmt: skip
    return cdc, missing / size, len(steps)


def _fixed(data: bytes) -> set[bytes]:
    return {hashlib.sha256(data[i : i + FIXED]).digest() for i in range(0, len(data), FIXED)}


def _versions(workdir: Path) -> list[Path]:
    """The two newest versions of PACKAGE's .deb, downloaded once (none if offline)."""
    debs = workdir / "debs"
    debs.mkdir(exist_ok=True)
    found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
    if len(found) >= 2:
        return found[-2:]
    madison = subprocess.run(["apt-cache", "madison", PACKAGE], capture_output=True, text=True)
    versions = sorted({line.split("|")[1].strip() for line in madison.stdout.splitlines()})
    for version in versions[-2:]:
        subprocess.run(["apt-get", "download", f"{PACKAGE}={version}"], cwd=debs,
                       capture_output=True)  # fmt: skip
    return sorted(debs.glob(f"{PACKAGE}_*.deb"))[-2:]


def measure(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report("delta")
    base = make_tree(workdir / "delta-tree", max(1, args.files // 4), max(1, args.mb // 3))
    report.facts.update(chunking=chunks.ALGORITHM, min=chunks.MIN_SIZE, max=chunks.MAX_SIZE)
    old = _pack(base, workdir / "delta-1.appimg")
    print(f"  image {old.stat().st_size / 1e6:.1f} MB")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix == ".py")
    rng = random.Random(13)

    cases: list[tuple[str, Path]] = []
    changed = workdir / "delta-changed"
    shutil.rmtree(changed, ignore_errors=True)
    shutil.copytree(base, changed)
    victim = changed / files[len(files) // 2].relative_to(base)
    text = bytearray(victim.read_bytes() or b" ")
    text[len(text) // 2] ^= 0x20  # one character's case
    victim.write_bytes(bytes(text))
    cases.append(("(a) one small file changed", changed))

    added = workdir / "delta-added"
    shutil.rmtree(added, ignore_errors=True)
    shutil.copytree(base, added)
    middle = added / files[len(files) // 2].relative_to(base).parent / "added-file.py"
    middle.write_bytes(rng.randbytes(20_000))
    cases.append(("(b) one file added mid-tree", added))

    for label, tree in cases:
        new = _pack(tree, workdir / f"{tree.name}.appimg")
        cdc, fixed, requests = fetched_fraction(old, new)
        report.add(Row(f"{label}: fetched / size", cdc, fixed, "", "< 0.25", cdc < 0.25,
                       f"{requests} range request(s)"))  # fmt: skip

    debs = _versions(workdir)
    if len(debs) < 2:
        print(f"  (c) skipped: two versions of {PACKAGE} could not be downloaded")
        return report
    images = []
    for deb in debs:
        tree = workdir / f"delta-{deb.stem}"
        shutil.rmtree(tree, ignore_errors=True)
        (tree / "bin").mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(tree / "usr")])
        (tree / "appimg.toml").write_text('id = "org.example.Git"\nname = "Git"\n'
                                          'version = "1"\nentrypoint = "bin/app"\n')  # fmt: skip
        launcher = '#!/bin/sh\nexec "$(dirname "$0")/../usr/usr/bin/git" "$@"\n'
        (tree / "bin" / "app").write_text(launcher)
        (tree / "bin" / "app").chmod(0o755)
        images.append(_pack(tree, workdir / f"delta-{deb.stem}.appimg"))
    cdc, fixed, requests = fetched_fraction(images[0], images[1])
    names = " -> ".join(d.stem.split("_")[1] for d in debs)
    report.facts["release"] = f"{PACKAGE} {names}"
    report.add(Row(f"(c) {PACKAGE} new release: fetched / size", cdc, fixed, "", "< 1", cdc < 1,
                   f"{names}, {images[1].stat().st_size / 1e6:.1f} MB, "
                   f"{requests} range request(s)"))  # fmt: skip
    return report
