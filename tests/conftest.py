"""Shared fixtures, and the two markers of pyproject.toml made real.

``root``: the test needs root (it mounts block devices, or switches to an
unprivileged user). Marked tests are skipped with one reason when the suite
is not run as root; CI runs it as root, so there they run.

``slow``: the long (soak) mode of a test whose bounded mode runs by default,
e.g. the FUSE concurrent-readers test, 10 s by default and 60 s when slow.
Slow tests are skipped unless asked for: ``pytest --run-slow`` (everything) or
``pytest -m slow`` (only them). CI runs the bounded modes only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import HELLO, appimg

NOT_ROOT = "needs root (CI runs the suite as root)"
NOT_SLOW = "slow: run with --run-slow or -m slow"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run the tests marked slow (long soak modes)"
    )


def _slow_requested(config: pytest.Config) -> bool:
    return config.getoption("--run-slow") or "slow" in (config.getoption("markexpr") or "")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the skipif marks are evaluated, so a root-only test says why with one text
    # whatever else it needs (the kernel backend, loop devices).
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    if item.get_closest_marker("slow") and not _slow_requested(item.config):
        pytest.skip(NOT_SLOW)


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    key = directory / "release.key"
    appimg("keygen", "-o", key)
    return key, directory / "release.key.pub"


@pytest.fixture(scope="session")
def hello_image(tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]) -> Path:
    """The example app, packed and signed once per session. Tests must not modify it."""
    out = tmp_path_factory.mktemp("hello") / "Hello.appimg"
    appimg("pack", HELLO, "-o", out, "--sign", keypair[0])
    return out
