"""``appimg init DIR --from SOURCE``: an app directory from an existing program
(spec/manifest.md §7 Starting from an existing program).

SOURCE is a Debian package (unpacked with ``dpkg-deb``, its control file read
for the name and version), a type 2 AppImage (its SquashFS filesystem read by
:mod:`.appimage`, never run; ``AppRun`` the entry point, the desktop file at its
root the main entry, ``APPDIR`` set to the image's root) or a directory holding
an installed tree (a ``make install DESTDIR=...`` result: ``usr/bin``,
``usr/share/...``, or a prefix such as ``opt/foo``). The tree is copied into DIR
as it is, and an ``appimg.toml`` is written that packs and runs without edits:

* the id, entry point, profile and permissions are guessed from the package's
  AppStream metainfo, desktop entries and the entry point's ELF headers;
* desktop entries, icons, metainfo and D-Bus services are copied under
  ``share/`` renamed to the app id, as flatpak-builder's ``rename-desktop-file``
  and ``rename-icon`` do (``Icon=`` follows the rename); each is checked with
  the rules ``appimg install`` applies, and one that would be refused is left
  out, with the reason.

Every decision is returned with the reason for it, for the summary the CLI
prints. Nothing is written outside DIR: a package's members are checked one by
one before they are written, an AppImage's filesystem goes through appimg's own
safe extractor, and the tree is read only through :mod:`.tree`, which never
follows a link out of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appimg.errors import AppimgError, FormatError, ToolError, UsageError
from appimg.format.manifest import AUTHORING_FILE, compile_manifest, validate_app_id
from appimg.services.authoring import appimage, elf, tree
from appimg.services.exports import Refused, exec_line, keyfile
from appimg.services.exports.icons import HICOLOR_SIZES, check_icon, png_size
from appimg.services.exports.plan import Context, owned_name, rewrite_desktop
from appimg.services.exports.xmlcheck import root_element

#: dpkg-deb's answer about a handful of control fields: anything longer is hostile.
MAX_CONTROL_BYTES = 64 << 10
MAX_DESKTOP_BYTES = 64 << 10
MAX_DATA_BYTES = 1 << 20
DPKG_TIMEOUT = 120
#: Where programs live in an installed tree, most likely first (any other */bin follows).
BIN_DIRS = ("usr/bin", "usr/local/bin", "bin", "usr/games", "usr/local/games", "usr/sbin")
#: DT_NEEDED prefix -> what the library talks to (spec/manifest.md §7.2).
TOOLKITS = ("libgtk-3.so", "libgtk-4.so", "libgdk-3.so", "libQt5Gui.so", "libQt6Gui.so")
SOCKET_LIBS = {
    "libX11.so": "x11", "libxcb.so": "x11", "libwayland-client.so": "wayland",
    "libpulse.so": "pulseaudio", "libpulse-simple.so": "pulseaudio",
    "libpipewire-0.3.so": "pipewire",
}  # fmt: skip
DRI_LIBS = ("libdrm.so", "libGL.so", "libGLX.so", "libEGL.so", "libOpenGL.so", "libvulkan.so",
            "libGLESv2.so", "libgbm.so")  # fmt: skip


@dataclass
class Decision:
    key: str  # what was decided: id, entrypoint, profile, permissions, exports, ...
    value: Any
    why: str


@dataclass
class InitResult:
    directory: Path
    manifest: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class _Entry:
    rel: str  # path of the desktop entry in the tree
    stem: str
    data: keyfile.KeyFile
    program: str | None = None  # path of the program it launches in the tree
    named: str | None = None  # path of its Exec program in the tree (an AppImage's
    # entries launch AppRun, whatever their Exec names)
    icon: str | None = None


def _soname_matches(needed: str, prefixes: tuple[str, ...] | dict[str, str]) -> str | None:
    for prefix in prefixes:
        if needed == prefix or needed.startswith(prefix + "."):
            return prefix
    return None


def permissions_for(needed: tuple[str, ...]) -> tuple[dict[str, list[str]], list[str]]:
    """``[permissions]`` from the libraries a program links, and why each is there."""
    sockets: dict[str, str] = {}
    devices: dict[str, str] = {}
    for lib in needed:
        if _soname_matches(lib, TOOLKITS):
            sockets.setdefault("wayland", lib)
            sockets.setdefault("fallback-x11", lib)
        elif (prefix := _soname_matches(lib, SOCKET_LIBS)) is not None:
            sockets.setdefault(SOCKET_LIBS[prefix], lib)
        elif _soname_matches(lib, DRI_LIBS):
            devices.setdefault("dri", lib)
    if "fallback-x11" in sockets:  # the toolkit speaks Wayland and falls back to X11
        sockets.pop("x11", None)
    table = {"sockets": sorted(sockets), "devices": sorted(devices)}
    why = [f"{name}: links {lib}" for name, lib in sorted({**sockets, **devices}.items())]
    return {k: v for k, v in table.items() if v}, why


# --- the source -----------------------------------------------------------------------


def _check_target(target: Path) -> bool:
    """Whether DIR must be created; refuse one that exists and is not empty."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UsageError(f"{target}: exists and is not a directory")
    if target.exists():
        if any(target.iterdir()):
            raise UsageError(f"{target}: exists and is not empty")
        return False
    return True


