"""The one error hierarchy of appimg.

Every failure a user can cause (bad input, a tampered image, a refused policy)
is an :class:`AppimgError`; the CLI prints its message as one line and exits
non-zero. Filesystem-shaped errors also subclass the matching built-in so that
their errno carries straight through to FUSE.
"""

from __future__ import annotations

import errno


class AppimgError(Exception):
    """Base of every error appimg reports to a user."""

    #: Process exit status the CLI uses for this kind of error.
    exit_code = 1


class UsageError(AppimgError):
    """The command line or an input path is wrong."""

    exit_code = 2


class FormatError(AppimgError):
    """An image, manifest or payload is malformed (not tampered: unreadable)."""

    exit_code = 3


class IntegrityError(AppimgError, OSError):
    """Bytes do not match the hash that covers them (a tampered or damaged image)."""

    exit_code = 4

    def __init__(self, message: str) -> None:
        AppimgError.__init__(self, message)
        self.errno = errno.EIO
        self.strerror = message

    def __str__(self) -> str:
        return self.strerror


class SignatureError(AppimgError):
    """A signature is missing, invalid, or made by a key that is not trusted."""

    exit_code = 5


class PolicyError(AppimgError):
    """The host's policy refuses what was asked for."""

    exit_code = 6


class StoreError(AppimgError):
    """The per-user store is inconsistent or cannot be changed."""

    exit_code = 7


class ToolError(AppimgError):
    """An external program appimg relies on is missing or failed."""

    exit_code = 8


class RegistryError(AppimgError):
    """An OCI registry cannot be reached, refuses a request or has no such image."""

    exit_code = 10


class PathError(AppimgError, OSError):
    """A path inside an image cannot be resolved; carries an errno for FUSE."""

    exit_code = 9

    def __init__(self, err: int, path: str, message: str | None = None) -> None:
        text = message or f"{path}: {errno.errorcode.get(err, err)}"
        AppimgError.__init__(self, text)
        self.errno = err
        self.strerror = text
        self.filename = path

    def __str__(self) -> str:
        return self.strerror


class NotFoundError(PathError, FileNotFoundError):
    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOENT, path, f"no such file or directory in image: {path}")


class NotADirError(PathError, NotADirectoryError):
    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOTDIR, path, f"not a directory in image: {path}")


class IsADirError(PathError, IsADirectoryError):
    def __init__(self, path: str) -> None:
        super().__init__(errno.EISDIR, path, f"is a directory in image: {path}")
