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
from collections.abc import Iterable, Mapping
from pathlib import Path

from appimg.atomic import replace_file, unlink
from appimg.host.dirs import config_home, data_dirs, data_home, home
from appimg.services.xdgpath import DEFAULT_DATA_DIRS, exports_dir

BEGIN = "# >>> appimg xdg setup >>>"
END = "# <<< appimg xdg setup <<<"


def environment_d_file(env: Mapping[str, str]) -> Path:
    return config_home(env) / "environment.d" / "60-appimg.conf"


def profile_snippet(env: Mapping[str, str]) -> Path:
    return config_home(env) / "appimg" / "profile.sh"


def profile_file(env: Mapping[str, str]) -> Path:
    return home(env) / ".profile"


def environment_d_text(env: Mapping[str, str]) -> str:
    # environment.d(5) expands ${VAR:-default}; no quoting is needed or allowed.
    return (
        "# Written by 'appimg xdg setup' ('appimg xdg setup --undo' removes it):\n"
        "# apps installed by appimg are found through this directory.\n"
        f"XDG_DATA_DIRS={exports_dir(env)}:${{XDG_DATA_DIRS:-{DEFAULT_DATA_DIRS}}}\n"
    )


def snippet_text(env: Mapping[str, str]) -> str:
    exports = str(exports_dir(env))
    return (
        "# Written by 'appimg xdg setup' ('appimg xdg setup --undo' removes it):\n"
        "# adds the directory of apps installed by appimg to the XDG data search path.\n"
        f'case ":${{XDG_DATA_DIRS:-}}:" in\n'
        f"  *:{shlex.quote(exports)}:*) ;;\n"
        f'  *) XDG_DATA_DIRS={shlex.quote(exports)}:"${{XDG_DATA_DIRS:-{DEFAULT_DATA_DIRS}}}"\n'
        "     export XDG_DATA_DIRS ;;\n"
        "esac\n"
    )


def _block(env: Mapping[str, str]) -> str:
    path = shlex.quote(str(profile_snippet(env)))
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


def setup(env: Mapping[str, str]) -> list[Path]:
    """Write the snippets and hook the profile; idempotent. Returns the files written."""
    written = []
    for path, text in ((environment_d_file(env), environment_d_text(env)),
                       (profile_snippet(env), snippet_text(env))):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text.encode())
        written.append(path)
    profile = profile_file(env)
    try:
        old = profile.read_text()
    except FileNotFoundError:
        old = ""
    new = _without_block(old)
    if new and not new.endswith("\n"):
        new += "\n"
    new = new + ("\n" if new else "") + _block(env)
    if new != old:
        replace_file(profile, new.encode())
    written.append(profile)
    return written


def undo(env: Mapping[str, str]) -> list[Path]:
    """Remove what :func:`setup` wrote. Returns the files removed or changed."""
    changed = [p for p in (environment_d_file(env), profile_snippet(env)) if unlink(p)]
    for directory in (environment_d_file(env).parent, profile_snippet(env).parent):
        with contextlib.suppress(OSError):
            directory.rmdir()
    profile = profile_file(env)
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


def placement_notes(env: Mapping[str, str], exported: Iterable[str]) -> list[str]:
    """Tell the user when the desktop will not see an export, or when one hides a host file.

    ``exported`` are paths relative to the exports directory's ``share/``.
    """
    notes = []
    dirs = [str(p).rstrip("/") for p in data_dirs(env)]
    exports = str(exports_dir(env))
    if exports not in dirs and not environment_d_file(env).exists():
        notes.append(f"{exports} is not in XDG_DATA_DIRS: run 'appimg xdg setup' once "
                     "(then log in again) so the desktop finds installed apps")  # fmt: skip
    for rel in exported:
        if not rel.startswith("applications/"):
            continue
        if (data_home(env) / rel).exists():
            notes.append(f"{data_home(env) / rel} takes precedence over the exported {rel}")
        for directory in dirs:
            if directory != exports and os.path.exists(os.path.join(directory, rel)):
                notes.append(f"the exported {rel} hides {directory}/{rel}")
    return notes
