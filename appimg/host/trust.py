"""Trust: which signatures count, the trust store, and the one decision every command
makes about an image's signatures (spec/format.md §12, spec/xdg-index.md §4).

Keys live as files in ``$XDG_CONFIG_HOME/appimg/trusted-keys/`` (the user's) and
``/etc/appimg/trusted-keys/`` (the system's), one public key per file.
:func:`decide` is the rule that ``verify``, ``install``/``update``, ``mount``
and ``run`` all apply; each command says only what the user allowed it and
which flag would allow more. The rule:

* any invalid signature: refused, :class:`SignatureError` (exit 5), whatever
  was allowed: a broken signature means the image was changed after signing;
* an image that would replace an installed app (``update``): it must be signed
  by a key the app is pinned to, whatever the trust store says; an app
  installed unsigned (pinned to nothing) is replaced only if the user allows
  unsigned images again, and the new image is then judged as below;
* a valid signature by a trusted key: ``trusted``;
* a valid signature by a key the installed app is pinned to: ``pinned``;
* valid signatures by other keys: ``accepted`` if the user allowed untrusted
  images, else :class:`PolicyError` (exit 6);
* no signature: ``unsigned`` if the user allowed unsigned images, else
  :class:`PolicyError`.

The verdict also says which pinned keys signed the image (``Verdict.pinned``):
that, not the id an image claims, decides whether it is the installed app
(spec/run.md, the data directory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appimg.atomic import replace_file
from appimg.errors import AppimgError, PolicyError, SignatureError, UsageError
from appimg.host.dirs import UserDirs

if TYPE_CHECKING:
    from collections.abc import Callable

    from appimg.format.image import Image, SignatureStatus

SYSTEM_TRUST_DIR = Path("/etc/appimg/trusted-keys")
MAX_TRUSTED_KEYS = 4096

TRUSTED = "trusted"
PINNED = "pinned"
ACCEPTED = "accepted"
UNSIGNED = "unsigned"
#: States in which the user, not a trusted key, let the image in.
CONSENTED = (PINNED, ACCEPTED, UNSIGNED)


# -- the trust store --------------------------------------------------------------------------


def user_trust_dir(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "trusted-keys"


def trust_dirs(dirs: UserDirs) -> list[Path]:
    return [user_trust_dir(dirs), SYSTEM_TRUST_DIR]


def _key_files(directory: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(directory))[:MAX_TRUSTED_KEYS]
    except OSError:
        return []
    return [directory / name for name in names]


def load_trusted(dirs: UserDirs) -> dict[str, bytes]:
    """Key id → raw public key for every readable key file in the trust directories."""
    from appimg.format import keys

    found: dict[str, bytes] = {}
    for directory in trust_dirs(dirs):
        for path in _key_files(directory):
            try:
                raw = keys.load_public_raw(path)
            except AppimgError:
                continue  # an unreadable key trusts nothing; `appimg trust list` shows it
            found[keys.key_id(raw)] = raw
    return found


def list_trusted(dirs: UserDirs) -> list[dict[str, Any]]:
    """Every key file of both directories: key id (None if unreadable), scope, file, error."""
    from appimg.format import keys

    rows = []
    for directory in trust_dirs(dirs):
        scope = "system" if directory == SYSTEM_TRUST_DIR else "user"
        for path in _key_files(directory):
            row: dict[str, Any] = {"key_id": None, "scope": scope, "file": str(path), "error": None}
            try:
                row["key_id"] = keys.key_id(keys.load_public_raw(path))
            except AppimgError as exc:
                row["error"] = str(exc)
            rows.append(row)
    return rows


def add_trusted(dirs: UserDirs, source: Path) -> tuple[str, Path, bool]:
    """Trust the public key in ``source`` (a .pub or base64): (id, file, new).

    The key is stored as ``<key id>.pub`` (SubjectPublicKeyInfo PEM) in the user's
    directory; the system directory is only changed by its administrator. A private
    key is refused: whoever is handed one to trust has been handed the signing key."""
    from appimg.files import read_capped
    from appimg.format import keys

    try:
        data = read_capped(source, keys.MAX_KEY_FILE, SignatureError, "too large to be a key")
    except OSError as exc:
        raise UsageError(f"{source}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        raise UsageError(
            f"{source}: a private key; trust its public half instead "
            f"({source}.pub, written by appimg keygen), and keep this file secret"
        )
    public = keys.parse_public(data, str(source))
    kid = keys.key_id(public)
    directory = user_trust_dir(dirs)
    target = directory / f"{kid}.pub"
    known = any(row["key_id"] == kid for row in list_trusted(dirs) if row["scope"] == "user")
    if not known:
        directory.mkdir(parents=True, exist_ok=True)
        replace_file(target, keys.public_pem(public))
    return kid, target, not known


def remove_trusted(dirs: UserDirs, key: str) -> list[Path]:
    """Stop trusting a key, named by its id (or a unique prefix of 8+ digits) or a key file."""
    from appimg.format import keys

    if Path(key).exists() and not key.isalnum():
        key = keys.key_id(keys.load_public_raw(Path(key)))
    key = key.lower()
    if len(key) < 8:
        raise UsageError(f"{key!r}: give at least 8 digits of the key id, or a key file")
    rows = [r for r in list_trusted(dirs) if r["key_id"] and r["key_id"].startswith(key)]
    if len({r["key_id"] for r in rows}) > 1:
        raise UsageError(f"{key!r} matches more than one key")
    if not rows:
        raise UsageError(f"no trusted key {key}")
    removed = []
    for row in rows:
        if row["scope"] == "system":
            continue
        Path(row["file"]).unlink()
        removed.append(Path(row["file"]))
    if not removed:
        raise PolicyError(f"key {rows[0]['key_id']} is trusted system-wide in "
                          f"{SYSTEM_TRUST_DIR}; only an administrator can remove it")  # fmt: skip
    return removed


# -- the decision ----------------------------------------------------------------------------


class Verdict:
    """Why an image may be used: its ``state`` and the keys that state rests on."""

    __slots__ = ("key_ids", "pinned", "state", "statuses", "warning")

    def __init__(
        self,
        state: str,
        key_ids: list[str],
        statuses: list[SignatureStatus],
        warning: str = "",
        pinned: list[str] | None = None,
    ) -> None:
        self.state = state
        #: The keys the state rests on; an install or update pins the app to them.
        self.key_ids = key_ids
        #: The valid signatures' keys the installed app of the same id is pinned to.
        self.pinned = pinned or []
        #: Every signature's validity and trust, for reports (``verify``).
        self.statuses = statuses
        #: What to tell the user when only their consent let the image in ("" if trusted).
        self.warning = warning

    def to_json(self) -> dict[str, Any]:
        """The ``signature`` record of the store's index (spec/xdg-index.md §3)."""
        return {"state": self.state, "key_ids": list(self.key_ids)}


