"""Shared test helpers: run the CLI, build fixture trees, pack images."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
HELLO = FIXTURES / "hello"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def appimg(*args: object, env: dict[str, str] | None = None, timeout: float = 120,
           check: bool = True, cwd: Path | None = None,
           memory_limit: int | None = None) -> Result:  # fmt: skip
    """Run the real CLI in a subprocess, as a user would (optionally with capped memory)."""
    full_env = {**os.environ, **(env or {})}

    def limit() -> None:
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    proc = subprocess.run(
        [sys.executable, "-m", "appimg", *map(str, args)],
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        preexec_fn=limit if memory_limit else None,
    )
    result = Result(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        proc.stdout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"appimg {args} failed ({proc.returncode}): {result.stderr}")
    return result


def assert_one_line_error(result: Result) -> None:
    """Bad input: non-zero exit, exactly one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("appimg "), lines[0]


MANIFEST = """\
id = "org.example.{name}"
name = "{name}"
version = "{version}"
entrypoint = "bin/app"
"""


def write_app(root: Path, name: str = "Tree", version: str = "1.0") -> Path:
    """The minimum an app directory needs: appimg.toml and an executable entry point."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "appimg.toml").write_text(MANIFEST.format(name=name, version=version))
    entry = root / "bin" / "app"
    entry.write_text("#!/bin/sh\necho app\n")
    entry.chmod(0o755)
    return root


def make_rich_tree(root: Path, *, reverse: bool = False) -> Path:
    """A tree with every kind of entry the round trip must keep.

    ``reverse`` creates the entries in the opposite order (different inode and
    directory-entry order on disk) to prove packing does not depend on it.
    """
    write_app(root)
    steps = []

    def file(rel: str, data: bytes, mode: int = 0o644) -> None:
        def make() -> None:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)

        steps.append(make)

    rnd = bytes((i * 7919 + (i >> 5)) & 0xFF for i in range(300_000))
    file("data/empty", b"")
    file("data/small.txt", b"hello\n")
    file("data/exact-block.bin", rnd[:131072])
    file("data/multi-block.bin", rnd + rnd[:1000])
    file("data/zeros.bin", bytes(400_000))
    file("data/private", b"secret\n", 0o600)
    file("data/setuid-like", b"#!/bin/sh\n", 0o4755)
    file("names/with space.txt", b"space\n")
    file("names/ünïcödé-名前.txt", b"utf8\n")
    file("names/new\nline", b"newline\n")
    file("names/\"quoted\" 'name'", b"quotes\n")
    for i in range(40):
        file(f"many/f{i:03}", f"{i}\n".encode())

    def links() -> None:
        (root / "empty-dir" / "nested-empty").mkdir(parents=True, exist_ok=True)
        os.symlink("small.txt", root / "data" / "link-rel")
        os.symlink("/etc/passwd", root / "data" / "link-abs")
        os.symlink("../../../../etc", root / "data" / "link-escape")
        os.symlink("missing", root / "data" / "link-dangling")
        os.link(root / "data" / "small.txt", root / "names" / "hardlink-to-small")
        (root / "data" / "readonly-dir").mkdir()
        (root / "data" / "readonly-dir" / "inside").write_text("ro\n")
        (root / "data" / "readonly-dir").chmod(0o555)

    if reverse:
        steps.reverse()
    for step in steps:
        step()
    links()
    root.chmod(0o750)  # the image root keeps the app directory's mode
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything the round trip must preserve, by relative path."""
    result: dict[str, tuple] = {".": (stat.S_IFDIR, stat.S_IMODE(root.stat().st_mode), None)}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                detail: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = path.read_bytes()
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    detail = (detail, "linked-with", inodes.setdefault(key, rel))
            else:
                detail = None
            mode = stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else 0
            result[rel] = (kind, mode, detail)
    return result


def relax_readonly(root: Path) -> None:
    """Make read-only directories writable again so pytest can delete them."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                path.chmod(0o755)


def png(width: int, height: int | None = None, padding: int = 0) -> bytes:
    """A valid grey PNG; ``padding`` bytes in an ancillary chunk make it large but well-formed."""
    height = height or width

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\0" + b"\x80" * width for _ in range(height)))
    extra = chunk(b"zzPd", bytes(padding)) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def pack_small_image(base: Path) -> Path:
    """A small image with a text file, a binary file in a directory and a relative
    symlink, gzip with 4 KiB blocks (many small blocks): the fuzzers' starting point."""
    tree = write_app(base / "tree")
    (tree / "a.txt").write_text("alpha\n" * 100)
    (tree / "d").mkdir()
    (tree / "d" / "b.bin").write_bytes(bytes(range(256)) * 600)
    os.symlink("../a.txt", tree / "d" / "link")
    image = base / "small.appimg"
    appimg("pack", tree, "-o", image, "--compression", "gzip", "--block-size", "4K")
    return image


def compile_static(source: str, out: Path) -> Path:
    """Compile the C program ``source`` into the static binary ``out`` (hostile apps and
    probes the tests pack into images: static, so they run in any sandbox)."""
    c_file = out.with_name(out.name + ".c")
    c_file.write_text(source)
    subprocess.run(["cc", "-static", "-O2", "-o", out, c_file], check=True)
    return out
