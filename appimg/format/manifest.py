"""The manifest: authored as ``appimg.toml``, stored as canonical JSON (spec/manifest.md).

:func:`compile_manifest` turns the authoring file into the manifest object the
packer stores; :func:`validate` checks a manifest object read from an image and
is the single place that knows the schema's rules (spec/manifest.schema.json
says the same in JSON Schema); :func:`ignored` lists what a reader left out.

The two readings differ on purpose (spec/README.md, "Feature compatibility"):
authoring is strict (an unknown key is a typo, refused with the nearest known
one), reading is not (an unknown top-level key, ``permissions`` entry or export
kind is ancillary and ignored; a critical feature in ``requires`` that this
appimg lacks is refused first, by :mod:`appimg.format.features`).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from appimg import FORMAT_VERSION
from appimg.errors import FormatError, UsageError
from appimg.files import read_capped
from appimg.format import features, permissions
from appimg.format.limits import MAX_ID_LENGTH, MAX_LIST_ITEMS, MAX_STRING_LENGTH

AUTHORING_FILE = "appimg.toml"
#: Cap on the authoring file: its canonical JSON may hold at most 256 KiB, comments aside.
MAX_AUTHORING_BYTES = 1 << 20
HOST_MODES = ("replace", "under", "over")
#: ``search-providers`` (GNOME Shell and KRunner): exported only when the user enables
#: them (spec/xdg-index.md §3.7); an ancillary kind, which older readers ignore.
EXPORT_KINDS = ("desktop", "icons", "metainfo", "mime", "dbus", "search-providers")

# Reverse DNS as Flatpak and D-Bus define it: at least three elements of
# [A-Za-z0-9_-], none starting with a digit; '-' is not allowed in the last one.
_ID_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}

TOP_LEVEL_KEYS = {
    "format_version", "id", "name", "version", "arch", "entrypoint", "profile", "commands",
    "env", "host", "exports", "summary", "license", "homepage", "permissions", "requires",
}  # fmt: skip
#: Keys of ``appimg.toml``: the manifest's, less those the writer fills in itself.
AUTHORING_KEYS = TOP_LEVEL_KEYS - {"format_version", "requires"}


def _not_text(value: object, key: str) -> FormatError:
    """The error for a missing or non-string value, saying how to fix it."""
    if value is None:
        return FormatError(f'{key}: missing (add {key} = "...")')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # TOML reads version = 1.0 as a number.
        return FormatError(
            f'{key}: must be a string, not the number {value}: quote it ({key} = "{value}")'
        )
    return FormatError(f"{key}: must be a non-empty string")


def validate_app_id(app_id: object) -> str:
    if not isinstance(app_id, str) or not app_id:
        raise _not_text(app_id, "id")
    if len(app_id) > MAX_ID_LENGTH:
        raise FormatError(f"id: longer than {MAX_ID_LENGTH} characters")
    elements = app_id.split(".")
    if len(elements) < 3:
        raise FormatError(f"id {app_id!r}: must be reverse DNS with at least three parts")
    for element in elements:
        if not _ID_ELEMENT.match(element):
            raise FormatError(f"id {app_id!r}: invalid element {element!r}")
    if "-" in elements[-1]:
        raise FormatError(f"id {app_id!r}: the last element must not contain '-'")
    return app_id


def _text(value: object, key: str, *, single_line: bool = True) -> str:
    if not isinstance(value, str) or not value:
        raise _not_text(value, key)
    if len(value) > MAX_STRING_LENGTH:
        raise FormatError(f"{key}: longer than {MAX_STRING_LENGTH} characters")
    if any(ord(c) < 0x20 and (single_line or c not in "\n\t") for c in value) or "\x7f" in value:
        raise FormatError(f"{key}: contains control characters")
    return value


def payload_path(value: object, key: str) -> str:
    """A relative path inside the payload: no leading '/', no '.', '..' or empty parts."""
    text = _text(value, key)
    parts = text.split("/")
    if text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise FormatError(f"{key}: {text!r} must be a relative path inside the image, without '..'")
    return text


def absolute_path(value: object, key: str) -> str:
    text = _text(value, key)
    if (
        not text.startswith("/")
        or text.startswith("//")
        or posixpath.normpath(text) != text
        or "/.." in text
    ):
        raise FormatError(f"{key}: {text!r} must be an absolute, normalised path")
    return text


def _mapping(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{key}: must be a table")
    if len(value) > MAX_LIST_ITEMS:
        raise FormatError(f"{key}: more than {MAX_LIST_ITEMS} entries")
    return value


def _list(value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{key}: must be a list")
    if len(value) > MAX_LIST_ITEMS:
        raise FormatError(f"{key}: more than {MAX_LIST_ITEMS} entries")
    return value


def host_rule(rule: object, key: str) -> dict[str, str]:
    """One ``[[host]]`` table (of a manifest or a profile), checked, with defaults filled."""
    rule = _mapping(rule, key)
    unknown = set(rule) - {"path", "at", "mode"}
    if unknown:
        raise FormatError(f"{key}: unknown key(s) {', '.join(sorted(unknown))}")
    path = absolute_path(rule.get("path"), f"{key}.path")
    at = absolute_path(rule.get("at", path), f"{key}.at")
    if at == "/":
        raise FormatError(f"{key}.at: a rule cannot replace the root of the view")
    mode = rule.get("mode", "replace")
    if mode not in HOST_MODES:
        raise FormatError(f"{key}.mode: must be one of {', '.join(HOST_MODES)}, not {mode!r}")
    return {"path": path, "at": at, "mode": mode}


def validate(manifest: object) -> dict[str, Any]:
    """Check a manifest object against the v1 schema; return it unchanged."""
    return _check(manifest)[0]


def ignored(manifest: dict[str, Any]) -> list[str]:
    """What a reader of this (valid) manifest leaves out because it does not know it.

    One line each, control characters escaped: ``colour`` (a top-level key),
    ``exports.fonts`` (an export kind), ``permissions.sockets: foo`` (a name).
    """
    return [_printable(note) for note in _check(manifest)[1]]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _check(manifest: object) -> tuple[dict[str, Any], list[str]]:
    """:func:`validate`, and what was ignored (ancillary entries unknown here)."""
    m = _mapping(manifest, "manifest")
    notes = features.unknown_keys(m, TOP_LEVEL_KEYS, "manifest")
    version = m.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatError("manifest: format_version must be an integer")  # (True == 1)
    if version != FORMAT_VERSION:
        raise FormatError(
            f"manifest: unknown format version {version} (this appimg reads {FORMAT_VERSION})"
        )
    # Critical features before anything else: what they change may not parse as v1 knows it.
    if "requires" in m:
        features.check_requires(m["requires"])
    validate_app_id(m.get("id"))
    for key in ("name", "version", "arch"):
        _text(m.get(key), key)
    for key in ("summary", "license", "homepage"):
        if key in m:
            _text(m[key], key)
    payload_path(m.get("entrypoint"), "entrypoint")
    profile = m.get("profile")
    if not isinstance(profile, str) or not _PROFILE_NAME.match(profile):
        raise FormatError(f"profile: {profile!r} is not a valid profile name")
    for name, target in _mapping(m.get("commands", {}), "commands").items():
        if not _COMMAND_NAME.match(name):
            raise FormatError(f"commands: invalid command name {name!r}")
        payload_path(target, f"commands.{name}")
    for name, value in _mapping(m.get("env", {}), "env").items():
        if not _ENV_NAME.match(name):
            raise FormatError(f"env: invalid variable name {name!r}")
        if not isinstance(value, str) or len(value) > MAX_STRING_LENGTH or "\0" in value:
            raise FormatError(f"env.{name}: must be a string")
    for index, rule in enumerate(_list(m.get("host", []), "host")):
        host_rule(rule, f"host[{index}]")  # strict: an unknown member could widen the rule
    exports = _mapping(m.get("exports", {}), "exports")
    # An unknown export kind is ancillary: exporting less is safe.
    notes += [f"exports.{kind}" for kind in features.unknown_keys(exports, EXPORT_KINDS, "exports")]
    for kind in EXPORT_KINDS:
        for index, path in enumerate(_list(exports.get(kind, []), f"exports.{kind}")):
            payload_path(path, f"exports.{kind}[{index}]")
    if "permissions" in m:
        table = _mapping(m["permissions"], "permissions")
        features.unknown_keys(table, permissions.KEYS, "permissions")
        app_id = m["id"] if isinstance(m.get("id"), str) else None
        notes += permissions.parse(table, strict=False, app_id=app_id)[1]
    return m, notes


def host_arch() -> str:
    import platform  # not at import: it costs start-up time on the launch path

    machine = platform.machine().lower()
    return _ARCHES.get(machine, machine)


# --- authoring --------------------------------------------------------------------------


def load_authoring(app_dir: Path) -> dict[str, Any]:
    import tomllib  # only packing reads TOML; keep it off the start-up path of other commands

    path = app_dir / AUTHORING_FILE
    try:
        data = read_capped(path, MAX_AUTHORING_BYTES, FormatError)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found (create one with: appimg init {app_dir})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"{path}: invalid TOML: {exc}") from None


def _discover_exports(app_dir: Path, app_id: str) -> dict[str, list[str]]:
    """Files under share/ named after the app id, by XDG kind (Flatpak's export rule)."""
    found: dict[str, list[str]] = {kind: [] for kind in EXPORT_KINDS}
    share = app_dir / "share"

    def named_after_id(name: str) -> bool:
        return name.startswith((app_id + ".", app_id + "-"))

    kinds = {
        "applications": ("desktop", (".desktop",)),
        "metainfo": ("metainfo", (".xml",)),
        "appdata": ("metainfo", (".xml",)),
        "mime/packages": ("mime", (".xml",)),
        "dbus-1/services": ("dbus", (".service",)),
        "gnome-shell/search-providers": ("search-providers", (".ini",)),
        "krunner/dbusplugins": ("search-providers", (".desktop",)),
    }
    for sub, (kind, suffixes) in kinds.items():
        folder = share / sub
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if named_after_id(entry.name) and entry.name.endswith(suffixes):
                    found[kind].append(f"share/{sub}/{entry.name}")
    icons = share / "icons"
    if icons.is_dir():
        for root, dirs, files in os.walk(icons):
            dirs.sort()
            for name in sorted(files):
                if named_after_id(name) and name.endswith((".png", ".svg", ".svgz", ".xpm")):
                    rel = Path(root, name).relative_to(app_dir).as_posix()
                    found["icons"].append(rel)
    return {kind: paths for kind, paths in found.items() if paths}


def compile_manifest(app_dir: Path) -> dict[str, Any]:
    """Read ``appimg.toml`` from ``app_dir`` and return the validated manifest object."""
    authored = load_authoring(app_dir)
    unknown = sorted(set(authored) - AUTHORING_KEYS)
    if unknown:  # a typo here: the image would silently lack what was meant
        import difflib  # only for an error message

        close = difflib.get_close_matches(unknown[0], sorted(AUTHORING_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FormatError(f"{app_dir / AUTHORING_FILE}: unknown key(s) {', '.join(unknown)}{hint}")
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION}
    manifest.update(authored)
    manifest.setdefault("arch", host_arch())
    manifest.setdefault("profile", "none")
    if "host" in manifest:
        manifest["host"] = [
            host_rule(rule, f"host[{i}]") for i, rule in enumerate(_list(manifest["host"], "host"))
        ]
    if "permissions" in manifest:
        try:
            app_id = manifest["id"] if isinstance(manifest.get("id"), str) else None
            asked, _ = permissions.parse(manifest["permissions"], strict=True, app_id=app_id)
        except FormatError as exc:
            raise FormatError(f"{app_dir / AUTHORING_FILE}: {exc}") from None
        if asked:
            manifest["permissions"] = asked.to_manifest()
        else:  # an empty ancillary table only keeps the image from older readers
            del manifest["permissions"]
    try:
        app_id = validate_app_id(manifest.get("id"))
    except FormatError as exc:
        raise FormatError(f"{app_dir / AUTHORING_FILE}: {exc}") from None
    if "exports" not in manifest:
        manifest["exports"] = _discover_exports(app_dir, app_id)
    try:
        validate(manifest)
    except FormatError as exc:
        raise FormatError(f"{app_dir / AUTHORING_FILE}: {exc}") from None
    for key, target in [("entrypoint", manifest["entrypoint"])] + [
        (f"commands.{name}", path) for name, path in manifest.get("commands", {}).items()
    ]:
        _check_executable(app_dir, target, key)
    for kind, paths in manifest["exports"].items():
        for path in paths:
            if not (app_dir / path).is_file():
                raise FormatError(f"exports.{kind}: {path} is not a file in {app_dir}")
    return manifest


def _check_executable(app_dir: Path, target: str, key: str) -> None:
    path = app_dir / target
    if path.is_symlink():
        return  # resolved inside the image at run time
    if not path.is_file():
        raise FormatError(f"{key}: {target} is not a file in {app_dir}")
    if not os.access(path, os.X_OK):
        raise FormatError(f"{key}: {target} is not executable (chmod +x it)")


TEMPLATE = """\
# appimg.toml: how `appimg pack` turns this directory into an image.
# Every path is relative to this directory, which becomes the image's root.

# Reverse-DNS application id (at least three parts); names the exported files.
id = "{app_id}"
# Human-readable name and version.
name = "{name}"
version = "0.1.0"
# What `appimg run IMAGE` starts: a path inside the image.
entrypoint = "bin/{command}"
# Named host profile: "none" (only the app's files) or "host" (the host's /usr and
# the usual API files, see spec/overlay-rules.md).
profile = "none"
# Optional: the CPU architecture of the binaries (default: this machine's).
# arch = "x86_64"
# summary = "One line about the app"

# Optional named extra commands: `appimg run IMAGE --command shell`.
# [commands]
# shell = "bin/sh"

# Optional environment for the app.
# [env]
# {env_name}_MODE = "demo"

# Optional: the host API the app needs (Flatpak's names; spec/run.md, "Permissions").
# Nothing is granted that is not listed here; the user can change it with
# `appimg override`. No network unless share = ["network"].
# [permissions]
# sockets = ["wayland", "fallback-x11", "pulseaudio"]
# devices = ["dri"]
# share = ["network"]
# filesystems = ["xdg-download", "xdg-music:ro"]

# Optional overlay rules: show a host path inside the app's view. The host's
# whitelist (host-paths.d) decides what is granted. mode: replace | under | over.
# [[host]]
# path = "/usr/share/fonts"
# at = "/run/host/fonts"
# mode = "replace"

# Optional: what `appimg install` exports to the desktop. By default every file
# under share/applications, share/icons, share/metainfo, share/mime/packages,
# share/dbus-1/services, share/gnome-shell/search-providers and share/krunner/dbusplugins
# whose name starts with the id (search providers stay off until the user enables them).
# [exports]
# desktop = ["share/applications/{app_id}.desktop"]
"""


def template(app_dir: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "", app_dir.resolve().name.title()) or "App"
    if base[0].isdigit():
        base = "App" + base
    return TEMPLATE.format(
        app_id=f"org.example.{base}", name=base, command=base.lower(), env_name=base.upper()
    )
