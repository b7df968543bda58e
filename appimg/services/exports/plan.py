"""Applying the export rules to one image (spec/xdg-index.md §Export rules, §XDG files).

:func:`plan_exports` decides, for every path the manifest's ``exports`` lists,
whether it is exported and with which bytes (desktop entries and D-Bus services
are rewritten to start the app through ``appimg run``), or refused and why.
Search providers (GNOME Shell, KRunner; §3.7) are checked and rendered like the
rest but held apart in :attr:`ExportPlan.search_providers`: the store exports
them only when the user has enabled them.
:func:`scan_xdg_files` lists every XDG data file the payload holds, exported or
not, for the index. Both only read the payload through the verified reader.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from appimg.errors import FormatError, PathError
from appimg.format.payload.paths import resolve
from appimg.format.squashfs import Inode, SquashfsReader
from appimg.services.exports import Refused, exec_line, keyfile
from appimg.services.exports import mime as mime_rules
from appimg.services.exports.icons import check_icon
from appimg.services.exports.xmlcheck import root_element

#: XDG data directories (relative to ``share/``) recorded in the index.
XDG_DIRS = (
    "applications",
    "icons",
    "metainfo",
    "appdata",
    "mime/packages",
    "dbus-1/services",
    "gnome-shell/search-providers",
    "krunner/dbusplugins",
)
#: Export kind -> ((payload directory, required suffix, size cap), ...); icons are separate.
KIND_RULES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "desktop": (("share/applications/", ".desktop", 64 << 10),),
    "metainfo": (("share/metainfo/", ".xml", 1 << 20), ("share/appdata/", ".xml", 1 << 20)),
    "mime": (("share/mime/packages/", ".xml", 1 << 20),),
    "dbus": (("share/dbus-1/services/", ".service", 16 << 10),),
    "search-providers": (("share/gnome-shell/search-providers/", ".ini", 16 << 10),
                         ("share/krunner/dbusplugins/", ".desktop", 64 << 10)),
}  # fmt: skip
#: Where exported search providers go (under ``share/``): the shell reads every file there.
SEARCH_PROVIDER_DIRS = ("gnome-shell/search-providers/", "krunner/dbusplugins/")
MAX_ICON_READ = 1 << 20
MAX_EXPORT_FILES = 512
MAX_EXPORT_BYTES = 32 << 20
MAX_XDG_FILES = 10_000
MAX_XDG_DEPTH = 12
_ICON_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\Z")
_DESKTOP_ROOTS = {"metainfo": ("component", "application"), "mime": ("mime-info",)}
#: Keys removed from every group: ours (an image must not set them) and ones that run
#: host programs outside `appimg run` (Flatpak removes the last one too).
_DROPPED_KEYS = ("X-Appimg-Id", "X-Appimg-Image", "X-Appimg-Version",
                 "X-GNOME-Bugzilla-ExtraInfoScript",
                 # KDE runs Exec as another user (kdesu) with these, and grants the
                 # privileged Wayland protocols listed in the last one.
                 "X-KDE-SubstituteUID", "X-KDE-Username", "X-KDE-Wayland-Interfaces")  # fmt: skip
#: Keys naming a program or a host directory: rewritten in [Desktop Entry] and actions,
#: removed from [X-…] groups, whose keys no rule checks.
_PROGRAM_KEYS = frozenset({"Exec", "TryExec", "Path"})
#: File field codes: desktop-file-validate allows one per Exec.
_FILE_CODES = ("%f", "%F", "%u", "%U")


#: The standard keys that may be localised (localestring, iconstring); a localised variant
#: of any other standard key (Exec, TryExec, Path, Type, ...) is removed.
_LOCALISED_KEYS = frozenset({"Name", "GenericName", "Comment", "Keywords", "Icon"})


@dataclass(frozen=True)
class Context:
    """What the rules need to know besides the image."""

    app_id: str
    version: str
    launcher: str  # absolute path of the `appimg` program the Exec lines name
    image_path: str  # absolute path of the image in the store
    taken: Mapping[str, str] = field(default_factory=dict)  # rel -> other app exporting it
    other_ids: Collection[str] = ()  # ids of the other installed apps
    #: the host's shared-mime-info (types and aliases, globs, XML roots -> where/what)
    host_types: Mapping[str, str] = field(default_factory=dict)
    host_globs: Mapping[str, str] = field(default_factory=dict)
    host_xml_roots: Mapping[str, str] = field(default_factory=dict)
    #: types and globs (lowercased) the other installed apps' MIME packages define -> app
    other_types: Mapping[str, str] = field(default_factory=dict)
    other_globs: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ExportPlan:
    files: dict[str, bytes] = field(default_factory=dict)  # rel under share/ -> bytes
    sources: dict[str, str] = field(default_factory=dict)  # rel -> payload path
    refused: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    notes: list[str] = field(default_factory=list)
    opens: set[str] = field(default_factory=set)  # MimeType= of the exported desktop entries
    defines: set[str] = field(default_factory=set)  # types of the exported MIME packages
    #: search providers, checked and rendered (rel -> bytes) but not in ``files``: they see
    #: every query typed, so the store exports them only if the user enabled them
    search_providers: dict[str, bytes] = field(default_factory=dict)

    def mime_json(self) -> dict[str, list[str]]:
        return {"opens": sorted(self.opens), "defines": sorted(self.defines)}


def owned_name(name: str, app_id: str) -> bool:
    """Flatpak's rule: the file name starts with the app id followed by '.' or '-'."""
    return name.startswith(app_id) and name[len(app_id) : len(app_id) + 1] in (".", "-")


