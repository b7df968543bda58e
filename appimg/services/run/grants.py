"""What an app's permissions open in its sandbox (spec/run.md §Permissions).

:func:`build` turns the effective :class:`~appimg.format.permissions.Permissions`,
the user's directories, the host whitelist's ``deny`` entries and the caller's
environment into a :class:`Grants`: binds (host descriptors, opened without
following any symlink), device binds, hidden paths, symlinks, environment and
the namespaces to share. Both backends (bubblewrap and
:mod:`appimg.services.run.direct`) apply a ``Grants`` through
:class:`~appimg.services.run.sandbox.Sandbox`.

Every host path is opened component by component with ``O_NOFOLLOW`` and bound
through its descriptor: a symlink on the host (planted by an app with write
access, say) is never followed; a granted location that is one is refused with
a warning. Paths that are never shown (:func:`always_hidden`, and the
whitelist's ``deny`` entries) are covered by an empty read-only tmpfs wherever
a grant contains them, and every directory between a writable grant's root and
such a path is made a mount point of its own, so that the app cannot rename it
away (``EBUSY``) and plant a replacement for its next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable

from appimg.files import read_capped
from appimg.format.permissions import XDG_USER_DIRS, Permissions
from appimg.host.dirs import UserDirs
from appimg.host.whitelist import covers, normalise
from appimg.services.run.sandbox import Bind, Hide, Link
from appimg.values import Fields

#: Device permission -> host path, bound where the host has it (``all`` is the whole /dev).
DEVICE_PATHS = {"dri": "/dev/dri", "kvm": "/dev/kvm", "input": "/dev/input", "usb": "/dev/bus/usb"}
#: ``xdg-user-dirs``' defaults, below $HOME, for names ``user-dirs.dirs`` does not set.
USER_DIR_DEFAULTS = {
    "DESKTOP": "Desktop", "DOWNLOAD": "Downloads", "TEMPLATES": "Templates",
    "PUBLICSHARE": "Public", "DOCUMENTS": "Documents", "MUSIC": "Music",
    "PICTURES": "Pictures", "VIDEOS": "Videos",
}  # fmt: skip
#: The part of ``host`` beside home, host-os and host-etc, each where present.
HOST_EXTRA = ("/media", "/mnt", "/opt", "/srv", "/run/media")
#: ``host-os``: /usr and the merged-/usr entries, at /run/host/NAME.
HOST_OS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOST_ROOT = "/run/host"
#: A grant at or above one of these would replace what the sandbox itself provides
#: (/, /tmp, /proc, ...) or expose every user session's runtime directory.
NOT_ABOVE = ("/tmp", "/run/user", "/proc", "/dev", "/sys")
#: A grant at or below one of these would show kernel interfaces the sandbox replaces.
NOT_BELOW = ("/proc", "/dev", "/sys")
MAX_USER_DIRS_BYTES = 64 * 1024
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def always_hidden(dirs: UserDirs) -> tuple[str, ...]:
    """Never shown, whatever is granted: keys, appimg's configuration, store and caches
    (the verified extractions apps run from without FUSE, the parsed profiles: their
    digests lie beside them, so an app that could write them could rewrite both),
    other apps' data directories (the app's own is bound back) and appimg's mounts."""
    paths = [dirs.home / ".ssh", dirs.home / ".gnupg", dirs.config_home / "appimg",
             dirs.data_home / "appimg", dirs.cache_home / "appimg",
             dirs.home / ".var" / "appimg", dirs.runtime / "appimg"]  # fmt: skip
    return tuple(normalise(str(p)) for p in paths)


#: Where the real places of symlinked hidden paths are remembered: under a path an app
#: never sees, so no app can make appimg forget one.
REMEMBERED_FILE = "hidden-targets"
MAX_REMEMBERED = 256


