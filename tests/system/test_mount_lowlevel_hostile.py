"""The low-level FUSE binding (appimg.services.mount.lowlevel, spec/overlay-rules.md §7)
against a hostile image and a hostile app: odd directory offsets, reply buffers packed
to the last byte, xattr size probes, long names and targets, directory loops, forget
storms under concurrent readers, and corrupt blocks. Whatever is asked, every request
gets one answer and the mount keeps serving.

Mounts are served in this process (see test_mount_lowlevel) so the tests can look
at the server's node table; one test mounts as the non-root user through the CLI.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appimg.services.mount import lowlevel
from appimg.services.view import Node

from ..forge import forge
from .test_hostile_payload import _dir_body, _image, loop_image  # noqa: F401
from .test_mount_fuse import pack_app
from .test_mount_fuse import user_setup as _user_setup
from .test_mount_lowlevel import FUSERMOUNT, served

pytestmark = pytest.mark.skipif(
    FUSERMOUNT is None or not os.path.exists("/dev/fuse") or not lowlevel.available(),
    reason="needs FUSE and libfuse 3",
)

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine, 217)
_DIRENT = struct.Struct("=QqHB")


def getdents_from(path: Path, offset: int, size: int = 32768) -> list[tuple[bytes, int]]:
    """(name, d_off) of every entry ``getdents64`` returns after ``lseek(offset)``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        buf = ctypes.create_string_buffer(size)
        out = []
        while True:
            n = _libc.syscall(_SYS_GETDENTS64, fd, buf, size)
            if n < 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(path))
            if n == 0:
                return out
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                _ino, off, reclen, _type = _DIRENT.unpack_from(raw, pos)
                name = raw[pos + _DIRENT.size : pos + reclen].split(b"\0", 1)[0]
                out.append((name, off))
                pos += reclen
    finally:
        os.close(fd)


def names_of(entries: list[tuple[bytes, int]]) -> list[bytes]:
    return [name for name, _ in entries if name not in (b".", b"..")]


# -- directory offsets and reply buffers ----------------------------------------------------


@pytest.fixture(scope="module")
def long_names_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("longnames")
    # 255-byte names: 15 READDIRPLUS entries (408 bytes each) fill a 4 KiB page
    # but for 16 bytes, so every reply is packed to the edge of its buffer.
    files = {f"wide/{i:04d}" + "n" * 251: bytes([i % 251]) * (i % 7) for i in range(600)}
    files.update({f"few/{name}": name.encode() for name in ("a", "b", "c", "d", "e")})
    return pack_app(base, files)


