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
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appimg.format import keys
from appimg.format.image import Image

from .forge import break_signature, rewrite_signatures
from .helpers import HELLO, appimg
from .users import ensure_user, remove_created_dirs, user_env, user_tmpdir

# `appimg run` keeps its mount for a grace period after the last run; the suite checks
# that nothing is left mounted when a run returns, so it turns the grace period off
# (tests/system/test_launch.py tests it). Set here so that every subprocess inherits it.
os.environ["APPIMG_MOUNT_GRACE"] = "0"

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


@pytest.fixture(scope="session", autouse=True)
def _remove_user_dirs() -> Iterator[None]:
    """The directories made for the non-root test user live outside pytest's tmp dirs:
    remove them when the session ends, so no run leaves anything in /tmp."""
    yield
    remove_created_dirs()


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


@pytest.fixture(scope="session")
def signature_images(
    tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]
) -> dict[str, Path]:
    """unsigned, signed (by ``keypair``), other (by a second key), invalid (a broken
    signature by ``keypair``'s key), mixed (a valid one by ``keypair`` and a broken one)."""
    base = tmp_path_factory.mktemp("trust")
    other_key = base / "other.key"
    appimg("keygen", "-o", other_key)
    out = {name: base / f"{name}.appimg" for name in ("unsigned", "signed", "other")}
    appimg("pack", HELLO, "-o", out["unsigned"])
    appimg("pack", HELLO, "-o", out["signed"], "--sign", keypair[0])
    appimg("pack", HELLO, "-o", out["other"], "--sign", other_key)
    out["invalid"] = Path(shutil.copy(out["signed"], base / "invalid.appimg"))
    rewrite_signatures(out["invalid"], break_signature)
    out["mixed"] = base / "mixed.appimg"
    appimg("pack", HELLO, "-o", out["mixed"], "--sign", keypair[0], "--sign", other_key)
    with Image.open(out["mixed"]) as opened:
        ids = [s["key_id"] for s in opened.signature_block.signatures]
    other_id = keys.key_id(keys.load_public(other_key))
    rewrite_signatures(out["mixed"], lambda b: break_signature(b, ids.index(other_id)))
    return out


@pytest.fixture
def user_home() -> tuple:
    """The non-root test user, a fresh home of its own and a login-like environment."""
    user = ensure_user()
    home = user_tmpdir(user, "appimg-home-")
    return user, home, user_env(user, home)