def remembered_targets(dirs: UserDirs, hidden: Iterable[str]) -> tuple[str, ...]:
    """Every place a symlinked hidden path (``~/.ssh -> dotfiles/ssh``) has pointed to.

    The link itself lies in the user's home: an app with write access there may
    repoint it between runs, and the place it pointed to before would then be shown.
    So the real places are remembered (in ``$XDG_DATA_HOME/appimg``, never shown) and
    stay hidden for good. Only read or written when a hidden path is a symlink.
    """
    links = [p for p in hidden if os.path.islink(p)]
    if not links:
        return ()
    store = dirs.data_home / "appimg" / REMEMBERED_FILE
    try:
        known = read_capped(store, 64 << 10, OSError).decode("utf-8", "replace").splitlines()
    except OSError:
        known = []
    remembered = [p for p in known if p.startswith("/")][:MAX_REMEMBERED]
    new = [normalise(os.path.realpath(p)) for p in links]
    new = [p for p in new if p not in remembered and p not in hidden]
    if new and len(remembered) < MAX_REMEMBERED:
        from appimg.atomic import replace_file

        remembered += new[: MAX_REMEMBERED - len(remembered)]
        with contextlib.suppress(OSError):
            store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_file(store, "".join(f"{p}\n" for p in remembered).encode(), 0o600)
    return tuple(remembered)


class Grants(Fields):
    """What the sandbox gets beyond its base layout; owns the descriptors it holds.

    A plain class, not a dataclass: importing dataclasses costs every launch ~5 ms.
    """

    __slots__ = ("binds", "hides", "links", "env", "share_network", "share_ipc",  # noqa: RUF023 (repr order)
                 "host_dev", "warnings", "_fds")  # fmt: skip
    _FIELDS = __slots__

    def __init__(
        self, *, share_network: bool = False, share_ipc: bool = False, host_dev: bool = False
    ) -> None:
        self.binds: list[Bind] = []
        self.hides: list[Hide] = []
        self.links: list[Link] = []
        self.env: dict[str, str] = {}
        self.share_network = share_network
        self.share_ipc = share_ipc
        self.host_dev = host_dev
        self.warnings: list[str] = []
        self._fds: list[int] = []

    def fds(self) -> tuple[int, ...]:
        return tuple(self._fds)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __enter__(self) -> Grants:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def open_nofollow(path: str, *, create_below: str | None = None) -> int:
    """An ``O_PATH`` descriptor of ``path``, no component followed if it is a symlink.

    A symlink anywhere is ``OSError(ELOOP)``. ``create_below`` names a directory
    above ``path`` below which missing directories are made (0700 for the last, as
    the user's own; ``mkdirat`` never follows a symlink either).
    """
    parts = _parts(path)
    fd = os.open("/", _DIR)
    try:
        for index, name in enumerate(parts):
            here = "/" + "/".join(parts[: index + 1])
            last = index == len(parts) - 1
            if create_below and covers(create_below, here) and here != create_below:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700 if last else 0o755, dir_fd=fd)
            try:
                child = os.open(name, _DIR if not last else os.O_PATH | os.O_NOFOLLOW
                                | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
            except NotADirectoryError:
                raise OSError(errno.ELOOP, f"{here} is a symlink or not a directory") from None
            os.close(fd)
            fd = child
            if last and stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, f"{here} is a symlink")
    except BaseException:
        os.close(fd)
        raise
    return fd


def user_dirs(dirs: UserDirs) -> dict[str, str]:
    """``XDG_NAME_DIR`` of ``$XDG_CONFIG_HOME/user-dirs.dirs`` (``NAME`` -> path), with
    xdg-user-dirs' defaults; only paths strictly below home are kept (the file is the
    user's, and an app with home access can rewrite it)."""
    home = normalise(str(dirs.home))
    found = {name: f"{home}/{rel}" for name, rel in USER_DIR_DEFAULTS.items()}
    try:
        text = read_capped(dirs.config_home / "user-dirs.dirs", MAX_USER_DIRS_BYTES, OSError)
    except OSError:
        text = b""
    for line in text.decode("utf-8", "replace").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or not key.startswith("XDG_") or not key.endswith("_DIR"):
            continue
        value = value.strip().strip('"')
        if value == "$HOME" or value.startswith("$HOME/"):
            value = home + value[len("$HOME") :]
        elif not value.startswith("/"):
            continue
        found[key[4:-4]] = normalise(value)
    return {name: path for name, path in found.items() if path != home and covers(home, path)}


