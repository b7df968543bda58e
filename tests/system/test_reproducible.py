"""Packing is reproducible: same tree + SOURCE_DATE_EPOCH + key give identical bytes."""

from __future__ import annotations

import os
from pathlib import Path

from ..helpers import appimg, make_rich_tree, relax_readonly


def _touch_all(root: Path, when: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath, name), (when, when), follow_symlinks=False)


def test_two_copies_made_differently_pack_identically(tmp_path: Path, keypair) -> None:
    first = make_rich_tree(tmp_path / "a")
    second = make_rich_tree(tmp_path / "b", reverse=True)
    _touch_all(first, 1_000_000)
    _touch_all(second, 1_700_000_000)
    env = {"SOURCE_DATE_EPOCH": "1600000000"}
    try:
        appimg("pack", first, "-o", tmp_path / "a.appimg", "--sign", keypair[0], env=env)
        appimg("pack", second, "-o", tmp_path / "b.appimg", "--sign", keypair[0], env=env,
               cwd=tmp_path)  # fmt: skip
        a = (tmp_path / "a.appimg").read_bytes()
        b = (tmp_path / "b.appimg").read_bytes()
        assert a == b
        # The epoch is what the files' times become.
        listing = appimg("ls", "--json", tmp_path / "a.appimg", "data").stdout
        assert '"mtime": 1600000000' in listing
        # A different epoch gives a different image.
        appimg("pack", first, "-o", tmp_path / "c.appimg", env={"SOURCE_DATE_EPOCH": "5"})
        assert (tmp_path / "c.appimg").read_bytes() != a
    finally:
        relax_readonly(tmp_path)
