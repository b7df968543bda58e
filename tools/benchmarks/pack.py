"""Issue: image format and packer. appimg pack vs mksquashfs; inspect/verify latency;
open + one small read independent of the file count."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from .common import APPIMG, Report, Row, make_tree, run, timed

PROBE = """
import sys, time
t = time.perf_counter()
from appimg.format.image import Image
with Image.open(sys.argv[1]) as image:
    reader = image.payload
    inode = reader.lookup(sys.argv[2])
    data = reader.read(inode, 0, inode.size)
print(time.perf_counter() - t)
"""


def _probe(image: Path, path: str, repeat: int) -> float:
    """Median in-process time of open + lookup + read, in a fresh interpreter each run."""
    times = []
    for _ in range(max(repeat, 5)):
        out = run([sys.executable, "-c", PROBE, str(image), path], text=True).stdout
        times.append(float(out))
    times.sort()
    return times[len(times) // 2]


def _tiny_tree(root: Path, files: int) -> Path:
    marker = root / ".complete"
    if marker.exists():
        return root
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "appimg.toml").write_text(
        'id = "org.example.Many"\nname = "Many"\nversion = "1"\nentrypoint = "bin/app"\n'
    )
    (root / "bin" / "app").write_text("#!/bin/sh\n")
    (root / "bin" / "app").chmod(0o755)
    for i in range(files):
        d = root / f"d{i % 100:02}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:06}.txt").write_text(f"file {i}\n")
    marker.write_text("ok")
    return root


def measure(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report("pack")
    tree = make_tree(workdir / "tree", args.files, args.mb)
    files = sum(1 for _ in tree.rglob("*") if _.is_file())
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    report.facts.update(files=files, bytes=size, jobs=args.jobs, compressor="zstd", level=15)
    print(f"  tree: {files} files, {size / 1e6:.0f} MB; zstd level 15, 128K blocks, -j {args.jobs}")

    image = workdir / "bench.appimg"
    sqfs = workdir / "bench.sqfs"
    pack_ours = [
        *APPIMG,
        "pack",
        str(tree),
        "-o",
        str(image),
        "-j",
        str(args.jobs),
        "--compression",
        "zstd",
        "--level",
        "15",
        "--block-size",
        "128K",
    ]
    pack_peer = ["mksquashfs", str(tree), str(sqfs), "-noappend", "-quiet", "-comp", "zstd",
                 "-Xcompression-level", "15", "-b", "131072", "-processors", str(args.jobs),
                 "-all-root", "-no-xattrs"]  # fmt: skip
    # Interleaved (ours, peer, ours, peer, ...) so that drifts of this shared VM's
    # speed hit both sides alike; medians of each side.
    ours_times, peer_times = [], []
    for _ in range(args.repeat):
        ours_times.append(timed(lambda: run(pack_ours)))
        peer_times.append(timed(lambda: run(pack_peer)))
    ours, peer = statistics.median(ours_times), statistics.median(peer_times)
    report.facts.update(pack_times=[round(t, 2) for t in ours_times],
                        mksquashfs_times=[round(t, 2) for t in peer_times])  # fmt: skip
    report.add(Row("pack time (s)", ours, peer, "s", "ratio <= 1.10", ours / peer <= 1.10))

    from appimg.format.verity.hashtree import hash_tree_size

    mk_size = sqfs.stat().st_size
    peer_total = mk_size + hash_tree_size(-(-mk_size // 4096))
    ours_size = image.stat().st_size
    report.add(Row("image size (MB) vs mksquashfs + verity", ours_size / 1e6, peer_total / 1e6,
                   "MB", "ratio <= 1.02", ours_size / peer_total <= 1.02))  # fmt: skip

    for command in ("inspect", "verify"):
        seconds = timed(lambda c=command: run([*APPIMG, c, str(image)]), max(args.repeat, 10))
        report.add(Row(f"appimg {command} (ms)", seconds * 1000, None, "ms", "< 150 ms",
                       seconds < 0.150))  # fmt: skip

    small = workdir / "many-10k.appimg"
    large = workdir / "many-100k.appimg"
    for count, target in ((10_000, small), (100_000, large)):
        if not target.exists():
            t = _tiny_tree(workdir / f"many-{count}", count)
            subprocess.run([*APPIMG, "pack", str(t), "-o", str(target), "--compression", "lz4"],
                           check=True, capture_output=True)  # fmt: skip
    t10 = _probe(small, "/d07/f000007.txt", args.repeat)
    t100 = _probe(large, "/d07/f000007.txt", args.repeat)
    report.add(Row("open + read one file, 100k vs 10k files (ms)", t100 * 1000, t10 * 1000, "ms",
                   "ratio <= 1.20", t100 / t10 <= 1.20))  # fmt: skip
    return report
