"""The D-Bus names the host's session already provides (spec/xdg-index.md §3.3, §3.6).

The exports directory comes first on the XDG data search path, so a service
file exported there is found by the session bus before the host's: an app whose
id is, contains or lies below a host service's name could be activated in that
service's place and be handed its callers' data. :func:`host_bus_names` lists
the names the host provides (the reserved ``org.freedesktop`` and
``ca.desrt.dconf``, and every ``Name=`` of the service files in
``/usr/share/dbus-1/services`` and the ``dbus-1/services`` directory of each
XDG data directory but the exports directory); :func:`conflict` says whether an
app id collides with one of them. Host files are read size-capped, without
following a symbolic link to the file itself; unreadable ones are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from appimg.host.dirs import UserDirs

#: Names that always belong to the host, whatever service files it has: the bus itself and
#: the freedesktop.org standard interfaces (Notifications, secrets, portals...), and dconf.
RESERVED = ("org.freedesktop", "ca.desrt.dconf")
MAX_SERVICE_FILE = 16 << 10
MAX_SERVICE_FILES = 4096


def related(app_id: str, name: str) -> bool:
    """The id equals ``name``, is a prefix of it, or lies below it (at a ``.``)."""
    return app_id == name or name.startswith(app_id + ".") or app_id.startswith(name + ".")


def _service_name(path: Path) -> str | None:
    """``Name=`` of a service file's ``[D-BUS Service]`` group (read leniently: the
    host's files are the host's business), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_SERVICE_FILE + 1)
    if len(data) > MAX_SERVICE_FILE:
        return None
    group = None
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("["):
            group = line
        elif group == "[D-BUS Service]" and line.startswith("Name="):
            return line[len("Name=") :].strip() or None
    return None


def service_dirs(dirs: UserDirs, exclude: Path | None = None) -> list[Path]:
    """Where the session bus looks for services, as the host set it up: the XDG data
    directories (``XDG_DATA_HOME`` first) and ``/usr/share``, less ``exclude`` (the
    exports directory, whose services are the apps')."""
    found = []
    for base in (dirs.data_home, *dirs.data_dirs, Path("/usr/share")):
        if exclude is not None and os.path.abspath(base) == os.path.abspath(exclude):
            continue
        path = base / "dbus-1" / "services"
        if path not in found:
            found.append(path)
    return found


def host_bus_names(dirs: UserDirs, exclude: Path | None = None) -> dict[str, str]:
    """Name -> where it comes from (a service file, or "reserved")."""
    names = dict.fromkeys(RESERVED, "reserved")
    for directory in service_dirs(dirs, exclude):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)[:MAX_SERVICE_FILES]
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".service"):
                name = _service_name(Path(entry.path))
                if name:
                    names.setdefault(name, entry.path)
    return names


def conflict(app_id: str, names: dict[str, str]) -> tuple[str, str] | None:
    """The first host name (and its source) the app id collides with, if any."""
    for name in sorted(names):
        if related(app_id, name):
            return name, names[name]
    return None