def decide(
    image: Image,
    dirs: UserDirs,
    *,
    allow_unsigned: bool = False,
    allow_untrusted: bool = False,
    pinned: Collection[str] = (),
    replacing: bool = False,
    unsigned_flag: str = "--allow-unsigned",
    untrusted_flag: str = "--allow-untrusted",
    remember: bool = False,
) -> Verdict:
    """The one trust rule (see the module docstring) for ``image`` on this host.

    ``allow_*`` is what the user explicitly allowed; ``*_flag`` names the option
    that would allow it, for the refusal's hint. ``pinned`` are the keys the
    installed app of the image's id is pinned to (spec/xdg-index.md §4);
    ``replacing`` says the image would replace that app (an update), which only
    a pinned key may sign. ``remember``: signatures found valid before are not checked
    again (:func:`remembered_check`; ``mount`` and ``run``, never ``verify``). Raises
    SignatureError or PolicyError.
    """
    # Trusted keys are read only for signed images: an unsigned one needs no crypto library.
    signed = bool(image.signature_block.signatures)
    check = remembered_check(dirs, image.verity.root_hash.hex()) if remember and signed else None
    statuses = image.signatures(load_trusted(dirs) if signed else (), check)
    name = image.path
    invalid = [s.key_id for s in statuses if not s.valid]
    if invalid:
        raise SignatureError(
            f"{name}: invalid signature by key {', '.join(invalid)} (modified after signing?)"
        )
    ids = sorted(s.key_id for s in statuses)
    same = [k for k in ids if k in pinned]
    if replacing and pinned:
        # Trust says who may publish some app; pinning says who publishes this one.
        if not same:
            by = f"signed by {', '.join(ids)}" if ids else "not signed"
            raise PolicyError(
                f"{name}: refused: it is {by}, but the installed app is pinned to "
                f"{', '.join(sorted(pinned))}: an update must be signed by a pinned key "
                f"(a new key only together with a pinned one)"
            )
        # Every key that signed beside a pinned one is vouched for by it: all become pinned.
        state = TRUSTED if any(s.trusted for s in statuses) else PINNED
        return Verdict(state, ids, statuses, pinned=same)
    if replacing and not allow_unsigned:
        raise PolicyError(
            f"{name}: refused: the installed app was installed unsigned, so nothing shows "
            f"this image comes from its publisher (pass {unsigned_flag} to replace it)"
        )
    if not statuses:
        if not allow_unsigned:
            raise PolicyError(
                f"{name}: refused: it is not signed, so its origin cannot be verified "
                f"(pass {unsigned_flag} to accept it)"
            )
        return Verdict(
            UNSIGNED, [], statuses, f"{name}: unsigned image, its origin is not verified"
        )
    trusted = sorted(s.key_id for s in statuses if s.trusted)
    if trusted:
        return Verdict(TRUSTED, trusted, statuses, pinned=same)
    if same:
        return Verdict(PINNED, same, statuses, pinned=same)
    why = f"it is signed by {', '.join(ids)}, which is not a trusted key"
    if not allow_untrusted:
        raise PolicyError(
            f"{name}: refused: {why} (trust the key with 'appimg trust add KEY.pub', "
            f"or pass {untrusted_flag})"
        )
    return Verdict(ACCEPTED, ids, statuses, f"{name}: accepted although {why} ({untrusted_flag})")