def test_readdir_offsets_past_the_end_and_in_the_middle(
    long_names_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "mnt"
    with served(long_names_image, mnt, monkeypatch) as server:
        full = getdents_from(mnt / "few", 0)
        assert names_of(full) == [b"a", b"b", b"c", b"d", b"e"]
        # Every d_off resumes right after its entry, read from the server or its cache.
        for i, (_, off) in enumerate(full):
            assert getdents_from(mnt / "few", off) == full[i + 1 :]
        for offset in (len(full), len(full) + 1, 1000, 2**31, 2**62, 2**63 - 1):
            assert getdents_from(mnt / "few", offset) == []
        with pytest.raises(OSError) as caught:
            getdents_from(mnt / "few", -1)
        assert caught.value.errno == errno.EINVAL  # the kernel refuses it
        # The same in the wide directory, first (uncached) read in the middle.
        middle = getdents_from(mnt / "wide", 300)
        assert len(middle) == 602 - 300
        assert middle[0][0].startswith(b"0298")
        assert getdents_from(mnt / "wide", 602) == []
        assert server.failures == 0


def test_directory_of_255_byte_names_lists_whole(
    long_names_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "mnt"
    expected = [f"{i:04d}" + "n" * 251 for i in range(600)]
    with served(long_names_image, mnt, monkeypatch) as server:
        for size in (1024, 4096, 8192, 65536):  # small getdents buffers too
            entries = getdents_from(mnt / "wide", 0, size)
            assert [n.decode() for n in names_of(entries)] == expected, size
        for i in (0, 299, 599):
            assert (mnt / "wide" / expected[i]).read_bytes() == bytes([i % 251]) * (i % 7)
        assert server.failures == 0
        # Each name the kernel holds has one node id; nothing is leaked by the packing.
        assert len(server.inodes) <= 600 + 2 + 5 + 10


def _node(kind: str, ino: int, size: int = 3) -> Node:
    n = Node()
    n.kind, n.ino, n.nlink, n.uid, n.gid, n.rdev, n.size, n.blocks = kind, ino, 1, 0, 0, 0, size, 1
    n.mode = (stat.S_IFDIR | 0o755) if kind == "dir" else (stat.S_IFREG | 0o644)
    n.mtime_ns, n.volatile, n.packed, n.layers = 0, False, None, ()
    return n


def _bare_server(listing: list, reply_buf: Callable[[bytes], int]) -> lowlevel.Server:
    """A Server whose directory /d (node 1) lists ``listing``, with libfuse's real
    fuse_add_direntry[_plus] (which need no request) and ``reply_buf`` for the reply."""
    lib = lowlevel._load()

    class Lib:
        add_direntry = lib.add_direntry
        add_direntry_plus = lib.add_direntry_plus

        def reply_buf(self, req: object, buf: object, size: int) -> int:
            return reply_buf(ctypes.string_at(ctypes.addressof(buf), size))  # type: ignore[arg-type]

        def reply_err(self, req: object, code: int) -> int:
            raise AssertionError(f"error reply {code}")

    root = listing[0][2]
    server = lowlevel.Server.__new__(lowlevel.Server)
    server.lib = Lib()  # type: ignore[assignment]
    server.inodes = lowlevel.Inodes(root)
    server.readdir_calls = 0
    server._ttl = 1.0
    server._tails = {t: lowlevel._TIMEOUTS.pack(t, t) for t in (1.0, lowlevel.IMMUTABLE_TIMEOUT)}
    server._node = lambda nodeid: ("/d", root)  # type: ignore[method-assign]
    server._listing = lambda path, n, offset, fi: listing  # type: ignore[method-assign]
    return server


def test_readdir_reply_is_packed_within_its_buffer() -> None:
    """``_readdir`` with every buffer size from nothing to a page: the reply never
    claims more bytes than the buffer holds, and its entries are whole and in order."""
    root = _node("dir", 1)
    names = [b"x" * 255, b"y", b"z" * 100] + [b"%03d" % i + b"w" * 252 for i in range(40)]
    listing = [(b".", "/d", root), (b"..", "/d", root)]
    listing += [(name, "/d/" + name.decode(), _node("file", i + 2)) for i, name in enumerate(names)]
    replies: list[bytes] = []
    server = _bare_server(listing, lambda data: replies.append(data) or 0)
    for plus in (False, True):
        for size in (0, 1, 24, 31, 32, 151, 152, 287, 288, 4095, 4096):
            for offset in (0, 1, 2, 3, len(listing) - 1, len(listing), len(listing) + 5):
                replies.clear()
                server._readdir(None, 1, size, offset, None, plus=plus)  # type: ignore[arg-type]
                (data,) = replies
                assert len(data) <= size
                pos, expect = 0, offset
                head = 152 - 24 if plus else 0  # fuse_entry_out before the fuse_dirent
                while pos < len(data):
                    _ino, off, namelen, _type = struct.unpack_from("=QQII", data, pos + head)
                    assert off == expect + 1
                    assert data[pos + head + 24 : pos + head + 24 + namelen] == listing[expect][0]
                    pos += head + ((24 + namelen + 7) & ~7)
                    expect += 1
                assert pos == len(data)
        # Every entry given a node id and not sent was taken back.
        assert len(server.inodes) <= 1 + len(names)


def test_readdirplus_not_delivered_takes_its_node_ids_back() -> None:
    """A READDIRPLUS reply the kernel does not take (the request was interrupted:
    fuse_reply_buf fails) or that is never sent (an error while packing) gives the
    kernel no lookups, so it will never forget them: the ids are dropped at once."""
    root = _node("dir", 1)
    listing = [(b".", "/d", root), (b"..", "/d", root)]
    listing += [(b"f%d" % i, f"/d/f{i}", _node("file", i + 2)) for i in range(20)]
    server = _bare_server(listing, lambda data: -errno.ENOENT)
    server._readdir(None, 1, 4096, 0, None, plus=True)  # type: ignore[arg-type]
    assert len(server.inodes) == 1
    delivered = _bare_server(listing, lambda data: 0)
    delivered._readdir(None, 1, 4096, 0, None, plus=True)  # type: ignore[arg-type]
    assert len(delivered.inodes) == 21
    listing[10] = (b"huge", "/d/huge", _node("file", 99, size=2**63))  # no struct stat holds it
    broken = _bare_server(listing, lambda data: 0)
    with pytest.raises(struct.error):
        broken._readdir(None, 1, 4096, 0, None, plus=True)  # type: ignore[arg-type]
    assert len(broken.inodes) == 1


# -- extended attributes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def xattr_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("xattr")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        target = Path(shm) / "f"
        target.write_bytes(b"x")
        (Path(shm) / "plain").write_bytes(b"y")
        try:
            os.setxattr(target, "user.small", b"12345")
            os.setxattr(target, "user.big", bytes(range(256)) * 200)
        except OSError as exc:
            pytest.skip(f"tmpfs does not take user xattrs: {exc}")
        sqfs = base / "x.sqfs"
        subprocess.run(
            ["gensquashfs", "-q", "-c", "gzip", "-D", shm, "-x", sqfs],
            check=True, capture_output=True,
        )  # fmt: skip
    return forge(base / "x.appimg", payload=sqfs.read_bytes())


def _getxattr(path: Path, name: bytes, size: int) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.getxattr(bytes(path), name, buf if size else None, ctypes.c_size_t(size))
    if n < 0:
        return -ctypes.get_errno(), b""
    return n, buf.raw[:n] if size else b""


def _listxattr(path: Path, size: int) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(max(size, 1))
    n = _libc.listxattr(bytes(path), buf if size else None, ctypes.c_size_t(size))
    if n < 0:
        return -ctypes.get_errno(), b""
    return n, buf.raw[:n] if size else b""


def test_xattr_size_probes(
    xattr_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "mnt"
    big = bytes(range(256)) * 200
    with served(xattr_image, mnt, monkeypatch) as server:
        f = mnt / "f"
        assert _getxattr(f, b"user.small", 0) == (5, b"")
        assert _getxattr(f, b"user.small", 4) == (-errno.ERANGE, b"")
        assert _getxattr(f, b"user.small", 5) == (5, b"12345")
        assert _getxattr(f, b"user.small", 65536) == (5, b"12345")
        assert _getxattr(f, b"user.big", 0) == (len(big), b"")
        assert _getxattr(f, b"user.big", len(big) - 1) == (-errno.ERANGE, b"")
        assert _getxattr(f, b"user.big", len(big)) == (len(big), big)
        assert _getxattr(f, b"user.none", 0)[0] == -errno.ENODATA
        assert _getxattr(f, b"user.none", 100)[0] == -errno.ENODATA
        assert _getxattr(f, b"user." + b"q" * 250, 0)[0] == -errno.ENODATA
        names = b"user.big\0user.small\0"
        n, _ = _listxattr(f, 0)
        assert n == len(names)
        assert _listxattr(f, n - 1) == (-errno.ERANGE, b"")
        assert _listxattr(f, 1) == (-errno.ERANGE, b"")
        _, listed = _listxattr(f, n)
        assert sorted(listed.split(b"\0")) == sorted(names.split(b"\0"))
        assert _listxattr(mnt / "plain", 0) == (0, b"")
        assert _listxattr(mnt / "plain", 10) == (0, b"")
        assert (mnt / "f").read_bytes() == b"x"
        assert server.failures == 0


# -- names and symlink targets --------------------------------------------------------------


def test_long_symlink_target_and_overlong_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = "/".join(["t" * 254] * 16)[:4095]  # PATH_MAX - 1, the longest Linux stores
    image = pack_app(tmp_path, {"d/f": b"f\n"}, symlinks={"d/long": target, "d/short": "f"})
    mnt = tmp_path / "mnt"
    with served(image, mnt, monkeypatch) as server:
        assert os.readlink(mnt / "d" / "long") == target
        assert os.readlink(mnt / "d" / "short") == "f"
        with pytest.raises(OSError) as caught:
            os.readlink(mnt / "d" / "f")  # not a link: the kernel answers EINVAL
        assert caught.value.errno == errno.EINVAL
        for length in (255, 256, 300, 1024, 1025, 4000):
            with pytest.raises(OSError) as caught:
                os.lstat(mnt / "d" / ("n" * length))
            assert caught.value.errno in (errno.ENOENT, errno.ENAMETOOLONG), length
        for odd in ("\udcff\udcfe", "f\x01", " ", "f "):
            assert not os.path.lexists(mnt / "d" / odd)
        assert (mnt / "d" / "f").read_bytes() == b"f\n"
        assert server.failures == 0


def test_directory_loop_walk_is_bounded(
    loop_image: Path,  # noqa: F811 - the fixture of test_hostile_payload
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk down a directory loop by relative lookups: every level is a new path for
    the server. Its paths are capped (ENAMETOOLONG), so what the server keeps per
    node id stays bounded instead of growing with the square of the depth."""
    mnt = tmp_path / "mnt"
    with served(loop_image, mnt, monkeypatch) as server:
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        depth = 0
        try:
            while depth < 3000:
                try:
                    nfd = os.open("loop", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                except OSError as exc:
                    assert exc.errno == errno.ENAMETOOLONG
                    break
                os.close(fd)
                fd = nfd
                depth += 1
            assert sorted(os.listdir(fd)) == ["file", "loop"]
        finally:
            os.close(fd)
        assert depth < 3000, "the walk went on without bound"
        longest = max(len(entry[0]) for entry in list(server.inodes._ids.values()))
        assert longest <= lowlevel.MAX_PATH
        assert sorted(os.listdir(mnt)) == ["file", "loop"]
        assert server.failures == 0


@pytest.fixture(scope="module")
def linked_dirs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Every directory shares one listing of "f" and 150 directories, all the same
    # inode (2): each of the 150 paths /dNNN is a directory of 151 entries.
    listing = [("f", 1)] + [(f"d{i:03d}", 2) for i in range(150)]
    body = _dir_body(listing, 3)
    payload = _image(
        [(2, 0o644, struct.pack("<IIII", 0, 0xFFFFFFFF, 0, 0)), (1, 0o755, body), (1, 0o755, body)],
        listing,
    )
    return forge(tmp_path_factory.mktemp("linked") / "linked.appimg", payload=payload)


def test_kept_listings_are_bounded_by_entries(
    linked_dirs_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One directory hard-linked into many places has a listing per path: what the
    server keeps of them is bounded by entries, not by the number of listings."""
    monkeypatch.setattr(lowlevel, "MAX_LISTED", 2000)
    mnt = tmp_path / "mnt"
    with served(linked_dirs_image, mnt, monkeypatch) as server:
        for i in range(150):
            assert len(os.listdir(mnt / f"d{i:03d}")) == 151
            kept = sum(len(listing) for listing in server._listings.values())
            assert kept <= 2000
        assert len(os.listdir(mnt / "d007" / "d008")) == 151
        assert server.failures == 0


# -- concurrency and forgets ----------------------------------------------------------------


@pytest.mark.root
def test_concurrent_readers_while_caches_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    files = {f"d{i}/f{j}": rng.randbytes(rng.choice((0, 10, 5000, 200_000))) for i in range(8)
             for j in range(25)}  # fmt: skip
    image = pack_app(tmp_path, files)
    mnt = tmp_path / "mnt"
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        local = random.Random(seed)
        keys = sorted(files)
        try:
            while not stop.is_set():
                rel = local.choice(keys)
                assert (mnt / rel).read_bytes() == files[rel]
                folder = rel.split("/")[0]
                assert len(os.listdir(mnt / folder)) == 25
                assert not os.path.lexists(mnt / folder / f"absent{local.randrange(50)}")
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    def walker() -> None:
        try:
            while not stop.is_set():
                for dirpath, _dirs, names in os.walk(mnt):
                    for name in names:
                        os.lstat(os.path.join(dirpath, name))
                Path("/proc/sys/vm/drop_caches").write_text("2\n")
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    with served(image, mnt, monkeypatch) as server:
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
        threads.append(threading.Thread(target=walker))
        for t in threads:
            t.start()
        time.sleep(6)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a request never got its answer"
        assert not errors, errors[:3]
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
        deadline = time.monotonic() + 10
        while len(server.inodes) > 20 and time.monotonic() < deadline:
            time.sleep(0.1)  # FORGETs are queued: the table empties once they are served
        assert len(server.inodes) <= 20
        assert {k.split("/")[0] for k in files} <= set(os.listdir(mnt))
        assert (mnt / "d0" / "f0").read_bytes() == files["d0/f0"]
        assert server.failures == 0


# -- corrupt blocks ------------------------------------------------------------------------


def test_bad_blocks_under_concurrent_reads_are_eio_and_the_mount_stays_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(17)
    victim = rng.randbytes(600_000)
    files = {"v/victim.bin": victim, "v/fine.bin": rng.randbytes(300_000)}
    image = pack_app(tmp_path, files)
    raw = bytearray(image.read_bytes())
    where = raw.find(victim[400_000:400_064])
    assert where > 0
    raw[where + 3] ^= 0x01
    image.write_bytes(bytes(raw))
    mnt = tmp_path / "mnt"
    outcomes: list[object] = []

    def read_victim() -> None:
        try:
            (mnt / "v" / "victim.bin").read_bytes()
            outcomes.append("read")
        except OSError as exc:
            outcomes.append(exc.errno)

    with served(image, mnt, monkeypatch) as server:
        threads = [threading.Thread(target=read_victim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outcomes == [errno.EIO] * 8
        with open(mnt / "v" / "victim.bin", "rb") as handle:
            assert handle.read(262144) == victim[:262144]  # the blocks before are fine
        assert (mnt / "v" / "fine.bin").read_bytes() == files["v/fine.bin"]
        assert server.failures >= 1


# -- as the non-root user ------------------------------------------------------------------

PROBE = r"""
import os, sys
mnt = sys.argv[1]
names = sorted(os.listdir(os.path.join(mnt, "wide")))
assert len(names) == 600 and all(len(n.encode()) == 255 for n in names), len(names)
for n in names[::50]:
    with open(os.path.join(mnt, "wide", n), "rb") as f:
        f.read()
for length in (256, 1024, 2000):
    try:
        os.lstat(os.path.join(mnt, "few", "n" * length))
    except OSError as exc:
        assert exc.errno in (2, 36), exc
print("ok")
"""


user_setup = _user_setup  # the unprivileged user's fixture


@pytest.mark.root
def test_user_mount_of_long_names(long_names_image: Path, user_setup: tuple) -> None:
    from ..users import appimg_as, run_as, user_python

    user, env, home = user_setup
    image = home / "long.appimg"
    image.write_bytes(long_names_image.read_bytes())
    os.chown(image, user.pw_uid, user.pw_gid)
    mounted = appimg_as(user, env, "mount", "--allow-unsigned", image, text=True)
    assert mounted.returncode == 0, mounted.stderr
    mnt = mounted.stdout.strip()
    try:
        probe = run_as(user, [*user_python(user), "-c", PROBE, mnt], env, text=True)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip() == "ok"
    finally:
        appimg_as(user, env, "umount", mnt)
