from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import HELLO, appimg


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
