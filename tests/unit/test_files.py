"""The one size-capped read of host files: a file over the cap is refused, never cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from appimg.errors import PolicyError, SignatureError, StoreError
from appimg.files import FileTooLargeError, read_capped
from appimg.format import keys
from appimg.host import whitelist
from appimg.services.store import index as index_mod
from appimg.services.store.layout import StoreLayout


def test_read_capped_accepts_up_to_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_capped(path, 10) == b"x" * 10
    assert read_capped(str(path), 11) == b"x" * 10


def test_read_capped_refuses_instead_of_truncating(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    with pytest.raises(FileTooLargeError, match=rf"^{path}: larger than 10 bytes$"):
        read_capped(path, 10)
    with pytest.raises(PolicyError, match="too big"):
        read_capped(path, 10, PolicyError, "too big")


def test_read_capped_leaves_os_errors_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_capped(tmp_path / "missing", 10)
    with pytest.raises(IsADirectoryError):
        read_capped(tmp_path, 10)


def test_callers_keep_their_error_and_wording(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"#" * (keys.MAX_KEY_FILE + 1))
    with pytest.raises(SignatureError, match="too large to be a key"):
        keys.load_private(big)
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "big.toml").write_bytes(b"#" * (whitelist.MAX_POLICY_FILE_BYTES + 1))
    with pytest.raises(PolicyError, match="larger than"):
        whitelist._directory(policy)
    layout = StoreLayout(tmp_path / "store")
    layout.root.mkdir()
    with layout.index.open("wb") as handle:
        handle.truncate(index_mod.MAX_INDEX_BYTES + 1)
    with pytest.raises(StoreError, match="larger than"):
        index_mod.read_bytes(layout)