# -- signatures checked before -----------------------------------------------------------------

#: Versions the records: a change of the signature rule (spec/format.md §8.3) changes it.
_CHECKED_TAG = b"appimg valid ed25519 signature v1\0"


def checked_dir(dirs: UserDirs) -> Path:
    return dirs.cache_home / "appimg" / "checked-signatures"


def forget_checked(dirs: UserDirs, keep: Collection[str]) -> None:
    """Remove the records of images whose root hash is not in ``keep`` (the store's
    installed versions), and the directory once it is empty: they go with the app."""
    import shutil

    base = checked_dir(dirs)
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if name not in keep:
            shutil.rmtree(base / name, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: records of installed versions
        base.rmdir()


def remembered_check(dirs: UserDirs, root: str) -> Callable[[dict[str, str], bytes], bool]:
    """:func:`appimg.format.keys.check`, remembering what it found valid, for the image
    of verity root hash ``root`` (its records go with it: :func:`forget_checked`).

    Every launch of an installed app checks the same signature over the same
    statement; the crypto library alone costs a launch ~5 ms warm and ~35 ms with a
    cold page cache. A valid check leaves an empty file named by SHA-256 over the
    entry (algorithm, key id, public key, signature) and the signed message, in a
    directory named by the root hash (which the message binds); an entry
    and message with such a file are valid without the library. Only valid results
    are kept: a bad signature is checked, and refused, every time. Trust is not
    cached: whether a valid signature's key is trusted or pinned is decided afresh.
    The directory is the user's own, like the trust store, and hidden from apps
    (spec/run.md, "Always hidden"); anyone who can write it could add a trusted key.
    """
    from appimg.digests import sha256
    from appimg.format import keys

    directory = checked_dir(dirs) / root

    def check(entry: dict[str, str], message: bytes) -> bool:
        digest = sha256(_CHECKED_TAG)
        for field in ("algorithm", "key_id", "public_key", "signature"):
            value = entry.get(field)
            if isinstance(value, str):  # its UTF-8 byte length, as format.md §12.2 says
                raw = value.encode("utf-8", "surrogatepass")
                digest.update(b"%d:%s\0" % (len(raw), raw))
            else:
                digest.update(b"-\0")
        digest.update(message)
        record = directory / digest.hexdigest()
        if os.path.isfile(record):
            return True
        valid = keys.check(entry, message)
        if valid:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                os.close(os.open(record, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            except OSError:
                pass  # read-only or full cache: the next launch checks again
        return valid

    return check
