"""Publishing to and installing from an OCI registry (spec/distribution.md).

A real registry, Debian's ``docker-registry`` (CNCF distribution 2.8), is started on
a free loopback port with its storage and access log in a temporary directory, and
stopped after the module. Images are pushed as root and installed and updated by
the non-root test user. Every refusal must be one line and change nothing: an
update signed only by another trusted key, a lower version, the same version with
other bytes, a registry (a proxy in front of it) that serves corrupted or truncated
blobs, and a kill -9 in the middle of a download.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import HELLO, appimg
from tests.users import appimg_as, ensure_user, spawn_as, user_env, user_python, user_tmpdir

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs docker-registry"),
]

APP = "org.example.Hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, "the registry exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("the registry did not start") from None
            time.sleep(0.05)


class RegistryServer:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / "access.log"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.out = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=self.out, stderr=subprocess.STDOUT)  # fmt: skip
        wait_port(self.port, self.proc)

    def ref(self, repo: str, tag: str) -> str:
        return f"oci://127.0.0.1:{self.port}/{repo}:{tag}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    try:
        yield server
    finally:
        server.stop()


class Proxy:
    """A proxy in front of the registry that can damage blob downloads: ``corrupt``
    flips a byte, ``truncate`` announces and sends fewer bytes, ``slow`` trickles them;
    ``corrupt-range`` flips a byte of range answers, ``norange`` drops the ``Range``
    header (a server without ranges), ``noindex`` hides every referrer (no chunk index)."""

    def __init__(self, upstream: int) -> None:
        self.mode = ""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.forward(head=True)

            def do_GET(self) -> None:
                self.forward(head=False)

            def forward(self, head: bool) -> None:
                hidden = "/referrers/" in self.path or "/manifests/sha256-" in self.path
                if proxy.mode == "noindex" and hidden:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                if proxy.mode == "norange":
                    headers.pop("Range", None)
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = b"" if head else resp.read()
                blob = "/blobs/sha256:" in self.path and not head and resp.status == 200
                if blob and proxy.mode == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
                ranged = "/blobs/sha256:" in self.path and resp.status == 206
                if ranged and proxy.mode == "corrupt-range" and len(body) > 100:
                    body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
                if blob and proxy.mode == "truncate":
                    body = body[: len(body) // 2]
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                length = resp.getheader("Content-Length") if head else str(len(body))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if (blob or ranged) and proxy.mode == "slow":
                    for start in range(0, len(body), 4096):
                        self.wfile.write(body[start : start + 4096])
                        self.wfile.flush()
                        time.sleep(0.2)
                elif not head:
                    self.wfile.write(body)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ref(self, repo: str, tag: str) -> str:
        return f"oci://127.0.0.1:{self.port}/{repo}:{tag}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def proxy(registry: RegistryServer) -> Iterator[Proxy]:
    server = Proxy(registry.port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory,
           keypair: tuple[Path, Path]) -> dict[str, Path]:  # fmt: skip
    """Hello in several versions, signed by the session key unless named otherwise."""
    out = tmp_path_factory.mktemp("oci-images")
    other = out / "other.key"
    appimg("keygen", "-o", other)

    def pack(name: str, version: str, key: Path, extra: bytes = b"") -> Path:
        tree = shutil.copytree(HELLO, out / f"tree-{name}")
        toml = tree / "appimg.toml"
        toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
        if extra:
            (tree / "share" / "extra.txt").write_bytes(extra)
        image = out / f"{name}.appimg"
        appimg("pack", tree, "-o", image, "--sign", key)
        return image

    key = keypair[0]
    found = {
        "1.0": pack("1.0", "1.0.0", key),
        "2.0": pack("2.0", "2.0.0", key),
        "0.9": pack("0.9", "0.9.0", key),
        "1.0-other-bytes": pack("1.0-other-bytes", "1.0.0", key, b"other bytes\n"),
        "2.0-other-key": pack("2.0-other-key", "2.0.0", other),
        "other.pub": out / "other.key.pub",
        "key.pub": keypair[1],
    }
    return found


@pytest.fixture
def user() -> pwd.struct_passwd:
    return ensure_user()


def _home(user: pwd.struct_passwd) -> tuple[Path, dict[str, str]]:
    home = user_tmpdir(user, "appimg-oci-")
    env = user_env(user, home, XDG_DATA_DIRS="/usr/share")
    return home, env


def as_user(user: pwd.struct_passwd, env: dict[str, str], *args: object,
            check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    result = appimg_as(user, env, *args)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def one_line(result: subprocess.CompletedProcess) -> str:
    """A refusal: non-zero status, exactly one line on stderr (no traceback)."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert lines[0].startswith("appimg "), lines[0]
    return lines[0]


