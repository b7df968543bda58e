"""Issue: per-user install and the extended XDG search path (spec/xdg-index.md).

With 1,000 installed apps: ``appimg apps --json`` and ``appimg xdg find`` wall times
(fresh processes, Python start-up included), one more install, and GLib's
enumeration with and without the exports directory side by side. Then the install
of a ~200 MB image against ``cp`` of the same file (plain, and followed by fsync):
installing copies in the kernel and reads only the O(1) structures, the hash tree
and the exported files, which is counted here with an in-process run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .common import APPIMG, ROOT, Report, Row, run, timed

APPS = 1000
GLIB_PYTHON = "/usr/bin/python3"
GLIB_PROBE = """
import sys, time
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio
t = time.perf_counter()
apps = Gio.AppInfo.get_all()
print(time.perf_counter() - t, len(apps))
"""


def _png(size: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + b"\x80" * size for _ in range(size)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiny_app(root: Path, index: int) -> str:
    """An app with a desktop entry and two icons, of which only the 48 px one is exported."""
    app_id = f"org.bench.App{index:04}"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    exports = [
        f"share/applications/{app_id}.desktop",
        f"share/icons/hicolor/48x48/apps/{app_id}.png",
    ]
    (root / "appimg.toml").write_text(
        f'id = "{app_id}"\nname = "Bench {index}"\nversion = "1.0"\nentrypoint = "bin/app"\n'
        f"[exports]\ndesktop = [{json.dumps(exports[0])}]\nicons = [{json.dumps(exports[1])}]\n"
    )
    (root / "bin" / "app").write_text("#!/bin/sh\nexit 0\n")
    (root / "bin" / "app").chmod(0o755)
    (root / "share/applications").mkdir(parents=True, exist_ok=True)
    (root / "share/applications" / f"{app_id}.desktop").write_text(
        f"[Desktop Entry]\nType=Application\nName=Bench {index}\nExec=app %U\nIcon={app_id}\n"
        "Categories=Utility;\n"
    )
    for size in (48, 64):
        icons = root / f"share/icons/hicolor/{size}x{size}/apps"
        icons.mkdir(parents=True, exist_ok=True)
        (icons / f"{app_id}.png").write_bytes(_png(size))
    return app_id


def _pack_one(job: tuple[Path, Path, int]) -> None:
    from appimg.format import packer

    trees, out, index = job
    tree = trees / f"app{index:04}"
    _tiny_app(tree, index)
    options = packer.PackOptions(compressor="lz4", jobs=1)
    packer.pack(tree, out / f"App{index:04}.appimg", options, {"SOURCE_DATE_EPOCH": "0"})
    shutil.rmtree(tree)


def _images(workdir: Path, jobs: int) -> list[Path]:
    out = workdir / "install-apps"
    marker = out / ".complete"
    if not marker.exists():
        out.mkdir(parents=True, exist_ok=True)
        trees = workdir / "install-trees"
        trees.mkdir(exist_ok=True)
        todo = [(trees, out, i) for i in range(APPS) if not (out / f"App{i:04}.appimg").exists()]
        print(f"  packing {len(todo)} tiny apps ...", flush=True)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(_pack_one, todo, chunksize=16))
        marker.write_text("ok")
    return sorted(out.glob("App*.appimg"))


def _env(home: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "APPIMG_"))}
    return {**clean, "HOME": str(home), **extra}


def _store(workdir: Path, images: list[Path]) -> tuple[Path, float]:
    """A HOME with every tiny app installed (in-process, reused across runs)."""
    from appimg.host.dirs import UserDirs
    from appimg.services.store import index as index_mod
    from appimg.services.store import ops
    from appimg.services.store.layout import StoreLayout

    home = workdir / "install-home"
    dirs = UserDirs.from_env(_env(home))
    installed = set(index_mod.load(StoreLayout.from_dirs(dirs))["apps"])
    todo = [p for p in images[:-1] if f"org.bench.{p.stem}" not in installed]
    if todo:
        print(f"  installing {len(todo)} apps into {home} ...", flush=True)
    started = time.perf_counter()
    for image in todo:
        ops.install(dirs, image, allow_unsigned=True, program_path=os.environ.get("PATH", ""))
    per_app = (time.perf_counter() - started) / len(todo) if todo else 0.0
    return home, per_app


def _wall(
    command: list[str], env: dict[str, str], repeat: int, ok: tuple[int, ...] = (0,)
) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise RuntimeError(f"{command}: {proc.stderr.decode()}")
    return statistics.median(times)


def _glib(env: dict[str, str], repeat: int) -> tuple[float, int]:
    results = []
    for _ in range(repeat):
        out = run([GLIB_PYTHON, "-c", GLIB_PROBE], env=env, text=True).stdout.split()
        results.append((float(out[0]), int(out[1])))
    results.sort()
    return results[len(results) // 2]


def _big_image(workdir: Path, mb: int) -> Path:
    image = workdir / f"install-big-{mb}.appimg"
    if image.exists():
        return image
    tree = workdir / f"install-big-{mb}"
    if tree.exists():
        shutil.rmtree(tree)
    _tiny_app(tree, 9999)
    data = tree / "data"
    data.mkdir()
    chunk = os.urandom(1 << 20)
    for i in range(mb):  # incompressible, so the image is about `mb` MB
        (data / f"blob{i:04}.bin").write_bytes(chunk[i:] + chunk[:i])
    print(f"  packing a {mb} MB image ...", flush=True)
    run([*APPIMG, "pack", str(tree), "-o", str(image), "--compression", "lz4"])
    shutil.rmtree(tree)
    return image


def _install_reads(image: Path, workdir: Path) -> tuple[int, float, float]:
    """Bytes appimg reads itself (pread; the kernel copy is not a read) and the phases."""
    from appimg.host.dirs import UserDirs
    from appimg.services.store import ops
    from appimg.services.store.transaction import step_hook

    home = workdir / "install-probe-home"
    shutil.rmtree(home, ignore_errors=True)
    log = workdir / "install-probe.log"
    log.write_text("")
    dirs = UserDirs.from_env(_env(home))
    step = step_hook({"APPIMG_TEST_STEP_LOG": str(log)})
    counted = [0]
    real = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        data = real(fd, length, offset)
        counted[0] += len(data)
        return data

    os.pread = pread  # type: ignore[assignment]
    try:
        ops.install(dirs, image, allow_unsigned=True, program_path=os.environ.get("PATH", ""),
                    step=step)  # fmt: skip
    finally:
        os.pread = real  # type: ignore[assignment]
    steps = {}
    for line in log.read_text().splitlines():
        stamp, name = line.split()
        steps.setdefault(name, float(stamp))
    shutil.rmtree(home, ignore_errors=True)
    copy = steps["image-copied"] - steps["begin"]
    checks = steps["staged"] - steps["image-copied"]
    return counted[0], copy, checks


def measure(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report("install")
    # Byte-compile first: an installed appimg has its .pyc files (this tree may not).
    run([sys.executable, "-m", "compileall", "-q", str(ROOT / "appimg")])
    images = _images(workdir, args.jobs)
    home, per_app = _store(workdir, images)
    env = _env(home)
    from appimg.host.dirs import UserDirs
    from appimg.services.store.layout import StoreLayout

    exports = StoreLayout.from_dirs(UserDirs.from_env(env)).exports
    report.facts.update(apps=len(images) - 1, store=str(home))
    if per_app:
        report.facts["build_install_seconds_per_app"] = round(per_app, 4)
    repeat = max(args.repeat, 7)

    seconds = _wall([*APPIMG, "apps", "--json"], env, repeat)
    count = len(json.loads(run([*APPIMG, "apps", "--json"], env=env).stdout))
    report.add(Row(f"appimg apps --json, {count} apps (ms)", seconds * 1000, None, "ms",
                   "< 200 ms", seconds < 0.200))  # fmt: skip

    last = images[-2].stem  # the last installed app: the end of every scan
    finds = {
        "exported icon": f"icons/hicolor/48x48/apps/org.bench.{last}.png",
        "inside an image": f"icons/hicolor/64x64/apps/org.bench.{last}.png",
    }
    for what, rel in finds.items():
        seconds = _wall([*APPIMG, "xdg", "find", rel], env, repeat)
        report.add(Row(f"appimg xdg find, {what} (ms)", seconds * 1000, None, "ms", "< 100 ms",
                       seconds < 0.100))  # fmt: skip
    seconds = _wall([*APPIMG, "xdg", "find", "icons/none.png"], env, repeat, ok=(1,))
    report.add(Row("appimg xdg find, not found anywhere (ms)", seconds * 1000, None, "ms",
                   "< 100 ms", seconds < 0.100))  # fmt: skip

    if Path(GLIB_PYTHON).exists():
        with_dir = {**env, "XDG_DATA_DIRS": f"{exports}:/usr/local/share:/usr/share"}
        without = {**env, "XDG_DATA_DIRS": "/usr/local/share:/usr/share"}
        t_with, n_with = _glib(with_dir, repeat)
        t_without, n_without = _glib(without, repeat)
        report.facts.update(glib_apps_with_exports=n_with, glib_apps_without=n_without)
        report.add(Row(f"GLib get_all: {n_with} vs {n_without} apps (ms)", t_with * 1000,
                       t_without * 1000, "ms", "reported", None,
                       "with the exports dir vs without"))  # fmt: skip

    # One more install into the store of 1,000 (lock, copy, checks, exports, index, caches).
    extra = images[-1]
    install_env = {**env}
    uninstall = [*APPIMG, "uninstall", f"org.bench.{extra.stem}"]
    subprocess.run(uninstall, env=install_env, capture_output=True)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run([*APPIMG, "install", str(extra), "--allow-unsigned"], env=install_env)
        times.append(time.perf_counter() - start)
        run(uninstall, env=install_env)
    seconds = statistics.median(times)
    report.add(Row("install one app into a store of 1,000 (ms)", seconds * 1000, None, "ms",
                   "reported", None))  # fmt: skip

    # A 200 MB image: install vs cp of the same file.
    big = _big_image(workdir, 200)
    size = big.stat().st_size
    big_home = workdir / "install-big-home"
    big_env = _env(big_home)
    target = workdir / "install-cp-target.appimg"

    def cp(sync: bool) -> None:
        target.unlink(missing_ok=True)
        run(["cp", str(big), str(target)])
        if sync:
            run(["sync", str(target)])

    def install_seconds(image: Path, app_id: str) -> float:
        """Median wall time of `appimg install` into an empty store (then uninstalled)."""
        shutil.rmtree(big_home, ignore_errors=True)
        times = []
        for _ in range(max(args.repeat, 3)):
            start = time.perf_counter()
            run([*APPIMG, "install", str(image), "--allow-unsigned"], env=big_env)
            times.append(time.perf_counter() - start)
            run([*APPIMG, "uninstall", app_id], env=big_env)
        return statistics.median(times)

    install_s = install_seconds(big, "org.bench.App9999")
    small_s = install_seconds(images[-1], f"org.bench.{images[-1].stem}")
    cp_s = timed(lambda: cp(False), args.repeat)
    cp_sync_s = timed(lambda: cp(True), args.repeat)
    target.unlink(missing_ok=True)
    read, copy_s, checks_s = _install_reads(big, workdir)
    report.facts.update(big_image_bytes=size, bytes_read_by_install=read,
                        install_small_image_s=round(small_s, 4),
                        install_copy_phase_s=round(copy_s, 4),
                        install_check_and_export_phase_s=round(checks_s, 4))  # fmt: skip
    print(f"  in-process install of the big image: copy+fsync {copy_s:.3f} s, checks and "
          f"exports {checks_s:.3f} s; a tiny image installs in {small_s:.3f} s")  # fmt: skip
    report.add(Row(f"install {size / 1e6:.0f} MB image vs cp (s)", install_s, cp_s, "s",
                   "reported", None))  # fmt: skip
    report.add(Row("install vs cp + fsync of the same file (s)", install_s, cp_sync_s, "s",
                   "reported", None))  # fmt: skip
    marginal = install_s - small_s
    report.add(Row("install minus a tiny install, vs cp + fsync (s)", marginal, cp_sync_s, "s",
                   "ratio <= 1.25", marginal / cp_sync_s <= 1.25,
                   "what the size costs: the copy, not a read"))  # fmt: skip
    report.add(Row("bytes install reads itself (% of image)", 100 * read / size, None, "%",
                   "< 2 %", read / size < 0.02, f"{read} of {size} bytes"))  # fmt: skip
    return report
