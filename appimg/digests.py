"""SHA-256 of small inputs — statement digests, key ids, cache and record names —
without loading OpenSSL.

Importing :mod:`hashlib` loads OpenSSL's libcrypto: ~2.5 ms of every launch, which
hashes only a few kilobytes. CPython has its own SHA-256 built in (``_sha256``;
``_sha2`` from 3.12), which costs nothing to import; :mod:`hashlib` stays where
much is hashed (the verity tree, whole files), where OpenSSL is several times faster.
"""

from __future__ import annotations

try:
    from _sha256 import sha256
except ImportError:  # pragma: no cover - CPython >= 3.12, or another Python
    try:
        from _sha2 import sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment]

__all__ = ["sha256"]
