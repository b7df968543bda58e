"""Shared benchmark plumbing: the generated test tree, timing, and the report table."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPIMG = [sys.executable, "-m", "appimg"]

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "import",
    "def",
    "return",
    "class",
    "self",
    "none",
    "true",
    "false",
    "lambda",
    "yield",
    "async",
    "await",
    "module",
    "data",
]


def make_tree(root: Path, files: int, total_mb: int, seed: int = 1) -> Path:
    """A deterministic app tree: ``files`` files adding up to about ``total_mb`` MB.

    Like a real app: mostly compressible text of many sizes in nested
    directories, some incompressible binary blobs. Reused if already there.
    """
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"v2 {files} {total_mb} {seed}":
        return root
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    rng = random.Random(seed)
    (root / "bin").mkdir(parents=True)
    (root / "appimg.toml").write_text(
        'id = "org.example.Bench"\nname = "Bench"\nversion = "1.0"\nentrypoint = "bin/app"\n'
    )
    (root / "bin" / "app").write_text("#!/bin/sh\nexit 0\n")
    (root / "bin" / "app").chmod(0o755)
    text_pool = " ".join(rng.choice(WORDS) for _ in range(400_000)).encode()
    budget = total_mb * 1_000_000
    sizes = [int(rng.paretovariate(1.2) * 2000) for _ in range(files)]
    scale = budget / sum(sizes)
    for index, size in enumerate(sizes):
        size = max(0, int(size * scale))
        directory = root / f"lib/d{index % 97:02}/s{index % 13}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{index:06}.{'bin' if index % 10 == 0 else 'py'}"
        if index % 10 == 0:
            path.write_bytes(rng.randbytes(size))
        else:
            start = rng.randrange(0, len(text_pool) - 1)
            repeats = size // len(text_pool) + 2
            path.write_bytes((text_pool * repeats)[start : start + size])
    marker.write_text(f"v2 {files} {total_mb} {seed}")
    return root


def drop_caches() -> bool:
    """Drop the page cache (root only) so 'cold' means cold; False if not possible."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(func: Callable[[], object], repeat: int = 1) -> float:
    """Median wall time of ``func`` over ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class Row:
    metric: str
    ours: float
    peer: float | None
    unit: str
    target: str  # e.g. "ratio <= 1.10" or "< 150 ms"
    ok: bool | None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.peer if self.peer else None


@dataclass
class Report:
    section: str
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f"{row.ratio:6.3f}" if row.ratio is not None else "   -  "
        peer = f"{row.peer:10.4f}" if row.peer is not None else "         -"
        verdict = {True: "ok", False: "MISSED", None: ""}[row.ok]
        print(
            f"  {row.metric:<44} {row.ours:10.4f} {peer} {row.unit:<3} ratio {ratio}  "
            f"[{row.target}] {verdict} {row.note}",
            flush=True,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "section": self.section,
            "facts": self.facts,
            "rows": [{**row.__dict__, "ratio": row.ratio} for row in self.rows],
        }
