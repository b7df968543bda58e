"""Issue: appimg run. Launch overhead of a trivial app beside bwrap on the extracted tree."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from .common import APPIMG, Report, Row, run

RUNS = 20


def _trivial_app(root: Path) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox (busybox-static) is needed: run tools/setup")
    if root.exists():
        shutil.rmtree(root)
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "true")
    (root / "appimg.toml").write_text(
        'id = "org.example.True"\nname = "True"\nversion = "1"\nentrypoint = "bin/true"\n'
    )
    return root


def _median(command: list[str], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def bwrap_true(tree: Path) -> list[str]:
    """The peer: bwrap running the app's `true` from its extracted tree."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SystemExit("bwrap (bubblewrap) is needed: run tools/setup")
    return [bwrap, "--unshare-user", "--unshare-pid", "--die-with-parent", "--tmpfs", "/",
            "--ro-bind", str(tree / "bin"), "/bin", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "/bin/true"]  # fmt: skip


def measure(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report("run")
    tree = _trivial_app(workdir / "true-app")
    image = workdir / "true.appimg"
    run([*APPIMG, "pack", str(tree), "-o", str(image), "--compression", "lz4"])
    direct = bwrap_true(tree)
    appimg_run = [*APPIMG, "run", "--allow-unsigned", str(image)]  # the bench image is unsigned
    subprocess.run(appimg_run, check=True, capture_output=True)  # warm the page cache
    peer, _ = _median(direct, RUNS)
    ours, samples = _median(appimg_run, RUNS)
    report.facts.update(runs=RUNS, appimg_samples=[round(s, 4) for s in samples])
    report.add(Row("appimg run `true` vs bwrap, median (ms)", ours * 1000, peer * 1000, "ms",
                   "overhead <= 250 ms", (ours - peer) <= 0.250,
                   f"overhead {(ours - peer) * 1000:.0f} ms"))  # fmt: skip
    return report
