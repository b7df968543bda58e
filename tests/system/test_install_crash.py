"""Crash safety and concurrency of the store (spec/xdg-index.md §6).

Commands are killed with SIGKILL at random moments of install, update, rollback and
uninstall (APPIMG_TEST_SLOW_STEPS stretches each phase so the kills spread over all
of them, APPIMG_TEST_STEP_LOG says which phase was hit). Right after each kill the
index parses and every visible file belongs to the old or the new state; after the
next command the store is consistent and the app is exactly in its old or new state.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .test_install_store import (
    assert_consistent,
    exported_files,
    home_env,
    load_index,
    make_app,
    pack,
    store_dir,
)

TRIALS = 110
SLOW = "0.015"  # seconds per phase
APPS = ("org.example.CrashA", "org.example.CrashB")


@pytest.fixture(scope="module")
def crash_images(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    trees = tmp_path_factory.mktemp("crash-trees")
    out = tmp_path_factory.mktemp("crash-images")
    images = {}
    for app_id in APPS:
        for version in ("1", "2"):
            tree = make_app(trees / f"{app_id}-{version}", app_id, version)
            # More than one file per kind, so that a kill can fall between two renames.
            extra = tree / "share/icons/hicolor/scalable/apps" / f"{app_id}-symbolic.svg"
            extra.parent.mkdir(parents=True, exist_ok=True)
            extra.write_text(f'<svg xmlns="http://www.w3.org/2000/svg"><!-- {version} --></svg>')
            images[app_id, version] = pack(tree, out / f"{app_id}-{version}.appimg")
    return images


def spawn(env: dict[str, str], *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "appimg", *map(str, args)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the kill takes the cache tools it runs with it
    )


def summary(entry: dict[str, Any] | None) -> Any:
    if entry is None:
        return None
    return [v["version"] for v in entry["versions"]]


def choose(rng: random.Random, index: dict[str, Any], images: dict) -> tuple[list[Any], str, Any]:
    """A random command valid in this state and the app state it leads to."""
    app_id = rng.choice(APPS)
    entry = index["apps"].get(app_id)
    if entry is None:
        version = rng.choice("12")
        return ["install", images[app_id, version], "--allow-unsigned"], app_id, [version]
    versions = summary(entry)
    options: list[tuple[list[Any], Any]] = [(["uninstall", app_id], None)]
    other = "2" if versions[0] == "1" else "1"
    if other not in versions:
        options.append((["update", images[app_id, other], "--allow-unsigned"], [other, *versions]))
    if len(versions) == 2:
        options.append((["rollback", app_id], versions[::-1]))
    args, after = rng.choice(options)
    return args, app_id, after


def check_torn_state(home: Path, before: dict[str, Any]) -> None:
    """Right after a kill: everything visible belongs to the old or the new state."""
    store = store_dir(home)
    index_file = store / "index.json"
    current = json.loads(index_file.read_bytes()) if index_file.exists() else None  # parses
    journal_file = store / "journal.json"
    journal = json.loads(journal_file.read_bytes()) if journal_file.exists() else {}
    allowed = collections.defaultdict(set)
    for index in (before, current or {"apps": {}}):
        for app in index["apps"].values():
            for rel, sha in app["exported"].items():
                allowed[rel].add(sha)
    for rel, sha in ((journal.get("entry") or {}).get("exported") or {}).items():
        allowed[rel].add(sha)
    for rel, sha in exported_files(home).items():
        assert sha in allowed[rel], f"{rel} is neither the old nor the new file"


def run_killed(env: dict[str, str], args: list[Any], delay: float) -> str:
    """Run a command, SIGKILL it (and its session) after ``delay`` s; the last phase reached."""
    log = Path(env["APPIMG_TEST_STEP_LOG"])
    log.write_text("")
    proc = spawn(env, *args)
    try:
        proc.wait(timeout=delay)
        reached = "finished"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        lines = log.read_text().split()
        reached = lines[-1] if lines else "startup"
    if proc.stderr:
        proc.stderr.close()
    return reached


def timeline(env: dict[str, str], args: list[Any]) -> tuple[float, float]:
    """Seconds from spawn to the first and the last phase of an unkilled run."""
    log = Path(env["APPIMG_TEST_STEP_LOG"])
    log.write_text("")
    start = time.monotonic()
    proc = spawn(env, *args)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    stamps = [float(line.split()[0]) for line in log.read_text().splitlines()]
    return stamps[0] - start, stamps[-1] - start


def test_kill_at_random_points(tmp_path: Path, crash_images: dict) -> None:
    rng = random.Random(20240505)
    home = tmp_path / "home"
    log = tmp_path / "steps.log"
    env = home_env(home, APPIMG_TEST_SLOW_STEPS=SLOW, APPIMG_TEST_STEP_LOG=str(log))
    quiet = home_env(home)

    # Calibrate: when the phases of each command begin and end after it is spawned.
    windows = {}
    for args in (
        ["install", crash_images[APPS[0], "1"], "--allow-unsigned"],
        ["update", crash_images[APPS[0], "2"], "--allow-unsigned"],
        ["rollback", APPS[0]],
        ["uninstall", APPS[0]],
    ):
        first, last = timeline(env, args)
        windows[args[0]] = (first * 0.9, last * 1.05)

    reached: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    for trial in range(TRIALS):
        before = load_index(home) or {"apps": {}}
        args, app_id, after = choose(rng, before, crash_images)
        old = before["apps"].get(app_id)
        phase = run_killed(env, args, rng.uniform(*windows[args[0]]))
        reached[f"{args[0]}:{phase}"] += 1
        check_torn_state(home, before)
        if trial % 5 == 4:
            # A crash of the recovering command itself must be recoverable too.
            run_killed(env, ["list"], rng.uniform(*windows["uninstall"]))
        result = subprocess.run(
            [sys.executable, "-m", "appimg", "list", "--json"],
            env={**os.environ, **quiet},
            capture_output=True,
        )
        assert result.returncode == 0, result.stderr.decode()
        index = assert_consistent(home)
        now = index["apps"].get(app_id)
        assert now == old or summary(now) == after, (trial, args[0], phase, summary(now))
        outcomes["new" if now != old else "old"] += 1
        for other in set(before["apps"]) - {app_id}:
            assert index["apps"][other] == before["apps"][other]

    print(f"\n{TRIALS} kills; state after recovery: {dict(outcomes)}")
    for name, count in sorted(reached.items()):
        print(f"  {count:3}  {name}")
    phases = {name.split(":")[1] for name in reached}
    # The kills must land all over: before the journal, around the commit, after it.
    assert {"staged", "journal", "committed", "exports-applied"} <= phases, reached
    assert outcomes["old"] >= 10 and outcomes["new"] >= 10, outcomes


def test_concurrent_installs_and_uninstalls(tmp_path: Path) -> None:
    trees = tmp_path / "trees"
    images = [
        pack(make_app(trees / f"app{i}", f"org.example.Many{i}"), tmp_path / f"Many{i}.appimg")
        for i in range(10)
    ]
    home = tmp_path / "home"
    env = home_env(home)
    for image in images[:5]:
        subprocess.run(
            [sys.executable, "-m", "appimg", "install", image, "--allow-unsigned"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    for round_ in range(2):
        installed = {f"org.example.Many{i}" for i in range(10)} & set(load_index(home)["apps"])
        procs = []
        for i, image in enumerate(images):
            app_id = f"org.example.Many{i}"
            args = (
                ["uninstall", app_id]
                if app_id in installed
                else ["install", image, "--allow-unsigned"]
            )
            procs.append(spawn(env, *args))
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
        index = assert_consistent(home)
        expected = {f"org.example.Many{i}" for i in range(10)} - installed
        assert set(index["apps"]) == expected, round_
        share = store_dir(home) / "exports/share/applications"
        assert sorted(p.name for p in share.glob("*.desktop")) == sorted(
            f"{a}.desktop" for a in expected
        )