def _locations(location: str, dirs: UserDirs) -> list[tuple[str, str, bool]] | str:
    """(host path, path in the sandbox, forced read-only) of a location, or why none."""
    home = str(dirs.home)
    if location == "home":
        return [(home, home, False)]
    if location == "host-etc":
        return [("/etc", f"{HOST_ROOT}/etc", True)]
    if location == "host-os":
        return [(f"/{name}", f"{HOST_ROOT}/{name}", True) for name in HOST_OS]
    if location == "host":
        out = [(home, home, False)]
        out += [(p, p, False) for p in HOST_EXTRA if os.path.lexists(p)]
        return [*out, *_locations("host-os", dirs), *_locations("host-etc", dirs)]  # type: ignore[misc]
    head, _, rest = location.partition("/")
    if head in XDG_USER_DIRS:
        base = user_dirs(dirs).get(XDG_USER_DIRS[head])
        if base is None:
            return "its user-dirs.dirs entry is not a folder below home"
    elif head in ("xdg-config", "xdg-data", "xdg-cache", "xdg-run"):
        attr = {"xdg-config": "config_home", "xdg-data": "data_home",
                "xdg-cache": "cache_home", "xdg-run": "runtime"}[head]  # fmt: skip
        base = str(getattr(dirs, attr))
    elif head == "~":
        base = home
    elif location.startswith("/"):
        base, rest = location, ""
    else:
        return "unknown location"
    path = normalise(f"{base}/{rest}" if rest else base)
    return [(path, path, False)]


def _refusal(path: str, hidden: Iterable[str], *, system: bool = True) -> str | None:
    above = system and any(covers(path, p) for p in NOT_ABOVE)
    if above or any(covers(p, path) for p in NOT_BELOW):
        return f"{path} is the sandbox's own or the system's"
    for secret in hidden:
        if covers(secret, path):
            return f"{path} is at or below {secret}, which is never shown"
    return None


class _Builder:
    def __init__(self, grants: Grants, hidden: tuple[str, ...], always: tuple[str, ...]):
        self.g = grants
        self.hidden = hidden  # never shown: refused at or below, hidden inside
        self.always = always  # of those, the ones to create so they can be covered
        self.self_bound: set[str] = set()
        self.hidden_done: set[str] = set()

    def add(self, source: str, dest: str, *, writable: bool, what: str,
            create_below: str | None = None, extra_hidden: Iterable[str] = (),
            system_checked: bool = False) -> bool:  # fmt: skip
        """Bind host ``source`` at ``dest``, with the hidden paths below it covered.

        ``system_checked``: the host's whitelist allowed ``source`` already (a host
        rule's bind): only the hidden paths are refused, not the system's."""
        source = normalise(source)
        reason = _refusal(source, self.hidden, system=not system_checked)
        if reason is None:
            try:
                fd = self.g._keep(open_nofollow(source, create_below=create_below))
            except FileNotFoundError:
                return False  # nothing to show; not an error (as a missing device)
            except OSError as exc:
                reason = f"{source}: {exc.strerror or exc}"
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    reason = f"{source} is (or runs through) a symlink on the host: not followed"
        if reason is not None:
            self.g.warnings.append(f"{what} not granted: {reason}")
            return False
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        self.g.binds.append(Bind(source, dest, writable=writable, fd=fd, is_dir=is_dir))
        if is_dir:
            for secret in sorted({*self.hidden, *extra_hidden}):
                self._hide_inside(source, dest, fd, secret, writable=writable)
        return True

    def _hide_inside(self, root: str, dest: str, root_fd: int, secret: str, *,
                     writable: bool) -> None:  # fmt: skip
        # The secret as named, and where it really is if the name runs through a symlink
        # (~/.ssh -> dotfiles/ssh): both are covered when inside this grant.
        candidates = {secret}
        with contextlib.suppress(OSError):
            candidates.add(normalise(os.path.realpath(secret)))
        for path in sorted(candidates):
            if path == root or not covers(root, path):
                continue
            parts = _parts(path[len(root) :])
            fd = os.dup(root_fd)
            try:
                for index, name in enumerate(parts):
                    last = index == len(parts) - 1
                    if last and path in self.always:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, 0o700, dir_fd=fd)
                    try:
                        child = os.open(name, (_DIR if not last else os.O_PATH | os.O_NOFOLLOW
                                               | os.O_CLOEXEC), dir_fd=fd)  # fmt: skip
                    except OSError:
                        break  # missing, or a symlink: its real place is the other candidate
                    os.close(fd)
                    fd = child
                    at = dest + "/" + "/".join(parts[: index + 1])
                    mode = os.fstat(fd).st_mode
                    if last:
                        if not stat.S_ISLNK(mode) and at not in self.hidden_done:
                            self.hidden_done.add(at)
                            self.g.hides.append(Hide(at, is_dir=stat.S_ISDIR(mode)))
                    elif writable and at not in self.self_bound:
                        # A mount point of its own: rename() of it fails (EBUSY).
                        self.self_bound.add(at)
                        host = root + "/" + "/".join(parts[: index + 1])
                        self.g.binds.append(Bind(host, at, writable=True, is_dir=True,
                                                 fd=self.g._keep(os.dup(fd))))  # fmt: skip
            finally:
                os.close(fd)