def outranks(app_id: str, owner: str, name: str) -> bool:
    """``app_id`` has a better claim to the file ``name`` than ``owner``, which exports it:
    both ids prefix the name, ``app_id`` is the longer (the exact id wins: a suite must not
    keep ``org.x.Suite.Editor.desktop`` from the app ``org.x.Suite.Editor``)."""
    return len(app_id) > len(owner) and owned_name(name, app_id)


def _owner_conflict(name: str, ctx: Context) -> str | None:
    """Another installed app whose (longer) id also prefixes ``name`` owns it."""
    for pos in range(len(ctx.app_id) + 1, len(name)):
        if name[pos] in ".-" and name[:pos] in ctx.other_ids:
            return name[:pos]
    return None


def read_confined(reader: SquashfsReader, path: str, cap: int) -> bytes:
    """A regular file of the payload, following only symlinks that stay inside it."""
    try:
        inode = resolve(reader, path, confined=True)
    except PathError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("too many levels of symbolic links") from None
        if exc.errno == errno.EXDEV:
            raise Refused(exc.strerror) from None
        raise Refused("not found in the image (or a parent is not a directory)") from None
    if not inode.is_file():
        raise Refused(f"not a regular file ({inode.kind})")
    if inode.size > cap:
        raise Refused(f"file is {inode.size} bytes (limit {cap})")
    return reader.read(inode, 0, inode.size)


def command_for(program: str, manifest: Mapping[str, Any]) -> str | None:
    """Which command of the app an Exec program names: None for the entry point."""
    path = program.lstrip("/")
    base = path.rsplit("/", 1)[-1]
    entry = manifest["entrypoint"]
    if path == entry or base == entry.rsplit("/", 1)[-1] or program == manifest["id"]:
        return None
    for name, target in sorted(manifest.get("commands", {}).items()):
        if base == name or path == target or base == target.rsplit("/", 1)[-1]:
            return name
    raise Refused(
        f"Exec program {program!r} is neither the app's entry point nor one of its commands"
    )


