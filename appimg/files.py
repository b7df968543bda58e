"""Size-capped reads of small host files (keys, policy, profiles, the index, desktop entries).

Every file appimg reads whole from the host goes through :func:`read_capped`,
so a file that is too large is refused the same way everywhere, before more
than ``cap + 1`` bytes are held in memory, and never silently cut short.
Like :mod:`appimg.errors` and :mod:`appimg.atomic`, any layer may import it; it
imports nothing but :mod:`appimg.errors` so the fast commands can use it.
"""

from __future__ import annotations

import os

from appimg.errors import AppimgError


class FileTooLargeError(AppimgError):
    """A file holds more bytes than its reader accepts (raised by :func:`read_capped`)."""


def read_capped(
    path: str | os.PathLike[str],
    cap: int,
    error: type[Exception] = FileTooLargeError,
    too_large: str | None = None,
) -> bytes:
    """The bytes of the file at ``path``, which must hold at most ``cap`` bytes.

    A larger file raises ``error("PATH: TOO_LARGE")``, where ``too_large`` defaults
    to "larger than CAP bytes": each caller keeps its own error class and wording.
    Failures to open or read it propagate as :class:`OSError` for the caller to word.
    """
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise error(f"{os.fspath(path)}: {too_large or f'larger than {cap} bytes'}")
    return data