def _run_dpkg(args: list[str], cap: int) -> bytes:
    try:
        proc = subprocess.Popen(["dpkg-deb", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    except FileNotFoundError:
        raise ToolError("dpkg-deb not found (install the dpkg package)") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = proc.stdout.read(cap + 1)
        if len(out) > cap:
            proc.kill()
            raise UsageError(f"{args[-1]}: the package's control fields exceed {cap} bytes")
        err = proc.stderr.read(4096)
        proc.wait(timeout=DPKG_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines() or ["failed"]
        raise UsageError(f"not a readable Debian package: {lines[-1]}")
    return out


def read_control(deb: Path) -> dict[str, str]:
    """The fields of a ``.deb``'s control file that naming needs (``dpkg-deb -f``)."""
    wanted = ["Package", "Version", "Description", "Architecture", "Homepage"]
    text = _run_dpkg(["-f", "--", str(deb), *wanted], MAX_CONTROL_BYTES).decode("utf-8", "replace")
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            continue  # continuation lines (the long description): not needed
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if not fields.get("Package"):
        raise UsageError(f"{deb}: not a Debian package (no Package field)")
    return fields


def _member_path(target: Path, name: str, what: str) -> tuple[Path, str]:
    """Where a member's name puts it under ``target``: no absolute name, no ``..``, and no
    directory on the way that is a symbolic link (written by an earlier member)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") and not name.startswith("./"):
        raise UsageError(f"refused a hostile {what}: absolute name {name!r}")
    if ".." in parts:
        raise UsageError(f"refused a hostile {what}: {name!r} leaves the package's root")
    if not parts:
        return target, ""
    folder = target
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise UsageError(f"refused a hostile {what}: {name!r} goes through a link")
    return target.joinpath(*parts), "/".join(parts)


def _extract(archive: tarfile.TarFile, target: Path) -> None:
    """Write the members of a package's data archive under ``target``, each checked first:
    only directories, regular files, symbolic and hard links, all inside ``target``; no
    owner or set-id bit is kept (the image runs as the user anyway)."""
    folders: list[tuple[Path, int]] = []
    for member in archive:
        dest, rel = _member_path(target, member.name, "member")
        if not rel:
            continue
        if member.isdir():
            dest.mkdir(parents=True, exist_ok=True)
            folders.append((dest, member.mode))
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            raise UsageError(f"refused a hostile member: {rel!r} is there twice")
        if member.issym():
            dest.symlink_to(member.linkname)  # read later only through tree.resolve()
        elif member.islnk():
            source, _ = _member_path(target, member.linkname, "hard link")
            if source.is_symlink() or not source.is_file():
                raise UsageError(f"refused a hostile member: hard link {rel!r} to a non-file")
            dest.hardlink_to(source)
        elif member.isreg():
            data = archive.extractfile(member)
            assert data is not None
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out)
            os.chmod(dest, member.mode & 0o755)
        else:
            raise UsageError(f"refused a member that is not a file, directory or link: {rel!r}")
    for folder, mode in reversed(folders):
        os.chmod(folder, (mode & 0o755) | 0o700)


def unpack_deb(deb: Path, target: Path) -> None:
    """Unpack the data of a ``.deb`` into ``target``, refusing hostile members.

    ``dpkg-deb --fsys-tarfile`` reads the package; the members are written here, not by
    ``dpkg-deb -x``, so that each one is checked before anything is written."""
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", "--", str(deb)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    except FileNotFoundError:
        raise ToolError("dpkg-deb not found (install the dpkg package)") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as archive:
            _extract(archive, target)
    except UsageError as exc:
        raise UsageError(f"{deb}: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise UsageError(f"{deb}: cannot unpack: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{deb}: cannot unpack: {exc.strerror}") from None
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0:
        err = proc.stderr.read(4096).decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"{deb}: dpkg-deb failed: {err[-1] if err else proc.returncode}")


def copy_tree(source: Path, target: Path, notes: list[str]) -> None:
    """Copy an installed tree as it is: links stay links, special files are left out."""
    src, dst = source.resolve(), target.resolve()
    if dst.is_relative_to(src) or src.is_relative_to(dst):
        raise UsageError(f"{target}: must not be inside {source} (or hold it)")

    def skip(folder: str, names: list[str]) -> list[str]:
        left = []
        for name in names:
            path = Path(folder, name)
            if not (path.is_symlink() or path.is_file() or path.is_dir()):
                left.append(name)
                notes.append(f"left out {path}: not a regular file, directory or link")
        return left

    try:
        shutil.copytree(source, target, symlinks=True, ignore=skip, dirs_exist_ok=True)
    except shutil.Error as exc:
        first = exc.args[0][0] if exc.args and exc.args[0] else exc
        raise UsageError(f"{source}: cannot copy: {first}") from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or source}: {exc.strerror}") from None


def _launch_apprun(entry: _Entry, entrypoint: str) -> None:
    """Point every ``Exec`` of an AppImage's desktop file at its entry point: the AppImage
    runs AppRun whatever program the file names (appimaged rewrites them the same way)."""
    for group in entry.data.groups:
        raw = group.get("Exec")
        if raw is None or not (group.name == "Desktop Entry" or
                               group.name.startswith("Desktop Action ")):  # fmt: skip
            continue
        args = exec_line.split_exec(keyfile.unescape(raw))
        if args:
            line = " ".join([exec_line.literal_arg(entrypoint), exec_line.join(args[1:])])
            group.set("Exec", keyfile.escape(line.rstrip()))


def _apprun(target: Path, source: Path) -> str:
    """An AppImage's entry point: ``AppRun``, or the program it links to."""
    real = tree.resolve(target, "AppRun")
    if real is None or not real.is_file() or not real.stat().st_mode & 0o111:
        raise UsageError(f"{source}: refused: no executable AppRun at the AppImage's root")
    rel = real.relative_to(target).as_posix()
    return rel if (target / "AppRun").is_symlink() else "AppRun"


# --- what the tree holds ----------------------------------------------------------------


def _bin_dirs(files: list[str]) -> list[str]:
    found = {rel.rsplit("/", 1)[0] for rel in files if "/" in rel}
    extra = sorted(d for d in found if d.rsplit("/", 1)[-1] == "bin" and d not in BIN_DIRS)
    return [d for d in BIN_DIRS if d in found] + extra


def _programs(root: Path, files: list[str], bins: list[str]) -> list[str]:
    out = []
    for rel in files:
        folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
        path = tree.resolve(root, rel)
        if folder in bins and path is not None and path.is_file() and path.stat().st_mode & 0o111:
            out.append(rel)
    return out


def _find_program(root: Path, program: str, bins: list[str]) -> str | None:
    if "/" in program:
        rel = program.lstrip("/")
        path = tree.resolve(root, rel)
        return rel if path is not None and path.is_file() else None
    for folder in bins:
        path = tree.resolve(root, f"{folder}/{program}")
        if path is not None and path.is_file():
            return f"{folder}/{program}"
    return None


def _desktop_entries(root: Path, files: list[str], bins: list[str], notes: list[str],
                     launcher: str | None = None) -> list[_Entry]:  # fmt: skip
    """The visible application entries of the tree; with ``launcher`` (an AppImage's
    entry point), the ones at its root, each launching ``launcher``."""
    entries = []
    for rel in files:
        if launcher is not None:
            if "/" in rel or not rel.endswith(".desktop"):
                continue
        elif "share/applications/" not in rel or not rel.endswith(".desktop"):
            continue
        data = tree.read(root, rel, MAX_DESKTOP_BYTES)
        if data is None:
            notes.append(f"{rel}: not a readable file inside the tree, left out")
            continue
        try:
            kf = keyfile.parse_keyfile(data)
        except Refused as exc:
            notes.append(f"{rel}: {exc}; left out")
            continue
        main = kf.groups[0] if kf.groups else None
        if main is None or main.name != "Desktop Entry":
            notes.append(f"{rel}: no [Desktop Entry] group; left out")
            continue
        kind, hidden = main.get("Type"), main.get("Hidden")
        if kind is None or keyfile.unescape(kind) != "Application" or keyfile.boolean(hidden):
            notes.append(f"{rel}: not a visible application entry; left out")
            continue
        entry = _Entry(rel, rel.rsplit("/", 1)[-1][: -len(".desktop")], kf)
        raw = main.get("Exec")
        try:
            args = exec_line.split_exec(keyfile.unescape(raw)) if raw is not None else []
        except Refused as exc:
            notes.append(f"{rel}: {exc}; left out")
            continue
        if args:
            entry.named = _find_program(root, args[0].literal(), bins)
        entry.program = launcher or entry.named
        if entry.program is None:
            notes.append(f"{rel}: its Exec program is not in the tree; left out")
            continue
        icon = main.get("Icon")
        entry.icon = keyfile.unescape(icon) if icon is not None else None
        entries.append(entry)
    return entries


def _metainfo(root: Path, files: list[str]) -> list[tuple[str, bytes, str | None, str | None]]:
    """``(rel, bytes, <id>, desktop-id launchable)`` of each AppStream file of the tree."""
    out = []
    for rel in files:
        if not re.search(r"(^|/)share/(metainfo|appdata)/[^/]+\.xml\Z", rel):
            continue
        data = tree.read(root, rel, MAX_DATA_BYTES)
        if data is None:
            continue
        try:
            if root_element(data) not in ("component", "application"):
                continue
        except Refused:
            continue
        text = data.decode("utf-8", "replace")
        ident = re.search(r"<id(?:\s[^>]*)?>\s*([^<\s]+)\s*</id>", text)
        launch = re.search(r'<launchable\s+type="desktop-id"\s*>\s*([^<\s]+)\s*</launchable>', text)
        out.append((rel, data, ident and ident.group(1), launch and launch.group(1)))
    return out


def _derived_id(stem: str) -> str:
    last = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "app"
    if not re.match(r"[A-Za-z_]", last):
        last = "_" + last
    return f"local.appimg.{last}"


def _valid_id(candidate: str | None) -> bool:
    if not candidate:
        return False
    try:
        validate_app_id(candidate)
    except FormatError:
        return False
    return True


# --- writing ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _render_toml(manifest: dict[str, Any], header: list[str]) -> str:
    lines = [f"# {line}" for line in header] + [""]
    for key in ("id", "name", "version", "summary", "homepage", "entrypoint", "profile"):
        if key in manifest:
            lines.append(f"{key} = {_toml_value(manifest[key])}")
    for table in ("commands", "env", "permissions", "exports"):
        if manifest.get(table):
            lines += ["", f"[{table}]"]
            for key, value in manifest[table].items():
                name = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
                if isinstance(value, list) and len(value) > 1:  # one entry a line: diffable
                    items = "".join(f"    {_toml_value(v)},\n" for v in value)
                    lines.append(f"{name} = [\n{items}]")
                else:
                    lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _write(target: Path, rel: str, data: bytes) -> None:
    path = target / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def init_from(target: Path, source: Path, *, app_id: str | None = None,
              name: str | None = None, version: str | None = None) -> InitResult:  # fmt: skip
    """Write ``target`` from ``source`` (a ``.deb``, an AppImage or a directory); see the
    module doc."""
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if app_id is not None:
        try:
            validate_app_id(app_id)
        except FormatError as exc:
            raise UsageError(f"--id: {exc}") from None
    is_deb, image = False, None
    if source.is_file():
        with source.open("rb") as f:
            magic = f.read(8)
        is_deb = magic == b"!<arch>\n"
        if not is_deb and magic[:4] != appimage.ELF_MAGIC:
            raise UsageError(f"{source}: not a Debian package (.deb), an AppImage nor a "
                             "directory")  # fmt: skip
    elif not source.is_dir():
        raise UsageError(f"{source}: not a Debian package (.deb), an AppImage nor a directory")
    created = _check_target(target)
    control = read_control(source) if is_deb else {}
    if source.is_file() and not is_deb:
        image = appimage.probe(source)  # before DIR is made: a refusal leaves nothing
    try:
        target.mkdir(parents=True, exist_ok=True)
        return _init(target, source, control, image, app_id, name, version)
    except BaseException:
        # Leave DIR as it was found: absent, or empty.
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _init(target: Path, source: Path, control: dict[str, str],
          image: appimage.AppImageInfo | None, app_id: str | None,
          name: str | None, version: str | None) -> InitResult:  # fmt: skip
    notes: list[str] = []
    decisions: list[Decision] = []

    def decide(key: str, value: Any, why: str) -> None:
        decisions.append(Decision(key, value, why))

    launcher = None  # an AppImage's entry point
    env: dict[str, str] = {}
    if control:
        unpack_deb(source, target)
        origin = f"package {control['Package']} {control.get('Version', '')}".strip()
    elif image is not None:
        compression = appimage.unpack(source, image, target, notes)
        origin = f"the AppImage {source.name}"
        decide("source", "AppImage", f"type 2, {compression} SquashFS at offset "
                                     f"{image.offset}")  # fmt: skip
        launcher = _apprun(target, source)
    else:
        copy_tree(source, target, notes)
        origin = f"the tree {source}"
    files = [f for f in tree.walk(target) if f != AUTHORING_FILE]
    bins = _bin_dirs(files)
    entries = _desktop_entries(target, files, bins, notes, launcher)
    if launcher is not None:
        found = [rel for rel in files if "/" not in rel and rel.endswith(".desktop")]
        if len(found) != 1:
            raise UsageError(f"{source}: refused: {len(found)} desktop files at the AppImage's "
                             "root (an AppImage has one)")  # fmt: skip
        if not entries:  # the one note _desktop_entries wrote about it says why
            raise UsageError(f"{source}: refused: {notes[-1]}")
    metas = _metainfo(target, files)
    package = control.get("Package", "")

    # The main desktop entry: the metainfo's launchable, else the one that runs a program
    # named like the package, else the first by name.
    def rank(entry: _Entry) -> tuple[int, str]:
        base = (entry.program or "").rsplit("/", 1)[-1]
        if app_id and entry.stem == app_id:
            return (0, entry.rel)
        if any(launch and launch.removesuffix(".desktop") == entry.stem
               for _, _, _, launch in metas):  # fmt: skip
            return (1, entry.rel)
        if package and package in (base, entry.stem):
            return (2, entry.rel)
        return (3, entry.rel)

    entries.sort(key=rank)
    main = entries[0] if entries else None

    # --- id
    meta = None
    if app_id:
        decide("id", app_id, "given with --id")
    else:
        for rel, data, ident, launch in metas:
            candidate = (ident or "").removesuffix(".desktop")
            if _valid_id(candidate):
                app_id, meta = candidate, (rel, data, ident, launch)
                decide("id", app_id, f"the AppStream id in {rel}")
                break
            if ident:
                notes.append(f"{rel}: AppStream id {ident!r} is not a valid app id; not used")
        if app_id is None and main is not None and _valid_id(main.stem):
            app_id = main.stem
            decide("id", app_id, f"the name of the desktop entry {main.rel}")
        elif app_id is None:
            stem = main.stem if main else (package or source.name.split("_")[0])
            app_id = _derived_id(stem)
            decide("id", app_id, f"made from {stem!r}, which is not reverse DNS: "
                                 "choose your own with --id")  # fmt: skip
    if meta is None:
        for item in metas:
            if (item[2] or "").removesuffix(".desktop") == app_id or (
                main and item[3] and item[3].removesuffix(".desktop") == main.stem
            ):
                meta = item
                break

    # --- entry point
    if launcher is not None:
        entrypoint = launcher
        how = "AppRun" if launcher == "AppRun" else f"AppRun, a link to {launcher},"
        decide("entrypoint", entrypoint, f"{how} is what the AppImage runs")
    elif main is not None:
        entrypoint = main.program
        decide("entrypoint", entrypoint, f"the Exec program of {main.rel}")
    else:
        programs = _programs(target, files, bins)
        if len(programs) != 1:
            listed = ", ".join(programs[:5]) + (" ..." if len(programs) > 5 else "")
            raise UsageError(f"{source}: no desktop entry, and {len(programs)} programs "
                             f"({listed or 'none'}): cannot tell which one is the app")  # fmt: skip
        entrypoint = programs[0]
        decide("entrypoint", entrypoint, "the only program in the tree, no desktop entry")
    assert entrypoint is not None

    # --- profile and permissions, from the entry point's ELF headers
    real = tree.resolve(target, entrypoint)
    assert real is not None
    perms: dict[str, list[str]] = {}
    if elf.is_elf(real):
        info = elf.read_elf(real)
        if info.interp:
            profile = "host"
            decide("profile", profile, f"{entrypoint} is dynamically linked (PT_INTERP "
                                       f"{info.interp}): it needs the host's /usr")  # fmt: skip
        else:
            profile = "none"
            decide("profile", profile, f"{entrypoint} is statically linked: it needs nothing")
        perms, why = permissions_for(info.needed)
        decide("permissions", perms, "; ".join(why) or "links none of the display, sound or "
               "GPU libraries")  # fmt: skip
    else:
        profile = "host"
        head = tree.head(target, entrypoint)
        interp = head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        kind = f"a script for {interp}" if head.startswith(b"#!") else "not an ELF program"
        decide("profile", profile, f"{entrypoint} is {kind}: it runs with the host's /usr")
        if launcher is None or main is None or main.named in (None, entrypoint):
            decide("permissions", {}, "not inferred from a script: add them by hand")
    if launcher is not None and main is not None and main.named not in (None, entrypoint):
        # AppRun only sets the scene: what the app talks to is what its program links.
        named = tree.resolve(target, main.named or "")
        if named is not None and elf.is_elf(named):
            info = elf.read_elf(named)
            if info.interp and profile == "none":
                profile = "host"
                decide("profile", profile, f"{main.named} is dynamically linked (PT_INTERP "
                                           f"{info.interp}): it needs the host's /usr")  # fmt: skip
            perms, why = permissions_for(info.needed)
            said = "; ".join(why) or "links none of the display, sound or GPU libraries"
            decide("permissions", perms, f"{main.named}, the program {main.rel} names: {said}")
        else:
            decide("permissions", {}, f"{main.named} is not an ELF program: add them by hand")
    if launcher is not None:
        env["APPDIR"] = "/"
        decide("env", {"APPDIR": "/"}, "AppRun and the app find their files from $APPDIR, "
                                       "the image's root")  # fmt: skip
    decide("network", False, 'never inferred: add share = ["network"] if the app needs it')

    # --- renamed exports
    assert app_id is not None
    exports: dict[str, list[str]] = {}
    commands: dict[str, str] = {}
    icon_names: dict[str, str] = {}  # old icon name -> new
    for index, entry in enumerate(entries):
        if entry.icon and "/" not in entry.icon and entry.icon not in icon_names:
            icon_names[entry.icon] = app_id if index == 0 else f"{app_id}-{entry.icon}"
    exports_icons = _export_icons(target, files, app_id, icon_names, entries, notes,
                                  at_root=launcher is not None)  # fmt: skip
    icons_exported = {key.split("/", 1)[0] for key in exports_icons}
    manifest_stub = {"id": app_id, "entrypoint": entrypoint, "commands": commands}
    ctx = Context(app_id=app_id, version="0", launcher="/usr/bin/appimg",
                  image_path="/dev/null")  # fmt: skip
    for index, entry in enumerate(entries):
        new = app_id if index == 0 else f"{app_id}-{entry.stem}"
        group = entry.data.groups[0]
        if entry.icon is not None:
            renamed = icon_names.get(entry.icon)
            for key, _ in list(group.entries):
                if key.startswith("Icon["):
                    group.remove(key)
            if renamed is not None and renamed in icons_exported:
                group.set("Icon", keyfile.escape(renamed))
            else:
                group.remove("Icon")
                notes.append(f"{entry.rel}: its icon {entry.icon!r} is not in the tree; "
                             "Icon= removed")  # fmt: skip
        if launcher is not None:
            try:
                _launch_apprun(entry, entrypoint)
            except Refused as exc:
                raise UsageError(f"{source}: refused: its desktop file {entry.rel}: "
                                 f"{exc}") from None  # fmt: skip
        if entry.program != entrypoint and entry.program is not None:
            command = entry.program.rsplit("/", 1)[-1]
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", command):
                notes.append(f"{entry.rel}: {command!r} cannot be a command name; left out")
                continue
            commands[command] = entry.program
        data = entry.data.dump()
        try:
            rewrite_desktop(data, manifest_stub, ctx, (), new)
        except Refused as exc:
            if launcher is not None and index == 0:
                raise UsageError(f"{source}: refused: its desktop file {entry.rel}: "
                                 f"{exc}") from None  # fmt: skip
            commands.pop((entry.program or "").rsplit("/", 1)[-1], None)
            notes.append(f"{entry.rel}: appimg install would refuse it ({exc}); left out")
            continue
        rel = f"share/applications/{new}.desktop"
        _write(target, rel, data)
        exports.setdefault("desktop", []).append(rel)
        decide("exports", rel, f"{entry.rel}, renamed to the app id")
    for command, path in commands.items():
        decide("commands", {command: path}, "the Exec program of another desktop entry")
    if exports_icons:
        exports["icons"] = sorted(exports_icons.values())
        decide("exports", f"{len(exports_icons)} icons",
               "the tree's hicolor icons, renamed as Icon= now says")  # fmt: skip
    if meta is not None:
        rel = f"share/metainfo/{app_id}.metainfo.xml"
        text = meta[1].decode("utf-8", "replace")
        if meta[2]:
            text = re.sub(r"(<id(?:\s[^>]*)?>)\s*[^<\s]+\s*(</id>)", rf"\g<1>{app_id}\g<2>",
                          text, count=1)  # fmt: skip
        if main is not None:
            text = re.sub(r'(<launchable\s+type="desktop-id"\s*>)\s*[^<\s]+\s*(</launchable>)',
                          rf"\g<1>{app_id}.desktop\g<2>", text, count=1)  # fmt: skip
        _write(target, rel, text.encode("utf-8"))
        exports["metainfo"] = [rel]
        decide("exports", rel, f"{meta[0]}, its id and launchable renamed")
    for rel in files:
        if re.search(r"(^|/)share/dbus-1/services/[^/]+\.service\Z", rel):
            base = rel.rsplit("/", 1)[-1]
            if rel.startswith("share/"):
                continue  # already where exports live
            if not owned_name(base, app_id):
                notes.append(f"{rel}: its bus name is not under the app id {app_id}; "
                             "not exported")  # fmt: skip
                continue
            data = tree.read(target, rel, MAX_DATA_BYTES)
            if data is not None:
                out = f"share/dbus-1/services/{base}"
                _write(target, out, data)
                exports.setdefault("dbus", []).append(out)
                decide("exports", out, f"the D-Bus service {rel}")

    # --- names
    if name is None:
        raw = main.data.groups[0].get("Name") if main else None
        name = keyfile.unescape(raw) if raw else (package or app_id.rsplit(".", 1)[-1])
        decide("name", name, "the desktop entry's Name" if raw else "the package name")
    else:
        decide("name", name, "given with --name")
    stamped = main.data.groups[0].get("X-AppImage-Version") if main and launcher else None
    if version is None and stamped:
        version = keyfile.unescape(stamped)
        decide("version", version, f"X-AppImage-Version of {main.rel if main else ''}")
    elif version is None:
        version = control.get("Version") or "0.0.0"
        decide("version", version, "the package's Version" if control.get("Version")
               else f"unknown for {'an AppImage' if launcher else 'a tree'}: set it with "
               "--version")  # fmt: skip
    else:
        decide("version", version, "given with --version")

    manifest: dict[str, Any] = {"id": app_id, "name": name, "version": version}
    summary = control.get("Description", "").splitlines()[0] if control.get("Description") else ""
    if summary:
        manifest["summary"] = summary
    if control.get("Homepage"):
        manifest["homepage"] = control["Homepage"]
    manifest.update(entrypoint=entrypoint, profile=profile)
    if commands:
        manifest["commands"] = commands
    if env:
        manifest["env"] = env
    if perms:
        manifest["permissions"] = perms
    manifest["exports"] = exports
    header = [f"Written by `appimg init --from` from {origin}.",
              "Every path is relative to this directory, which becomes the image's root;",
              "spec/manifest.md says what each key means."]  # fmt: skip
    (target / AUTHORING_FILE).write_text(_render_toml(manifest, header))
    try:
        compiled = compile_manifest(target)
    except AppimgError as exc:
        raise FormatError(f"the appimg.toml written for {source} does not compile: {exc}") from None
    if image is not None:
        _report_appimage(image, decide)
    for note in notes:
        decide("note", None, note)
    return InitResult(target, compiled, decisions)


def _report_appimage(image: appimage.AppImageInfo, decide: Callable[[str, Any, str], None]) -> None:
    """What the AppImage's runtime carried, and what becomes of it here."""
    if image.update_info:
        decide("update-info", image.update_info, "the AppImage's .upd_info: appimg does not "
               "update from it; publish new images where your users install them from")  # fmt: skip
    if image.signed:
        key = " and its key (.sig_key)" if image.has_key else ""
        decide("signature", "not kept", f"the AppImage's GPG signature (.sha256_sig){key} "
               "is not an appimg signature and is not trusted: sign the image anew with "
               "appimg sign")  # fmt: skip
    else:
        decide("signature", "none", "the AppImage was not signed: sign the image with appimg sign")


def _export_icons(target: Path, files: list[str], app_id: str, names: dict[str, str],
                  entries: list[_Entry], notes: list[str], *,
                  at_root: bool = False) -> dict[str, str]:  # fmt: skip
    """Copy the icons the desktop entries name into ``share/icons/hicolor``, renamed;
    return ``{"NEW-NAME/SIZE/CONTEXT": payload path}``. ``at_root``: an AppImage's, whose
    root holds ``ICON.png`` or ``ICON.svg`` and ``.DirIcon``."""
    out: dict[str, str] = {}
    for rel in files:
        match = re.search(r"(?:^|/)share/icons/hicolor/([^/]+)/([^/]+)/([^/]+)\Z", rel)
        if not match or rel.startswith("share/"):
            continue
        size, context, file_name = match.groups()
        stem, _, ext = file_name.rpartition(".")
        new = names.get(stem)
        if new is None:
            for old, new_name in names.items():
                if stem.startswith(old + "-"):  # ICON-symbolic follows ICON
                    new = new_name + stem[len(old) :]
                    break
        if new is None:
            continue
        data = tree.read(target, rel, MAX_DATA_BYTES)
        dest = f"share/icons/hicolor/{size}/{context}/{new}.{ext}"
        if data is None or dest in out.values():
            continue
        try:
            check_icon(dest, data)
        except Refused as exc:
            notes.append(f"{rel}: appimg install would refuse it ({exc}); not exported")
            continue
        _write(target, dest, data)
        out[f"{new}/{size}/{context}"] = dest
    # An icon found only in share/pixmaps (or named by an absolute path): placed in hicolor.
    have = {key.split("/", 1)[0] for key in out}
    for entry in entries:
        if not entry.icon:
            continue
        new = names.get(entry.icon) if "/" not in entry.icon else None
        if new is not None and new in have:
            continue
        candidates = [entry.icon.lstrip("/")] if "/" in entry.icon else [
            f"{prefix}share/pixmaps/{entry.icon}{ext}"
            for prefix in ("usr/", "usr/local/", "")
            for ext in (".png", ".svg")
        ]  # fmt: skip
        if at_root and entry is entries[0] and "/" not in entry.icon:
            candidates = [f"{entry.icon}.png", f"{entry.icon}.svg", ".DirIcon", *candidates]
        for rel in candidates:
            data = tree.read(target, rel, MAX_DATA_BYTES)
            if data is None:
                continue
            if new is None:
                new = app_id if entry is entries[0] else f"{app_id}-{entry.stem}"
                names[entry.icon] = new
            try:
                svg = rel.endswith(".svg") or (rel == ".DirIcon" and data[:1] == b"<")
                if svg:  # a .DirIcon says what it is only by its bytes
                    dest = f"share/icons/hicolor/scalable/apps/{new}.svg"
                else:
                    width, height = png_size(data)
                    if width != height or width not in HICOLOR_SIZES:
                        raise Refused(f"{width}x{height} is not a hicolor icon size")
                    dest = f"share/icons/hicolor/{width}x{width}/apps/{new}.png"
                check_icon(dest, data)
            except Refused as exc:
                notes.append(f"{rel}: appimg install would refuse it ({exc}); not exported")
                continue
            _write(target, dest, data)
            out[f"{new}/pixmaps"] = dest
            have.add(new)
            break
    return {key: out[key] for key in sorted(out)} if out else {}
