"""``oci://HOST[:PORT]/REPO[:TAG][@DIGEST]`` references (spec/distribution.md §1).

The grammar is the distribution spec's: a repository is lower-case path components
(``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or ``-``), a tag at most 128
characters of ``[A-Za-z0-9_.-]`` not starting with ``.`` or ``-``; the tag defaults
to ``latest``. The host always comes first (there is no default registry: an
image's origin is always explicit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appimg.errors import UsageError

SCHEME = "oci://"
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")  # fmt: skip
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


def is_reference(text: str) -> bool:
    return text.startswith(SCHEME)


@dataclass(frozen=True)
class Reference:
    host: str  # HOST[:PORT], as written: the key of the credentials too
    repository: str
    tag: str = "latest"
    digest: str | None = None  # a manifest digest pinned with @sha256:...

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not is_reference(text):
            raise UsageError(f"{text}: not an OCI reference (oci://HOST[:PORT]/REPO[:TAG])")
        rest = text[len(SCHEME) :]
        host, slash, path = rest.partition("/")
        digest = None
        if "@" in path:
            path, _, digest = path.partition("@")
            if not _DIGEST.match(digest):
                raise UsageError(f"{text}: the digest must be sha256:<64 hex digits>")
        repo, tag = path, "latest"
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            repo, _, tag = path.rpartition(":")
        if not slash or not _HOST.match(host):
            raise UsageError(f"{text}: no registry host (oci://HOST[:PORT]/REPO[:TAG])")
        if not _REPO.match(repo) or len(repo) > 255:
            raise UsageError(f"{text}: {repo!r} is not a repository name "
                             "(lower-case letters, digits, . _ - and /)")  # fmt: skip
        if not _TAG.match(tag):
            raise UsageError(f"{text}: {tag!r} is not a tag")
        return cls(host, repo, tag, digest)

    @property
    def target(self) -> str:
        """What a manifest is fetched by: the pinned digest, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        pinned = f"@{self.digest}" if self.digest else ""
        return f"{SCHEME}{self.host}/{self.repository}:{self.tag}{pinned}"
