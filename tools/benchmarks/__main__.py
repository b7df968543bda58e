"""Entry point of tools/bench: run the chosen sections and print/save their reports."""

from __future__ import annotations

import argparse
import compileall
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .common import ROOT

#: Section name -> module in this package with ``measure(args, workdir) -> Report``.
SECTIONS = {
    "pack": "pack",
    "install": "install",
    "run": "run",
    "launch": "launch",
    "mount": "mount",
    "delta": "delta",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="tools/bench",
        description="Measure appimg beside its peer tools in one run; report ratios. "
        "Sections: " + ", ".join(SECTIONS) + " (default: all).",
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help="sections to run")
    parser.add_argument("--files", type=int, default=12_000, help="files in the test tree")
    parser.add_argument("--mb", type=int, default=120, help="approximate tree size in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed measurement")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="threads")
    parser.add_argument("--workdir", type=Path, help="keep generated trees and images here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    args = parser.parse_args()
    chosen = args.sections or list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="appimg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Byte-compiled as an installed package is (pip compiles on install): with
    # PYTHONDONTWRITEBYTECODE set, every start would otherwise compile changed modules.
    compileall.compile_dir(ROOT / "appimg", quiet=1)
    print(f"workdir {workdir}; cpus {os.cpu_count()}; python {sys.version.split()[0]}")
    print(f"  {'metric':<44} {'appimg':>10} {'peer':>10}")
    reports = []
    try:
        for name in chosen:
            print(f"[{name}]", flush=True)
            module = importlib.import_module(f"tools.benchmarks.{SECTIONS[name]}")
            reports.append(module.measure(args, workdir).to_json())
    finally:
        if args.workdir is None:  # a workdir of our own: gone with the run
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    missed = [r["metric"] for rep in reports for r in rep["rows"] if r["ok"] is False]
    print("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
