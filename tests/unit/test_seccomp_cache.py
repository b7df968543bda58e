"""The compiled syscall filter is kept in the user's cache (appimg.services.run.seccomp):
the same program as a fresh compile, read back without libseccomp, and compiled anew
when what it depends on changes or the cached file is not a BPF program."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appimg.services.run import seccomp


def _program(fd: int) -> bytes:
    try:
        return os.pread(fd, seccomp.MAX_BPF_BYTES + 1, 0)
    finally:
        os.close(fd)


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts the compiles (each one's program)."""
    seen: list[bytes] = []
    real = seccomp._compiled

    def counting() -> bytes:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(seccomp, "_compiled", counting)
    return seen


def test_the_cached_program_is_the_compiled_one(tmp_path: Path, compiles: list[bytes]) -> None:
    fresh = _program(seccomp.bpf_fd())
    assert fresh and len(fresh) % 8 == 0
    assert _program(seccomp.bpf_fd(tmp_path / "cache")) == fresh
    assert _program(seccomp.bpf_fd(tmp_path / "cache")) == fresh
    assert len(compiles) == 2  # the uncached call and the first cached one
    (kept,) = (tmp_path / "cache").iterdir()
    assert kept.read_bytes() == fresh and kept.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("junk", [b"", b"1234567", b"\0" * (seccomp.MAX_BPF_BYTES + 8)])
def test_a_cached_file_that_is_no_program_is_compiled_again(
    tmp_path: Path, compiles: list[bytes], junk: bytes
) -> None:
    cache = tmp_path / "cache"
    good = _program(seccomp.bpf_fd(cache))
    (kept,) = cache.iterdir()
    kept.write_bytes(junk)
    assert _program(seccomp.bpf_fd(cache)) == good
    assert len(compiles) == 2 and kept.read_bytes() == good


def test_a_change_of_the_rules_is_a_new_program(
    tmp_path: Path, compiles: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    before = _program(seccomp.bpf_fd(cache))
    monkeypatch.setattr(seccomp, "UNAVAILABLE", (*seccomp.UNAVAILABLE, "getcpu"))
    after = _program(seccomp.bpf_fd(cache))
    assert after != before and len(compiles) == 2
    assert len(list(cache.iterdir())) == 2


def test_an_unwritable_cache_only_costs_the_compile(tmp_path: Path, compiles: list[bytes]) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    first = _program(seccomp.bpf_fd(blocked / "cache"))
    assert _program(seccomp.bpf_fd(blocked / "cache")) == first and len(compiles) == 2