def rewrite_exec(raw: str, manifest: Mapping[str, Any], ctx: Context, *,
                 field_codes: bool = True) -> str:  # fmt: skip
    """``Exec`` (raw key file value) -> ``LAUNCHER run ID [--command NAME] -- ARGS`` (raw)."""
    args = exec_line.split_exec(keyfile.unescape(raw), field_codes=field_codes)
    args = exec_line.drop_deprecated(args)
    if not args:
        raise Refused("Exec has no program")
    codes = [c for a in args if not a.quoted for c in _FILE_CODES if c in a.text.replace("%%", "")]
    if len(codes) > 1:
        raise Refused(f"Exec: more than one of %f %F %u %U ({' '.join(codes)})")
    program = args[0]
    if "%" in program.text.replace("%%", ""):
        raise Refused("Exec: the program must not be a field code")
    command = command_for(program.literal(), manifest)
    parts = [exec_line.literal_arg(ctx.launcher), "run", exec_line.literal_arg(ctx.app_id)]
    if command is not None:
        parts += ["--command", exec_line.literal_arg(command)]
    parts.append("--")
    if len(args) > 1:
        parts.append(exec_line.join(args[1:]))
    return keyfile.escape(" ".join(parts))


def _default_exec(ctx: Context) -> str:
    return keyfile.escape(
        f"{exec_line.literal_arg(ctx.launcher)} run {exec_line.literal_arg(ctx.app_id)} --"
    )


def _check_localised(group: keyfile.Group) -> None:
    """Icon and its ``Icon[xx]`` variants are icon names; localised Exec/TryExec/Path go,
    and so do ``X-Appimg-*`` and the other dropped keys, localised or not.

    Exec, TryExec and Path are ``string`` keys in the Desktop Entry Specification, yet
    KDE reads ``Exec[xx]``, and GLib reads ``Icon`` as a localestring (``Icon[C]`` is what
    it shows under LANG=C): every variant a desktop may read must obey the rules of the
    unlocalised key. The same holds in every group (actions and ``X-`` groups too).
    A variant of a key the group lacks is removed (desktop-file-validate refuses it), and
    so are Exec, TryExec and Path in ``X-`` groups, which nothing rewrites."""
    for key, raw in list(group.entries):
        base, _, locale = key.partition("[")
        if locale and group.get(base) is None:
            group.remove(key)  # a variant of nothing (desktop-file-validate: an error)
        elif group.name.startswith("X-") and base in _PROGRAM_KEYS:
            group.remove(key)
        elif base == "Icon":
            value = keyfile.unescape(raw)
            if not _ICON_NAME.match(value) or value in (".", ".."):
                raise Refused(f"[{group.name}] {key} {value!r} must be an icon name, not a path")
        elif (
            (locale and base not in _LOCALISED_KEYS and not base.startswith("X-"))
            or base.startswith("X-Appimg-")
            or (base in _DROPPED_KEYS)
        ):
            group.remove(key)