def build(
    permissions: Permissions,
    dirs: UserDirs,
    deny: Iterable[str] = (),
    rule_binds: Iterable[tuple[str, str, bool, tuple[str, ...]]] = (),
) -> Grants:
    """The sandbox's grants: ``permissions`` (devices, share, filesystems), then the
    binds of granted host rules (``rule_binds``: host path, at, writable, the
    whitelist's deny entries below it). ``deny`` is the host whitelist's deny list."""
    grants = Grants(share_network="network" in permissions.share,
                    share_ipc="ipc" in permissions.share)  # fmt: skip
    try:
        _fill(grants, permissions, dirs, tuple(deny), rule_binds)
    except BaseException:
        grants.close()
        raise
    return grants


def _fill(grants: Grants, permissions: Permissions, dirs: UserDirs, deny: tuple[str, ...],
          rule_binds: Iterable[tuple[str, str, bool, tuple[str, ...]]]) -> None:  # fmt: skip
    if "all" in permissions.devices:
        grants.host_dev = True
    else:
        for name in sorted(permissions.devices):
            path = DEVICE_PATHS.get(name)
            if path and os.path.exists(path):
                grants.binds.append(Bind(path, path, writable=True, device=True,
                                         is_dir=os.path.isdir(path)))  # fmt: skip
    always = always_hidden(dirs) if permissions.filesystems or rule_binds else ()
    remembered = remembered_targets(dirs, always) if always else ()
    builder = _Builder(grants, (*always, *remembered, *deny), always)
    home = normalise(str(dirs.home))
    for location, mode in sorted(permissions.filesystems.items()):
        what = f"filesystem {location}" + ("" if mode == "rw" else f":{mode}")
        places = _locations(location, dirs)
        if isinstance(places, str):
            grants.warnings.append(f"{what} not granted: {places}")
            continue
        for source, dest, readonly in places:
            if location == "host-os" and os.path.islink(source):
                grants.links.append(Link(os.readlink(source), dest))
                continue
            create = None
            if mode == "create":
                if covers(home, source) and source != home:
                    create = home
                else:
                    grants.warnings.append(f"{what}: created only below home; not created")
            builder.add(source, dest, writable=mode != "ro" and not readonly, what=what,
                        create_below=create)  # fmt: skip
    for source, at, writable, hidden in rule_binds:
        builder.add(source, at, writable=writable, what=f"host rule {source}",
                    extra_hidden=hidden, system_checked=True)  # fmt: skip
