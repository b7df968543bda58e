"""``appimg pack`` refuses a directory whose squashfs listing readers would refuse
(spec/format.md §13.3), before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from appimg.errors import UsageError
from appimg.format.payload import writer
from appimg.format.squashfs import records


def test_a_directory_too_large_to_list_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "big").mkdir()
    for i in range(40):
        (tmp_path / "big" / f"entry-{i:04}").write_bytes(b"")
    assert len(writer.scan(tmp_path)) == 41
    monkeypatch.setattr(records, "MAX_DIR_LISTING", 40 * (8 + 10))  # 10-byte names + headers
    with pytest.raises(UsageError, match=r"big: 40 entries"):
        writer.scan(tmp_path)