def rewrite_desktop(data: bytes, manifest: Mapping[str, Any], ctx: Context,
                    dbus_names: Collection[str], stem: str,
                    notes: list[str] | None = None) -> bytes:  # fmt: skip
    kf = keyfile.parse_keyfile(data)
    main = kf.groups[0]
    if main.name != "Desktop Entry":
        raise Refused("the first group is not [Desktop Entry]")
    kind = main.get("Type")
    if kind is None or keyfile.unescape(kind) != "Application":
        raise Refused("Type is not Application")
    if main.get("Name") is None:
        raise Refused("no Name key")
    for group in kf.groups:
        if group is not main and not group.name.startswith(("Desktop Action ", "X-")):
            raise Refused(f"unexpected group [{group.name}]")
        _check_localised(group)
        if group.name.startswith("X-"):
            continue
        raw = group.get("Exec")
        if raw is None:
            if group is not main:
                raise Refused(f"[{group.name}] has no Exec")
            group.set("Exec", _default_exec(ctx))
        else:
            try:
                group.set("Exec", rewrite_exec(raw, manifest, ctx))
            except Refused as exc:
                raise Refused(f"[{group.name}] {exc}") from None
        if group.get("TryExec") is not None:
            group.set("TryExec", keyfile.escape(ctx.launcher))
        # A working directory on the host means nothing inside the app's view.
        group.remove("Path")
    activatable = main.get("DBusActivatable")
    if activatable is not None and not (keyfile.boolean(activatable) and stem in dbus_names):
        # Without our rewritten D-Bus service the bus would start nothing: launch by Exec.
        # (Also drops a value that is not a boolean: desktop-file-validate refuses it.)
        main.remove("DBusActivatable")
    mime_types = main.get("MimeType")
    if mime_types is not None:
        # Declaring what it opens is the app's right; the web, the file manager and other
        # apps' types are not (the exports come first on the search path, so a claim
        # there could make it the default); only the user sets defaults (mimeapps.list).
        value, removed = mime_rules.filter_mime_types(keyfile.unescape(mime_types),
                                                      ctx.other_types)  # fmt: skip
        if removed and notes is not None:
            notes.append(f"{stem}.desktop: removed from MimeType: {', '.join(removed)}")
        if value:
            main.set("MimeType", keyfile.escape(value))
        else:
            main.remove("MimeType")
    main.set("X-Appimg-Id", keyfile.escape(ctx.app_id))
    main.set("X-Appimg-Version", keyfile.escape(ctx.version))
    main.set("X-Appimg-Image", keyfile.escape(ctx.image_path))
    return kf.dump()


def own_names(manifest: Mapping[str, Any]) -> list[str]:
    """The bus names the manifest's ``permissions.own`` grants (``NAME`` or ``PREFIX.*``),
    read as ``appimg run`` reads them: what an image may not ask for grants nothing."""
    from appimg.format.permissions import of_manifest

    return sorted(of_manifest(dict(manifest)).own)


def may_own(manifest: Mapping[str, Any], name: str) -> bool:
    """The app may own the bus ``name``: always its id and ``ID.*``, and what ``own`` lists."""
    app_id = manifest["id"]
    if name == app_id or name.startswith(app_id + "."):
        return True
    for entry in own_names(manifest):
        if entry == name or (entry.endswith(".*") and name.startswith(entry[:-1])):
            return True
    return False


#: Keys of a session service file that are kept: the rest would start or run something
#: outside `appimg run` (SystemdService: a host unit instead of Exec; AssumedAppArmorLabel:
#: another confinement) or mean nothing to the session bus.
_DBUS_KEYS = ("Name", "Exec")


def rewrite_dbus(data: bytes, manifest: Mapping[str, Any], ctx: Context, stem: str,
                 notes: list[str] | None = None) -> bytes:  # fmt: skip
    kf = keyfile.parse_keyfile(data)
    if len(kf.groups) != 1 or kf.groups[0].name != "D-BUS Service":
        raise Refused("a D-Bus service file has exactly one group, [D-BUS Service]")
    group = kf.groups[0]
    name = group.get("Name")
    if name is None or keyfile.unescape(name) != stem:
        raise Refused(f"Name must be {stem!r}, the file's name")
    if group.get("User") is not None:
        raise Refused("User= is for system services (it would run the app as another user)")
    if stem.startswith("org.freedesktop."):
        # The names of the freedesktop.org interfaces (Notifications, secrets, portal…):
        # the exports come first on the bus's search path, so the app would be started
        # in place of the host's service, and be handed every caller's data.
        raise Refused("org.freedesktop.* bus names belong to the host's standard services")
    if stem != ctx.app_id and not stem.startswith(ctx.app_id + "."):
        raise Refused(f"the bus name must be the app id {ctx.app_id} or below it (ID.Name)")
    if not may_own(manifest, stem):
        raise Refused(f"the app may not own the bus name {stem}")
    raw = group.get("Exec")
    if raw is None:
        raise Refused("no Exec key")
    group.set("Exec", rewrite_exec(raw, manifest, ctx, field_codes=False))
    dropped = [key for key, _ in group.entries if key not in _DBUS_KEYS]
    for key in dropped:
        group.remove(key)
    if dropped and notes is not None:
        notes.append(f"{stem}.service: removed {', '.join(dropped)} (only Name and Exec "
                     "are kept: the service starts through appimg run)")  # fmt: skip
    return kf.dump()


