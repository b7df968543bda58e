"""A client of the OCI distribution HTTP API (spec/distribution.md §2).

Only what pushing and fetching one image artifact needs: manifests by tag or
digest, referrers (the API, or the referrers tag where a registry lacks it), blob
existence, monolithic blob upload (POST then PUT with the digest),
blob download (whole or by byte ranges) and the token flow of the
``WWW-Authenticate`` challenge (Basic, or Bearer with a token from the realm,
with the user's credentials when :mod:`.auth` has some). ``requests`` does the
HTTP; it drops the ``Authorization`` header when a blob redirects to another
host (a CDN), as the spec requires.

A download (:meth:`Registry.download_blob`) streams into a new file, stops at the
size the descriptor gives and checks the SHA-256 before returning: bytes that do
not match, too many or too few are an :class:`~appimg.errors.IntegrityError` and
the file is removed. Progress is reported through a callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

from appimg.errors import IntegrityError, RegistryError
from appimg.services.oci import artifact
from appimg.services.oci.auth import credentials
from appimg.services.oci.reference import Reference

#: Seconds to wait for a connection or between two reads of a response.
TIMEOUT = 30
CHUNK = 1 << 20
#: Progress callback: bytes so far, bytes expected.
Progress = Callable[[int, int], None]


class RangeNotSupported(RegistryError):
    """The server answered a range request with something else than 206 (a delta
    falls back to the whole blob)."""


def _no_progress(_done: int, _total: int) -> None:
    pass


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'([A-Za-z]+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """One repository of one registry, with the session and token it accumulates."""

    def __init__(self, ref: Reference, *, plain_http: bool = False,
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        import requests

        self.ref = ref
        self.plain_http = plain_http
        self.base = f"{'http' if plain_http else 'https'}://{ref.host}/v2/{ref.repository}/"
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "appimg"
        self.session.trust_env = False  # proxies only as the user's config says: none
        self.creds = credentials(ref.host, env or {})
        self.auth_header: str | None = None
        #: Bytes the registry sent for blobs (the delta measure).
        self.blob_bytes = 0

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: object) -> None:
        self.session.close()

    # --- requests ---------------------------------------------------------------------

    def _send(self, method: str, url: str, *, push: bool = False, **kwargs: Any) -> Any:
        """One request, answering an authentication challenge once; HTTP errors raise."""
        import requests

        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            if self.auth_header:
                headers["Authorization"] = self.auth_header
            if attempt and hasattr(kwargs.get("data"), "seek"):
                kwargs["data"].seek(0)
            try:
                resp = self.session.request(method, url, headers=headers, timeout=TIMEOUT,
                                            **kwargs)  # fmt: skip
            except requests.RequestException as exc:
                raise RegistryError(f"{self.ref.host}: {_reason(exc)}") from None
            if resp.status_code != 401 or attempt:
                return resp
            self._authenticate(resp.headers.get("WWW-Authenticate", ""), push)
        return resp  # pragma: no cover (the loop returns)

    def _authenticate(self, header: str, push: bool) -> None:
        import base64

        import requests

        scheme, params = _challenge(header)
        if scheme == "basic":
            if not self.creds:
                raise RegistryError(f"{self.ref.host}: the registry asks for credentials and "
                                    "none are configured (docker login, podman login)")  # fmt: skip
            token = base64.b64encode(":".join(self.creds).encode()).decode()
            self.auth_header = f"Basic {token}"
            return
        if scheme != "bearer" or "realm" not in params:
            shown = header or "no challenge"
            raise RegistryError(f"{self.ref.host}: authentication required ({shown})")
        actions = "pull,push" if push else "pull"
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:{actions}"}
        if "service" in params:
            query["service"] = params["service"]
        try:
            resp = self.session.get(params["realm"], params=query, auth=self.creds,
                                    timeout=TIMEOUT)  # fmt: skip
        except requests.RequestException as exc:
            raise RegistryError(f"{params['realm']}: {_reason(exc)}") from None
        body = resp.json() if resp.ok else {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.ref.host}: no token from {params['realm']} "
                                f"(HTTP {resp.status_code})")  # fmt: skip
        self.auth_header = f"Bearer {token}"

    def _fail(self, resp: Any, what: str) -> RegistryError:
        detail = ""
        with contextlib.suppress(Exception):
            errors = resp.json().get("errors") or []
            detail = errors[0].get("message", "") if errors else ""
        reason = f"HTTP {resp.status_code}" + (f": {detail}" if detail else "")
        if resp.status_code == 401:
            reason += " (check the credentials: docker login, podman login)"
        return RegistryError(f"{self.ref}: {what}: {reason}")

    # --- manifests ----------------------------------------------------------------------

    def manifest(self, target: str | None = None) -> artifact.ImageArtifact:
        """The image artifact the tag (or digest) names; its digest checked if pinned."""
        target = target or self.ref.target
        resp = self._send("GET", self.base + f"manifests/{target}", stream=True,
                          headers={"Accept": artifact.MANIFEST_TYPE})  # fmt: skip
        with resp:
            if resp.status_code == 404:
                raise RegistryError(f"{self.ref}: no such image in the registry")
            if not resp.ok:
                raise self._fail(resp, "cannot read the manifest")
            data = _read_capped(resp, artifact.MAX_MANIFEST, f"{self.ref}: the manifest")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if target.startswith("sha256:") and digest != target:
            raise IntegrityError(f"{self.ref}: the registry served a manifest that does not "
                                 f"match {target}")  # fmt: skip
        return artifact.parse_manifest(data, digest, str(self.ref))

    def put_manifest(self, data: bytes, tag: str, media_type: str = artifact.MANIFEST_TYPE,
                     headers: dict[str, str] | None = None) -> str:  # fmt: skip
        """Put a manifest under a tag or its digest; ``headers`` receives the answer's."""
        resp = self._send("PUT", self.base + f"manifests/{tag}", push=True, data=data,
                          headers={"Content-Type": media_type})  # fmt: skip
        if resp.status_code not in (200, 201):
            raise self._fail(resp, "the registry refused the manifest")
        if headers is not None:
            headers.update(resp.headers)
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def raw_manifest(self, target: str, accept: str) -> bytes | None:
        """The bytes of a manifest or index (None if there is none), digest-checked when
        ``target`` is a digest."""
        resp = self._send("GET", self.base + f"manifests/{target}", stream=True,
                          headers={"Accept": accept})  # fmt: skip
        with resp:
            if resp.status_code == 404:
                return None
            if not resp.ok:
                raise self._fail(resp, f"cannot read the manifest {target}")
            data = _read_capped(resp, artifact.MAX_MANIFEST, f"{self.ref}: {target}")
        if target.startswith("sha256:") and "sha256:" + hashlib.sha256(data).hexdigest() != target:
            raise IntegrityError(f"{self.ref}: the registry served a manifest that does not "
                                 f"match {target}")  # fmt: skip
        return data

    def referrers(self, digest: str, artifact_type: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``digest`` and whose artifact
        type is ``artifact_type``: from the referrers API, or, where the registry lacks
        it (distribution 2.8 answers 404), from the ``sha256-<hex>`` tag's index (the
        distribution spec 1.1's referrers tag schema)."""
        resp = self._send("GET", self.base + f"referrers/{digest}", stream=True,
                          params={"artifactType": artifact_type},
                          headers={"Accept": artifact.INDEX_TYPE})  # fmt: skip
        with resp:
            data = None
            if resp.ok and resp.headers.get("Content-Type", "").startswith(artifact.INDEX_TYPE):
                data = _read_capped(resp, artifact.MAX_MANIFEST, f"{self.ref}: referrers")
            elif resp.status_code not in (404, 405, 400) and not resp.ok:
                raise self._fail(resp, "cannot list the referrers")
        if data is None:
            data = self.raw_manifest(artifact.referrers_tag(digest), artifact.INDEX_TYPE)
        if data is None:
            return []
        return [d for d in artifact.index_manifests(data)
                if d.get("artifactType") == artifact_type]  # fmt: skip

    # --- blobs --------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        resp = self._send("HEAD", self.base + f"blobs/{digest}", push=True)
        return resp.status_code == 200

    def put_blob(self, data: bytes | IO[bytes], digest: str, size: int) -> None:
        """Upload a blob unless the repository has it: POST, then one PUT with the bytes."""
        if self.has_blob(digest):
            return
        resp = self._send("POST", self.base + "blobs/uploads/", push=True)
        if resp.status_code != 202 or "Location" not in resp.headers:
            raise self._fail(resp, "the registry refused to start an upload")
        location = urljoin(resp.url, resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        resp = self._send("PUT", f"{location}{sep}digest={digest}", push=True, data=data,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Length": str(size)})  # fmt: skip
        if resp.status_code != 201:
            raise self._fail(resp, f"the registry refused the blob {digest}")

    def _blob(self, digest: str, byte_range: tuple[int, int] | None = None) -> Any:
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        resp = self._send("GET", self.base + f"blobs/{digest}", stream=True, headers=headers)
        if resp.status_code == 404:
            resp.close()
            raise RegistryError(f"{self.ref}: the registry has no blob {digest}")
        if byte_range and resp.status_code != 206:
            resp.close()
            raise RangeNotSupported(f"{self.ref}: the registry does not serve byte ranges "
                                f"(HTTP {resp.status_code})")  # fmt: skip
        if not resp.ok:
            resp.close()
            raise self._fail(resp, f"cannot download {digest}")
        return resp

    def _chunks(self, resp: Any, what: str) -> Iterator[bytes]:
        import requests

        try:
            for chunk in resp.iter_content(CHUNK):
                self.blob_bytes += len(chunk)
                yield chunk
        except requests.RequestException as exc:
            raise IntegrityError(f"{what}: the download broke off ({_reason(exc)})") from None

    def download_blob(self, digest: str, size: int, target: Path,
                      progress: Progress = _no_progress) -> None:  # fmt: skip
        """Write the blob into the new file ``target``: exactly ``size`` bytes whose
        SHA-256 is ``digest``, else IntegrityError and no file."""
        what = f"{self.ref}: {digest}"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)  # fmt: skip
        try:
            with os.fdopen(fd, "wb") as out, self._blob(digest) as resp:
                hasher = hashlib.sha256()
                done = 0
                for chunk in self._chunks(resp, what):
                    if done + len(chunk) > size:
                        raise IntegrityError(f"{what}: the registry sent more than "
                                             f"the {size} bytes announced: refused")  # fmt: skip
                    hasher.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, size)
                if done != size:
                    raise IntegrityError(f"{what}: truncated download ({done} of {size} "
                                         "bytes): refused")  # fmt: skip
                if "sha256:" + hasher.hexdigest() != digest:
                    raise IntegrityError(f"{what}: the registry served bytes that do not match "
                                         "the digest: refused")  # fmt: skip
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise

    def read_blob(self, digest: str, size: int) -> bytes:
        """A small blob (an index), whole: exactly ``size`` bytes with that digest."""
        what = f"{self.ref}: {digest}"
        with self._blob(digest) as resp:
            data = _read_capped(resp, size, what)
        self.blob_bytes += len(data)
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"{what}: the registry served bytes that do not match "
                                 "the digest: refused")  # fmt: skip
        return data

    def iter_range(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (exclusive) of a blob, as they arrive; exactly that
        many or IntegrityError. A server that ignores ``Range`` is a RegistryError before
        any byte is yielded. The caller verifies the content."""
        what = f"{self.ref}: {digest}"
        done = 0
        with self._blob(digest, (start, end)) as resp:
            for piece in self._chunks(resp, what):
                done += len(piece)
                if done > end - start:
                    break
                yield piece
        if done != end - start:
            raise IntegrityError(f"{what}: a range request returned {done} bytes, "
                                 f"not {end - start}: refused")  # fmt: skip

    def read_range(self, digest: str, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (exclusive) of a blob; the caller verifies them."""
        what = f"{self.ref}: {digest}"
        with self._blob(digest, (start, end)) as resp:
            data = b"".join(self._chunks(resp, what))
        if len(data) != end - start:
            raise IntegrityError(f"{what}: a range request returned {len(data)} bytes, "
                                 f"not {end - start}: refused")  # fmt: skip
        return data


def _read_capped(resp: Any, cap: int, what: str) -> bytes:
    data = bytearray()
    for chunk in resp.iter_content(65536):
        data += chunk
        if len(data) > cap:
            raise RegistryError(f"{what} is larger than {cap} bytes")
    return bytes(data)


def _reason(exc: Exception) -> str:
    """One line for a network failure (requests nests the cause several levels deep)."""
    text = str(exc)
    found = re.search(r"\] ([^'\]]+)'?\)+\Z", text) or re.search(r"(Connection refused|"
                                                                 r"timed out|Name or service "
                                                                 r"not known)", text)  # fmt: skip
    return (found.group(1) if found else text.splitlines()[0] if text else type(exc).__name__)[:200]


class ProgressMeter:
    """Bytes and rate on stderr, once a transfer has taken more than a second: one line
    rewritten in place on a terminal, else a line every few seconds."""

    def __init__(self, label: str, stream: IO[str], *, tty: bool) -> None:
        self.label = label
        self.stream = stream
        self.tty = tty
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed < 1 or (now - self.last < (0.2 if self.tty else 5) and done < total):
            return
        self.last = now
        self.shown = True
        rate = done / elapsed if elapsed else 0
        pct = f" {100 * done // total}%" if total else ""
        line = f"{self.label}: {_mib(done)} of {_mib(total)}{pct}, {_mib(rate)}/s"
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K" + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"
