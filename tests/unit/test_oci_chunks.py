"""The chunk index and the cut rule of delta updates (spec/distribution.md §7.1)."""

from __future__ import annotations

import io
import random

import pytest

from appimg.errors import FormatError
from appimg.services.oci import chunks
from appimg.services.oci.delta import plan

DIGEST = "sha256:" + "ab" * 32


def test_cuts_do_not_depend_on_read_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(1).randbytes(3 << 20)
    whole = chunks.chunk_bytes(data)
    monkeypatch.setattr(chunks, "READ", 100_003)  # pieces that end mid-chunk
    assert chunks.chunk_file(io.BytesIO(data), len(data)) == whole
    assert all(chunks.MIN_SIZE <= c.length <= chunks.MAX_SIZE for c in whole[:-1])
    assert sum(c.length for c in whole) == len(data)


def test_an_insertion_changes_only_the_chunks_around_it() -> None:
    rng = random.Random(2)
    data = rng.randbytes(4 << 20)
    new = data[: 2 << 20] + rng.randbytes(5000) + data[2 << 20 :]
    have = {c.sha256: c.offset for c in chunks.chunk_bytes(data)}
    fetched = [s for s in plan(chunks.chunk_bytes(new), have) if s.fetch]
    assert len(fetched) == 1 and fetched[0].length < 3 * chunks.MAX_SIZE


def test_padding_never_cuts() -> None:
    found = chunks.chunk_bytes(bytes(1 << 20))
    assert [c.length for c in found] == [chunks.MAX_SIZE] * 4


def test_index_round_trip_and_refusals() -> None:
    data = random.Random(3).randbytes(1 << 20)
    found = chunks.chunk_bytes(data)
    blob = chunks.index_json(DIGEST, len(data), found)
    assert chunks.parse_index(blob, DIGEST, len(data), "x") == found
    with pytest.raises(FormatError, match="another image"):
        chunks.parse_index(blob, DIGEST, len(data) + 1, "x")
    gap = blob.replace(f"[{found[1].offset},".encode(), f"[{found[1].offset + 1},".encode())
    with pytest.raises(FormatError, match="following the one before"):
        chunks.parse_index(gap, DIGEST, len(data), "x")
    with pytest.raises(FormatError, match="not JSON"):
        chunks.parse_index(b"{", DIGEST, len(data), "x")