_OBJECT_PATH = re.compile(r"/\Z|(/[A-Za-z0-9_]+)+\Z")


def _provider_bus_name(raw: str | None, key: str, manifest: Mapping[str, Any],
                       *, pattern: bool = False) -> str:  # fmt: skip
    """The bus name a search provider is reached at: one the app may own (§3.3's rule),
    never the host's ``org.freedesktop.*``; ``pattern`` allows KRunner's ``PREFIX.*``."""
    from appimg.format.permissions import parse_bus_name

    if raw is None:
        raise Refused(f"no {key} key")
    name = keyfile.unescape(raw)
    try:
        parse_bus_name(name, key)
    except FormatError as exc:
        raise Refused(str(exc)) from None
    if name.endswith(".*") and not pattern:
        raise Refused(f"{key}: {name!r} must be one bus name, not a pattern")
    if name.startswith("org.freedesktop.") or not may_own(manifest, name):
        raise Refused(f"{key}: the app may not own the bus name {name}")
    return name


def _object_path(raw: str | None, key: str) -> None:
    if raw is None:
        raise Refused(f"no {key} key")
    if not _OBJECT_PATH.match(keyfile.unescape(raw)):
        raise Refused(f"{key}: {keyfile.unescape(raw)!r} is not a D-Bus object path")


#: Keys of ``[Shell Search Provider]`` GNOME Shell reads; the rest is removed.
_GNOME_PROVIDER_KEYS = ("DesktopId", "BusName", "ObjectPath", "Version", "DefaultDisabled")


def rewrite_gnome_provider(data: bytes, manifest: Mapping[str, Any], ctx: Context,
                           exported: Collection[str], name: str,
                           notes: list[str] | None = None) -> bytes:  # fmt: skip
    """A GNOME Shell search provider: the shell lists its results under ``DesktopId`` and
    sends it every query typed in the overview, over the bus at ``BusName``."""
    kf = keyfile.parse_keyfile(data)
    if len(kf.groups) != 1 or kf.groups[0].name != "Shell Search Provider":
        raise Refused("a search provider has exactly one group, [Shell Search Provider]")
    group = kf.groups[0]
    raw = group.get("DesktopId")
    if raw is None:
        raise Refused("no DesktopId key")
    desktop_id = keyfile.unescape(raw)
    if not (desktop_id.endswith(".desktop") and owned_name(desktop_id, ctx.app_id)):
        raise Refused(f"DesktopId {desktop_id!r} is not the app's own desktop entry "
                      f"({ctx.app_id}.desktop or {ctx.app_id}.NAME.desktop)")  # fmt: skip
    if f"applications/{desktop_id}" not in exported:
        raise Refused(f"DesktopId {desktop_id}: the image exports no such desktop entry")
    _provider_bus_name(group.get("BusName"), "BusName", manifest)
    _object_path(group.get("ObjectPath"), "ObjectPath")
    version = group.get("Version")
    if version is None or not version.isdigit():
        raise Refused("Version must be a number (GNOME Shell reads version 2)")
    dropped = [key for key, _ in group.entries if key not in _GNOME_PROVIDER_KEYS]
    for key in dropped:
        group.remove(key)
    if dropped and notes is not None:
        notes.append(f"{name}: removed {', '.join(dropped)} "
                     f"(only {', '.join(_GNOME_PROVIDER_KEYS)} are kept)")  # fmt: skip
    return kf.dump()