def trust(user: pwd.struct_passwd, env: dict[str, str], home: Path, pub: Path) -> None:
    copy = home / pub.name
    shutil.copy(pub, copy)
    os.chmod(copy, 0o644)
    as_user(user, env, "trust", "add", copy)


def store(home: Path) -> Path:
    return home / ".local" / "share" / "appimg"


def state(home: Path) -> tuple[bytes, list[str]]:
    """The committed index and every file of the store but the lock: what must not
    change when a command is refused."""
    root = store(home)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "lock")
    return (root / "index.json").read_bytes(), files


def push(image: Path, ref: str) -> dict:
    return json.loads(appimg("push", image, ref, "--plain-http", "--json").stdout)


def active(home: Path) -> dict:
    index = json.loads((store(home) / "index.json").read_text())
    return index["apps"][APP]


# --- the tests ------------------------------------------------------------------------------


def test_push_install_update(registry: RegistryServer, images: dict[str, Path],
                             user: pwd.struct_passwd) -> None:  # fmt: skip
    pushed = push(images["1.0"], registry.ref("apps/hello", "stable"))
    assert pushed["id"] == APP and pushed["version"] == "1.0.0"
    digest = "sha256:" + hashlib.sha256(images["1.0"].read_bytes()).hexdigest()
    assert pushed["image_digest"] == digest
    # Pushing the same image again uploads nothing new and names the same manifest.
    again = push(images["1.0"], registry.ref("apps/hello", "stable"))
    assert again["manifest_digest"] == pushed["manifest_digest"]

    home, env = _home(user)
    trust(user, env, home, images["key.pub"])
    user_python(user)
    installed = as_user(user, env, "install", registry.ref("apps/hello", "stable"),
                        "--plain-http")  # fmt: skip
    assert f"installed {APP} 1.0.0 (trusted" in installed.stdout.decode()
    app = active(home)
    assert app["origin"] == {"reference": registry.ref("apps/hello", "stable"),
                             "plain_http": True, "manifest": pushed["manifest_digest"]}  # fmt: skip
    assert app["versions"][0]["digest"] == digest
    image_file = store(home) / app["versions"][0]["file"]
    assert image_file.read_bytes() == images["1.0"].read_bytes()
    assert image_file.stat().st_uid == user.pw_uid

    check = json.loads(as_user(user, env, "update", "--check", "--json").stdout)
    assert [(r["id"], r["installed"], r["update"]) for r in check] == [(APP, "1.0.0", False)]
    same = as_user(user, env, "update", APP)
    assert "is up to date" in same.stdout.decode()

    push(images["2.0"], registry.ref("apps/hello", "stable"))
    before = state(home)
    check = json.loads(as_user(user, env, "update", "--check", "--json").stdout)
    assert [(r["available"], r["update"]) for r in check] == [("2.0.0", True)]
    assert state(home) == before  # --check changes nothing
    text = as_user(user, env, "update", "--check").stdout.decode()
    assert "2.0.0 available" in text

    updated = json.loads(as_user(user, env, "update", "--json").stdout)
    assert [(o["app_id"], o["version"], o["signature"]["state"]) for o in updated] == [
        (APP, "2.0.0", "trusted")
    ]
    app = active(home)
    assert [v["version"] for v in app["versions"]] == ["2.0.0", "1.0.0"]
    assert app["origin"]["reference"] == registry.ref("apps/hello", "stable")
    # The registry's access log shows the user's downloads.
    log = registry.log.read_text()
    assert f"GET /v2/apps/hello/blobs/{digest}" in log


@pytest.mark.parametrize(
    ("image", "expect"),
    [
        ("2.0-other-key", "must be signed by a pinned key"),
        ("0.9", "older than the installed"),
        ("1.0-other-bytes", "the same version"),
    ],
)
def test_refused_updates_change_nothing(registry: RegistryServer, images: dict[str, Path],
                                        user: pwd.struct_passwd, image: str,
                                        expect: str) -> None:  # fmt: skip
    repo = f"apps/refused-{image.replace('.', '-')}"
    push(images["1.0"], registry.ref(repo, "latest"))
    home, env = _home(user)
    trust(user, env, home, images["key.pub"])
    trust(user, env, home, images["other.pub"])  # trusted, but not for this app
    as_user(user, env, "install", registry.ref(repo, "latest"), "--plain-http")
    push(images[image], registry.ref(repo, "latest"))
    before = state(home)
    line = one_line(as_user(user, env, "update", APP, check=False))
    assert expect in line, line
    assert state(home) == before


