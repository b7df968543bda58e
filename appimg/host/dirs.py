"""The user's directories: XDG base directories and home, resolved once at the edge.

Per the XDG Base Directory Specification 0.8: a variable that is unset, empty or
not an absolute path is ignored and its default used. The command line reads
the environment once into a :class:`UserDirs` and hands that value down (as
Flatpak passes one context); no layer below re-reads the environment for a
directory, so tests build a ``UserDirs`` from a plain mapping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from appimg.errors import UsageError


def _home(env: Mapping[str, str]) -> Path:
    value = env.get("HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _single(env: Mapping[str, str], home: Path, name: str, default: str) -> Path:
    value = env.get(name, "")
    if value and os.path.isabs(value):
        return Path(value)
    return home / default


def _list(env: Mapping[str, str], name: str, default: str) -> tuple[Path, ...]:
    value = env.get(name, "") or default
    return tuple(Path(p) for p in value.split(":") if p and os.path.isabs(p))


class UserDirs:
    """Home, the XDG base directories and the runtime directory of one user.

    A plain class, not a dataclass: importing dataclasses costs the fast read-only
    commands (``appimg apps``) about 10 ms.
    """

    _FIELDS = (
        "home", "config_home", "data_home", "cache_home", "state_home", "data_dirs",
        "config_dirs", "_runtime",
    )  # fmt: skip
    __slots__ = (*_FIELDS, "_runtime_checked")

    def __init__(
        self,
        home: Path,
        *,
        config_home: Path | None = None,
        data_home: Path | None = None,
        cache_home: Path | None = None,
        state_home: Path | None = None,
        data_dirs: tuple[Path, ...] = (Path("/usr/local/share"), Path("/usr/share")),
        config_dirs: tuple[Path, ...] = (Path("/etc/xdg"),),
        runtime: Path | None = None,
    ) -> None:
        self.home = home
        self.config_home = config_home or home / ".config"
        self.data_home = data_home or home / ".local/share"
        self.cache_home = cache_home or home / ".cache"
        self.state_home = state_home or home / ".local/state"
        self.data_dirs = tuple(data_dirs)
        self.config_dirs = tuple(config_dirs)
        self._runtime = runtime
        self._runtime_checked = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UserDirs:
        home = _home(env)
        runtime = env.get("XDG_RUNTIME_DIR", "")
        return cls(
            home,
            config_home=_single(env, home, "XDG_CONFIG_HOME", ".config"),
            data_home=_single(env, home, "XDG_DATA_HOME", ".local/share"),
            cache_home=_single(env, home, "XDG_CACHE_HOME", ".cache"),
            state_home=_single(env, home, "XDG_STATE_HOME", ".local/state"),
            data_dirs=_list(env, "XDG_DATA_DIRS", "/usr/local/share/:/usr/share/"),
            config_dirs=_list(env, "XDG_CONFIG_DIRS", "/etc/xdg"),
            runtime=Path(runtime) if runtime and os.path.isabs(runtime) else None,
        )

    def __repr__(self) -> str:
        return f"UserDirs(home={str(self.home)!r}, data_home={str(self.data_home)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserDirs):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self._FIELDS)

    def __hash__(self) -> int:
        return hash((self.home, self.data_home, self.config_home, self._runtime))

    @property
    def runtime(self) -> Path:
        """$XDG_RUNTIME_DIR, else a private per-user directory under /tmp (created 0700)."""
        if self._runtime is not None and (self._runtime_checked or self._runtime.is_dir()):
            self._runtime_checked = True
            return self._runtime
        fallback = Path(f"/tmp/appimg-runtime-{os.getuid()}")
        fallback.mkdir(mode=0o700, exist_ok=True)
        st = fallback.lstat()
        if st.st_uid != os.getuid() or not fallback.is_dir() or fallback.is_symlink():
            raise UsageError(f"{fallback}: not a private directory owned by this user")
        return fallback