#: Keys of a KRunner D-Bus plugin that are kept (with their localised variants): the rest
#: (an Exec, a library to load, KDE's run-as-another-user keys) is removed.
_KRUNNER_KEYS = frozenset({"Name", "GenericName", "Comment", "Keywords", "Icon", "Type",
                           "X-KDE-ServiceTypes", "X-Plasma-API",
                           "X-Plasma-API-Minimum-Version"})  # fmt: skip
_KRUNNER_PREFIXES = ("X-KDE-PluginInfo-", "X-Plasma-DBusRunner-", "X-Plasma-Runner-")


def rewrite_krunner_plugin(data: bytes, manifest: Mapping[str, Any], name: str,
                           notes: list[str] | None = None) -> bytes:  # fmt: skip
    """A KRunner D-Bus plugin: KRunner sends every query typed to the service named by
    ``X-Plasma-DBusRunner-Service`` (``PREFIX.*``: every instance below it)."""
    kf = keyfile.parse_keyfile(data)
    if len(kf.groups) != 1 or kf.groups[0].name != "Desktop Entry":
        raise Refused("a KRunner plugin has exactly one group, [Desktop Entry]")
    group = kf.groups[0]
    if group.get("Name") is None:
        raise Refused("no Name key")
    api = group.get("X-Plasma-API")
    if api is not None and keyfile.unescape(api) != "DBus":
        raise Refused("X-Plasma-API must be DBus (KRunner loads nothing else from here)")
    _provider_bus_name(group.get("X-Plasma-DBusRunner-Service"), "X-Plasma-DBusRunner-Service",
                       manifest, pattern=True)  # fmt: skip
    _object_path(group.get("X-Plasma-DBusRunner-Path"), "X-Plasma-DBusRunner-Path")
    _check_localised(group)  # Icon is a name; X-Appimg-* and KDE's run-as keys go
    dropped = []
    for key, _ in list(group.entries):
        base = key.partition("[")[0]
        if base not in _KRUNNER_KEYS and not base.startswith(_KRUNNER_PREFIXES):
            group.remove(key)
            dropped.append(key)
    if dropped and notes is not None:
        notes.append(f"{name}: removed {', '.join(dropped)} (a KRunner D-Bus plugin "
                     "keeps its name, icon, X-KDE-PluginInfo-* and X-Plasma-* keys)")  # fmt: skip
    return kf.dump()


def _check_mime(data: bytes, ctx: Context) -> list[str]:
    return mime_rules.check_package(
        data, ctx.app_id, host_types=ctx.host_types, host_globs=ctx.host_globs,
        host_xml_roots=ctx.host_xml_roots, others=ctx.other_types, other_globs=ctx.other_globs,
        other_ids=ctx.other_ids,
    )  # fmt: skip


def _declared_types(data: bytes) -> set[str]:
    """``MimeType`` of a rendered desktop entry."""
    raw = keyfile.parse_keyfile(data).groups[0].get("MimeType")
    return {t for t in keyfile.unescape(raw).split(";") if t} if raw is not None else set()


def _rel(payload_path: str) -> str:
    return payload_path[len("share/") :]


def _check_kind(kind: str, path: str) -> tuple[str, int]:
    """The name of a non-icon export and its size cap, if it sits where its kind belongs."""
    for prefix, suffix, cap in KIND_RULES[kind]:
        name = path[len(prefix) :]
        if path.startswith(prefix) and "/" not in name and name.endswith(suffix):
            return name, cap
    where = " or ".join(f"{p}*{s}" for p, s, _ in KIND_RULES[kind])
    raise Refused(f"{kind} exports must be {where}")