@pytest.mark.parametrize("mode", ["corrupt", "truncate"])
def test_damaged_downloads_are_refused(registry: RegistryServer, proxy: Proxy,
                                       images: dict[str, Path], user: pwd.struct_passwd,
                                       mode: str) -> None:  # fmt: skip
    repo = f"apps/damaged-{mode}"
    push(images["1.0"], registry.ref(repo, "v"))
    home, env = _home(user)
    trust(user, env, home, images["key.pub"])
    proxy.mode = mode
    try:
        line = one_line(as_user(user, env, "install", proxy.ref(repo, "v"), "--plain-http",
                                check=False))  # fmt: skip
    finally:
        proxy.mode = ""
    assert "refused" in line and ("do not match" in line or "truncated" in line), line
    assert not store(home).exists()  # nothing left, not even a store

    # Installed through the proxy, then an update through it damaged: nothing changes.
    as_user(user, env, "install", proxy.ref(repo, "v"), "--plain-http")
    push(images["2.0"], registry.ref(repo, "v"))
    before = state(home)
    proxy.mode = mode
    try:
        line = one_line(as_user(user, env, "update", APP, check=False))
    finally:
        proxy.mode = ""
    assert "refused" in line, line
    assert state(home) == before


def test_kill_during_update_keeps_the_old_version(registry: RegistryServer, proxy: Proxy,
                                                  images: dict[str, Path],
                                                  user: pwd.struct_passwd) -> None:  # fmt: skip
    repo = "apps/killed"
    push(images["1.0"], registry.ref(repo, "v"))
    home, env = _home(user)
    trust(user, env, home, images["key.pub"])
    as_user(user, env, "install", proxy.ref(repo, "v"), "--plain-http")
    push(images["2.0"], registry.ref(repo, "v"))
    before = state(home)
    proxy.mode = "slow"  # ~120 KiB at 20 KiB/s: several seconds to kill it in
    try:
        proc = spawn_as(user, [*user_python(user), "-m", "appimg", "update", APP], env,
                        start_new_session=True)  # fmt: skip
        # The download goes into the transaction's staging directory, in chunks that
        # may reach the file only when full: kill once staging has begun, well within
        # the seconds the trickled blob takes.
        staging = None
        deadline = time.monotonic() + 20
        while staging is None and time.monotonic() < deadline:
            staging = next(iter((store(home) / "tmp").glob("*")), None)
            time.sleep(0.02)
        assert staging is not None, "the update did not start"
        time.sleep(0.5)
        assert proc.poll() is None, "the update ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proxy.mode = ""
    assert (store(home) / "index.json").read_bytes() == before[0]  # the old one is active
    as_user(user, env, "list")  # the next command clears what the kill left
    assert state(home) == before
    assert not (store(home) / "tmp").exists()
    assert active(home)["versions"][0]["version"] == "1.0.0"


def test_bad_references_and_registries(tmp_path: Path, images: dict[str, Path]) -> None:
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}
    for ref, expect in [
        ("oci://127.0.0.1:1/Upper/case:tag", "not a repository name"),
        ("oci:///repo:tag", "no registry host"),
        (f"oci://127.0.0.1:{free_port()}/repo:tag", "refused"),
    ]:
        result = appimg("install", ref, "--plain-http", env=env, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode in (2, 10) and len(lines) == 1, result.stderr
        assert expect in lines[0], lines[0]
    missing = appimg("update", "org.example.Missing", env=env, check=False)
    assert missing.returncode == 2 and "not installed" in missing.stderr


# --- delta updates (spec/distribution.md §7) -------------------------------------------------

BIG = APP  # the Hello tree, grown with 40 MB of data


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]) -> dict[str, Path]:
    """A ~40 MB image of incompressible files, and version 2 with one small file changed."""
    out = tmp_path_factory.mktemp("oci-big")
    tree = shutil.copytree(HELLO, out / "tree")
    toml = tree / "appimg.toml"
    rng = __import__("random").Random(13)
    data = tree / "share" / "data"
    for i in range(40):
        (data / f"{i:02d}").mkdir(parents=True)
        (data / f"{i:02d}" / "blob.bin").write_bytes(rng.randbytes(1 << 20))
        (data / f"{i:02d}" / "small.txt").write_bytes(rng.randbytes(3000))
    found = {}
    for version in ("1.0.0", "2.0.0"):
        if version == "2.0.0":
            toml.write_text(toml.read_text().replace('version = "1.0.0"', 'version = "2.0.0"'))
            (data / "17" / "small.txt").write_bytes(rng.randbytes(3000))
        image = out / f"big-{version}.appimg"
        appimg("pack", tree, "-o", image, "--sign", keypair[0], "--level", "1")
        found[version] = image
    return found


