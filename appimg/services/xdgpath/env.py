"""``appimg xdg setup``: put the exports directory on the desktop's search path
(spec/xdg-index.md §Search path setup); :func:`placement_notes` tells the user
after an install when the desktop will not see an export.

Two places, because sessions pick up their environment in two ways:
``$XDG_CONFIG_HOME/environment.d/60-appimg.conf`` (read by ``systemd --user``
and so by GNOME and KDE sessions) and a POSIX shell snippet,
``$XDG_CONFIG_HOME/appimg/profile.sh``, sourced from ``~/.profile`` by a
marked block (login shells, X sessions started from a display manager that
reads ``~/.profile``). ``--undo`` removes exactly what setup wrote.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

from appimg.atomic import replace_file, unlink
from appimg.host.dirs import UserDirs
from appimg.services.xdgpath import DEFAULT_DATA_DIRS, exports_dir

BEGIN = "# >>> appimg xdg setup >>>"
END = "# <<< appimg xdg setup <<<"


def environment_d_file(dirs: UserDirs) -> Path:
    return dirs.config_home / "environment.d" / "60-appimg.conf"


def profile_snippet(dirs: UserDirs) -> Path:
    return dirs.config_home / "appimg" / "profile.sh"


def profile_file(dirs: UserDirs) -> Path:
    return dirs.home / ".profile"


def environment_d_text(dirs: UserDirs) -> str:
    # environment.d(5) expands ${VAR:-default}; no quoting is needed or allowed.
    return (
        "# Written by 'appimg xdg setup' ('appimg xdg setup --undo' removes it):\n"
        "# apps installed by appimg are found through this directory.\n"
        f"XDG_DATA_DIRS={exports_dir(dirs)}:${{XDG_DATA_DIRS:-{DEFAULT_DATA_DIRS}}}\n"
    )


def snippet_text(dirs: UserDirs) -> str:
    exports = str(exports_dir(dirs))
    return (
        "# Written by 'appimg xdg setup' ('appimg xdg setup --undo' removes it):\n"
        "# adds the directory of apps installed by appimg to the XDG data search path.\n"
        f'case ":${{XDG_DATA_DIRS:-}}:" in\n'
        f"  *:{shlex.quote(exports)}:*) ;;\n"
        f'  *) XDG_DATA_DIRS={shlex.quote(exports)}:"${{XDG_DATA_DIRS:-{DEFAULT_DATA_DIRS}}}"\n'
        "     export XDG_DATA_DIRS ;;\n"
        "esac\n"
    )


def _block(dirs: UserDirs) -> str:
    path = shlex.quote(str(profile_snippet(dirs)))
    return f"{BEGIN}\n[ -r {path} ] && . {path}\n{END}\n"


def _without_block(text: str) -> str:
    start = text.find(BEGIN)
    if start < 0:
        return text
    end = text.find(END, start)
    if end < 0:
        return text
    end += len(END)
    if text[end : end + 1] == "\n":
        end += 1
    # Also drop the blank line setup put in front of the block.
    if start >= 2 and text[start - 2 : start] == "\n\n":
        start -= 1
    elif start == 1 and text[0] == "\n":
        start = 0
    return text[:start] + text[end:]


def setup(dirs: UserDirs) -> list[Path]:
    """Write the snippets and hook the profile; idempotent. Returns the files written."""
    written = []
    for path, text in ((environment_d_file(dirs), environment_d_text(dirs)),
                       (profile_snippet(dirs), snippet_text(dirs))):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text.encode())
        written.append(path)
    profile = profile_file(dirs)
    try:
        old = profile.read_text()
    except FileNotFoundError:
        old = ""
    new = _without_block(old)
    if new and not new.endswith("\n"):
        new += "\n"
    new = new + ("\n" if new else "") + _block(dirs)
    if new != old:
        replace_file(profile, new.encode())
    written.append(profile)
    return written


def undo(dirs: UserDirs) -> list[Path]:
    """Remove what :func:`setup` wrote. Returns the files removed or changed."""
    changed = [p for p in (environment_d_file(dirs), profile_snippet(dirs)) if unlink(p)]
    for directory in (environment_d_file(dirs).parent, profile_snippet(dirs).parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
    profile = profile_file(dirs)
    try:
        old = profile.read_text()
    except FileNotFoundError:
        return changed
    new = _without_block(old)
    if new != old:
        if new.strip():
            replace_file(profile, new.encode())
        else:
            unlink(profile)  # setup created it and nothing else is in it
        changed.append(profile)
    return changed


def placement_notes(dirs: UserDirs, exported: Iterable[str]) -> list[str]:
    """Tell the user when the desktop will not see an export, or when one hides a host file.

    ``exported`` are paths relative to the exports directory's ``share/``.
    """
    notes = []
    data_dirs = [str(p).rstrip("/") for p in dirs.data_dirs]
    exports = str(exports_dir(dirs))
    if exports not in data_dirs and not environment_d_file(dirs).exists():
        notes.append(f"{exports} is not in XDG_DATA_DIRS: run 'appimg xdg setup' once "
                     "(then log in again) so the desktop finds installed apps")  # fmt: skip
    for rel in exported:
        if not rel.startswith("applications/"):
            continue
        if (dirs.data_home / rel).exists():
            notes.append(f"{dirs.data_home / rel} takes precedence over the exported {rel}")
        for directory in data_dirs:
            if directory != exports and os.path.exists(os.path.join(directory, rel)):
                notes.append(f"the exported {rel} hides {directory}/{rel}")
    return notes