def plan_exports(reader: SquashfsReader, manifest: Mapping[str, Any], ctx: Context) -> ExportPlan:
    """Every export of the manifest, either rendered (``files``) or refused with a reason."""
    plan = ExportPlan()
    exports: Mapping[str, list[str]] = manifest.get("exports", {})
    total = 0
    dbus_names: set[str] = set()
    # D-Bus services first: a desktop entry keeps DBusActivatable only if its service is
    # exported; desktop entries before search providers, whose DesktopId must be exported.
    order = ("dbus", "desktop", "search-providers", "icons", "metainfo", "mime")
    for kind in order:
        for path in exports.get(kind, []):
            notes: list[str] = []
            defined: list[str] = []
            try:
                rel = _rel(path) if path.startswith("share/") else path
                name = path.rsplit("/", 1)[-1]
                if not owned_name(name, ctx.app_id):
                    raise Refused(f"the file name does not start with the app id {ctx.app_id}")
                owner = _owner_conflict(name, ctx)
                if owner:
                    raise Refused(f"the name belongs to the installed app {owner}")
                if rel in ctx.taken:
                    raise Refused(f"already exported by {ctx.taken[rel]}")
                if rel in plan.files or rel in plan.search_providers:
                    raise Refused("listed twice")
                if len(plan.files) + len(plan.search_providers) >= MAX_EXPORT_FILES:
                    raise Refused(f"more than {MAX_EXPORT_FILES} exported files")
                if kind == "icons":
                    data = read_confined(reader, path, MAX_ICON_READ)
                    check_icon(path, data)
                else:
                    name, cap = _check_kind(kind, path)
                    data = read_confined(reader, path, cap)
                    stem = name.rsplit(".", 1)[0]
                    if kind == "desktop":
                        data = rewrite_desktop(data, manifest, ctx, dbus_names, stem, notes)
                    elif kind == "dbus":
                        data = rewrite_dbus(data, manifest, ctx, stem, notes)
                        dbus_names.add(stem)
                    elif kind == "search-providers" and name.endswith(".ini"):
                        data = rewrite_gnome_provider(data, manifest, ctx, plan.files, name,
                                                      notes)  # fmt: skip
                    elif kind == "search-providers":
                        data = rewrite_krunner_plugin(data, manifest, name, notes)
                    else:
                        root = root_element(data)
                        if root not in _DESKTOP_ROOTS[kind]:
                            raise Refused(f"root element <{root}> is not "
                                          f"<{'> or <'.join(_DESKTOP_ROOTS[kind])}>")  # fmt: skip
                        if kind == "mime":
                            defined = _check_mime(data, ctx)
                if total + len(data) > MAX_EXPORT_BYTES:
                    raise Refused(f"exports exceed {MAX_EXPORT_BYTES} bytes in all")
            except Refused as exc:
                plan.refused.append({"path": path, "reason": str(exc)})
                continue
            if kind == "desktop":
                plan.opens |= _declared_types(data)
            elif kind == "mime":
                plan.defines.update(defined)
            plan.notes += notes
            total += len(data)
            plan.sources[rel] = path
            if kind == "search-providers":
                plan.search_providers[rel] = data  # held back: the store decides
            else:
                plan.files[rel] = data
    return plan


def _printable(name: str) -> bool:
    return name.isprintable() and "/" not in name and name not in ("", ".", "..")


def scan_xdg_files(reader: SquashfsReader) -> tuple[dict[str, str], bool]:
    """``({rel under share/: payload path}, truncated)`` for the XDG data directories."""
    found: dict[str, str] = {}
    for sub in XDG_DIRS:
        try:
            top = reader.lookup("share/" + sub)
        except PathError:
            continue
        if not top.is_dir():
            continue
        stack: list[tuple[str, Inode, int]] = [(sub, top, 0)]
        while stack:
            rel_dir, inode, depth = stack.pop()
            for name, child in reader.iterdir(inode):
                if not _printable(name):
                    continue
                rel = f"{rel_dir}/{name}"
                if child.is_dir():
                    if depth < MAX_XDG_DEPTH:
                        stack.append((rel, child, depth + 1))
                elif child.is_file() or child.is_symlink():
                    if len(found) >= MAX_XDG_FILES:
                        return dict(sorted(found.items())), True
                    found[rel] = "share/" + rel
    return dict(sorted(found.items())), False