def served(registry: RegistryServer, since: int) -> int:
    """Bytes of blob bodies the registry's access log shows after offset ``since``."""
    text = registry.log.read_bytes()[since:].decode(errors="replace")
    sizes = re.findall(r'"GET /v2/[^ "]*/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 20[06] (\d+)', text)
    return sum(int(n) for n in sizes)


def installed_big(user: pwd.struct_passwd, registry: RegistryServer, big: dict[str, Path],
                  images: dict[str, Path], repo: str,
                  via: str) -> tuple[Path, dict[str, str]]:  # fmt: skip
    push(big["1.0.0"], registry.ref(repo, "v"))
    home, env = _home(user)
    trust(user, env, home, images["key.pub"])
    as_user(user, env, "install", via, "--plain-http")
    return home, env


def test_delta_update_fetches_only_what_changed(registry: RegistryServer,
                                                big: dict[str, Path], images: dict[str, Path],
                                                user: pwd.struct_passwd) -> None:  # fmt: skip
    repo = "apps/big"
    home, env = installed_big(user, registry, big, images, repo, registry.ref(repo, "v"))
    pushed = push(big["2.0.0"], registry.ref(repo, "v"))
    assert pushed["chunk_index"].startswith("sha256:")
    since = registry.log.stat().st_size
    updated = json.loads(as_user(user, env, "update", BIG, "--json").stdout)
    size = big["2.0.0"].stat().st_size
    transfer = updated[0]["transfer"]
    assert transfer["delta"] and transfer["size"] == size
    assert transfer["fetched"] + transfer["reused"] == size
    time.sleep(0.2)  # the access log is written as the registry answers
    bytes_served = served(registry, since)
    print(f"delta: served {bytes_served} of {size} bytes; {transfer}")
    assert 0 < bytes_served < size // 4, (bytes_served, size, transfer)
    assert transfer["fetched"] < size // 4
    index = json.loads((store(home) / "index.json").read_text())
    app = index["apps"][BIG]
    assert [v["version"] for v in app["versions"]] == ["2.0.0", "1.0.0"]
    assert (store(home) / app["versions"][0]["file"]).read_bytes() == big["2.0.0"].read_bytes()


def test_delta_corrupt_chunk_is_refused(registry: RegistryServer, proxy: Proxy,
                                        big: dict[str, Path], images: dict[str, Path],
                                        user: pwd.struct_passwd) -> None:  # fmt: skip
    repo = "apps/big-corrupt"
    home, env = installed_big(user, registry, big, images, repo, proxy.ref(repo, "v"))
    push(big["2.0.0"], registry.ref(repo, "v"))
    before = state(home)
    proxy.mode = "corrupt-range"
    try:
        line = one_line(as_user(user, env, "update", BIG, check=False))
    finally:
        proxy.mode = ""
    assert "refused" in line and "does not match" in line, line
    assert state(home) == before


@pytest.mark.parametrize("mode", ["noindex", "norange"])
def test_delta_falls_back_to_the_whole_image(registry: RegistryServer, proxy: Proxy,
                                             big: dict[str, Path], images: dict[str, Path],
                                             user: pwd.struct_passwd,
                                             mode: str) -> None:  # fmt: skip
    repo = f"apps/big-{mode}"
    home, env = installed_big(user, registry, big, images, repo, proxy.ref(repo, "v"))
    push(big["2.0.0"], registry.ref(repo, "v"))
    proxy.mode = mode
    try:
        updated = json.loads(as_user(user, env, "update", BIG, "--json").stdout)
    finally:
        proxy.mode = ""
    size = big["2.0.0"].stat().st_size
    assert updated[0]["transfer"] == {"size": size, "fetched": size, "reused": 0,
                                      "requests": 1, "delta": False}  # fmt: skip
    app = json.loads((store(home) / "index.json").read_text())["apps"][BIG]
    assert (store(home) / app["versions"][0]["file"]).read_bytes() == big["2.0.0"].read_bytes()
