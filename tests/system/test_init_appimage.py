"""AppImages brought over (spec/manifest.md §7.1): type 2 AppImages built here, as
appimagetool lays them out (an ELF runtime, its section header table, then a
SquashFS of the AppDir; the runtime is a copy of the static busybox, since
nothing runs it), go through ``init --from`` → ``pack`` → ``install`` as a
normal user → listed by GLib with their icon → launched from their desktop
entry under Xvfb, where their window appears. Then the hostile ones: each is
refused with one line, and nothing is written outside DIR.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from ..helpers import appimg, assert_one_line_error
from ..users import appimg_as, user_env
from .test_init_from import init_pack, install_and_launch
from .test_permissions_sockets import home, user, xvfb  # noqa: F401

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("mksquashfs", "objcopy", "cc", "busybox")),
        reason="needs squashfs-tools, binutils, a C compiler and busybox (tools/setup)",
    ),
]
RUNTIME = Path(shutil.which("busybox") or "/bin/busybox")

XHELLO_C = r"""
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
const char *greeting(void);
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--greet") == 0) {
        puts(greeting());
        return 0;
    }
    Display *d = XOpenDisplay(NULL);
    if (!d) return 1;
    Window w = XCreateSimpleWindow(d, DefaultRootWindow(d), 0, 0, 100, 50, 0, 0, 0);
    XClassHint hint = {"aihello", "AIHello"};
    XSetClassHint(d, w, &hint);
    XMapWindow(d, w);
    XFlush(d);
    for (;;) pause();
}
"""
GREET_C = 'const char *greeting(void) { return "hello from a bundled library"; }\n'
APPRUN_SCRIPT = """\
#!/bin/sh
# As appimagetool's AppRun scripts do: everything found from $APPDIR.
HERE="${APPDIR:-$(dirname "$(readlink -f "$0")")}"
export LD_LIBRARY_PATH="$HERE/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$HERE/usr/bin/aihello" "$@"
"""


def png(size: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\0" + b"\x80\x20\x20\xff" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def build_appdir(appdir: Path, *, apprun: str, desktop: str | None = None,
                 metainfo: str | None = None) -> Path:  # fmt: skip
    """An AppDir as appimagetool takes it: AppRun, one desktop file and its icon at the
    root, .DirIcon, the program and a library of its own under usr/."""
    (appdir / "usr/bin").mkdir(parents=True)
    (appdir / "usr/lib").mkdir()
    src = appdir.parent / "src"
    src.mkdir(exist_ok=True)
    (src / "aihello.c").write_text(XHELLO_C)
    (src / "greet.c").write_text(GREET_C)
    lib = appdir / "usr/lib/libgreet.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libgreet.so", "-o", lib,
                    src / "greet.c"], check=True)  # fmt: skip
    # A symlinked AppRun has nobody to set LD_LIBRARY_PATH: that build finds its
    # library by its RUNPATH, as such AppImages' programs do.
    runpath = ["-Wl,-rpath,$ORIGIN/../lib"] if apprun == "symlink" else []
    subprocess.run(["cc", "-o", appdir / "usr/bin/aihello", src / "aihello.c", *runpath,
                    f"-L{lib.parent}", "-lgreet", "-lX11"], check=True)  # fmt: skip
    if apprun == "symlink":
        (appdir / "AppRun").symlink_to("usr/bin/aihello")
    else:
        (appdir / "AppRun").write_text(APPRUN_SCRIPT)
        (appdir / "AppRun").chmod(0o755)
    (appdir / "aihello.desktop").write_text(
        desktop
        or "[Desktop Entry]\nType=Application\nName=AI Hello\nExec=aihello %F\nIcon=aihello\n"
        "Categories=Utility;\nX-AppImage-Version=1.2.3\n"
    )
    (appdir / "aihello.png").write_bytes(png(48))
    (appdir / ".DirIcon").symlink_to("aihello.png")
    if metainfo:
        (appdir / "usr/share/metainfo").mkdir(parents=True)
        (appdir / "usr/share/metainfo/aihello.appdata.xml").write_text(metainfo)
    return appdir


def elf_end(data: bytes) -> int:
    """Where the AppImage runtime says an ELF64 file ends: its section header table's end."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return shoff + shnum * shentsize


def make_appimage(out: Path, appdir: Path | None, *, comp: str = "zstd", magic: bytes = b"AI\x02",
                  sections: dict[str, bytes] | None = None) -> Path:  # fmt: skip
    """A type 2 AppImage: the runtime (with ``sections`` added), padded to the end of its
    section header table, the AppImage magic at offset 8, then mksquashfs's output."""
    runtime = out.parent / f"{out.name}.runtime"
    shutil.copy(RUNTIME, runtime)
    for name, data in (sections or {}).items():
        blob = out.parent / f"{out.name}{name}"
        blob.write_bytes(data)
        subprocess.run(["objcopy", "--add-section", f"{name}={blob}", runtime, runtime],
                       check=True)  # fmt: skip
    data = bytearray(runtime.read_bytes())
    end = elf_end(data)
    data = data[:end].ljust(end, b"\0")
    data[8:11] = magic
    if appdir is not None:
        squash = out.parent / f"{out.name}.squashfs"
        subprocess.run(["mksquashfs", appdir, squash, "-comp", comp, "-noappend", "-all-root",
                        "-quiet", "-no-progress"], check=True, capture_output=True)  # fmt: skip
        data += squash.read_bytes()
    out.write_bytes(bytes(data))
    out.chmod(0o755)
    return out


METAINFO = (
    '<?xml version="1.0"?>\n<component type="desktop-application">\n'
    "  <id>org.example.AIHello</id>\n  <name>AI Hello</name>\n"
    '  <launchable type="desktop-id">aihello.desktop</launchable>\n</component>\n'
)


@pytest.mark.parametrize(
    ("apprun", "comp"),
    [("script", "zstd"), ("symlink", "gzip")],
)
def test_appimage_to_a_window(apprun, comp, user, home, xvfb, tmp_path) -> None:  # noqa: F811
    """The AppRun script sets LD_LIBRARY_PATH from $APPDIR (id from the metainfo); the
    symlinked AppRun is the program itself (id given with --id)."""
    meta = METAINFO if apprun == "script" else None
    appdir = build_appdir(tmp_path / "AppDir", apprun=apprun, metainfo=meta)
    image = make_appimage(tmp_path / "AI_Hello-x86_64.AppImage", appdir, comp=comp)
    extra = () if apprun == "script" else ("--id", "org.example.AIHelloLink")
    app_id = "org.example.AIHello" if apprun == "script" else "org.example.AIHelloLink"
    summary, packed, report = init_pack(image, tmp_path, user, *extra)
    manifest = summary["manifest"]
    assert manifest["id"] == app_id
    assert manifest["entrypoint"] == ("AppRun" if apprun == "script" else "usr/bin/aihello")
    assert manifest["profile"] == "host"
    assert manifest["env"] == {"APPDIR": "/"}
    assert manifest["version"] == "1.2.3"
    assert manifest["permissions"] == {"sockets": ["x11"]}
    assert manifest["exports"]["desktop"] == [f"share/applications/{app_id}.desktop"]
    assert manifest["exports"]["icons"] == [f"share/icons/hicolor/48x48/apps/{app_id}.png"]
    why = {d["key"]: d["why"] for d in summary["decisions"]}
    assert f"{comp} SquashFS at offset" in why["source"]
    assert "libX11" in why["permissions"] and "sign the image" in why["signature"]
    assert "pack: warning" not in report, report
    install_and_launch(user, home, xvfb[0], packed, app_id, '"aihello" "AIHello"')
    env = user_env(user, home)
    ran = appimg_as(user, env, "run", app_id, "--", "--greet")
    assert ran.returncode == 0, ran.stderr.decode()
    assert ran.stdout.decode() == "hello from a bundled library\n"


def test_appimage_metadata_is_reported_not_trusted(tmp_path) -> None:
    appdir = build_appdir(tmp_path / "AppDir", apprun="script")
    image = make_appimage(tmp_path / "a.AppImage", appdir, sections={
        ".upd_info": b"zsync|https://example.org/AI_Hello-latest-x86_64.AppImage.zsync".ljust(
            1024, b"\0"),
        ".sha256_sig": b"-----BEGIN PGP SIGNATURE-----\n...\n".ljust(1024, b"\0"),
        ".sig_key": b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n".ljust(8192, b"\0"),
    })  # fmt: skip
    out = appimg("init", tmp_path / "app", "--from", image)
    assert out.returncode == 0, out.stderr
    assert "update-info: zsync|https://example.org/AI_Hello-latest-x86_64.AppImage.zsync" in (
        out.stdout
    )
    assert "signature: not kept (the AppImage's GPG signature (.sha256_sig) and its key " in (
        out.stdout
    )
    assert "sign the image anew with appimg sign" in out.stdout
    # No id in the AppImage: one is made from the desktop file's name, and said so.
    assert "id: local.appimg.aihello (made from 'aihello'" in out.stdout
    toml = (tmp_path / "app/appimg.toml").read_text()
    assert '[env]\nAPPDIR = "/"\n' in toml
    assert (tmp_path / "app/AppRun").is_file() and (tmp_path / "app/.DirIcon").is_symlink()
    summary = json.loads(appimg("init", tmp_path / "app2", "--from", image, "--json").stdout)
    assert {d["key"] for d in summary["decisions"]} >= {"update-info", "signature", "env"}


# --- hostile AppImages ------------------------------------------------------------------


def _hostile(tmp_path: Path, case: str) -> Path:
    out = tmp_path / f"{case}.AppImage"
    if case == "offset-past-end":
        return make_appimage(out, None)  # the runtime alone: nothing after it
    if case == "type1":
        return make_appimage(out, None, magic=b"AI\x01")
    if case == "not-an-appimage":
        return make_appimage(out, None, magic=b"\0\0\0")
    if case == "shoff-past-end":
        image = make_appimage(out, None)
        data = bytearray(image.read_bytes())
        struct.pack_into("<Q", data, 0x28, 1 << 40)
        image.write_bytes(bytes(data))
        return image
    appdir = build_appdir(tmp_path / "AppDir", apprun="script", desktop=(
        "[Desktop Entry]\nType=Application\nName=AI Hello\nExec=aihello; rm -rf ~\n"
        if case == "desktop-injection" else None))  # fmt: skip
    if case == "dotdot-link":
        (appdir / "usr/lib/up").symlink_to("../../../../../tmp")
    elif case == "absolute-link":
        (appdir / "usr/lib/passwd").symlink_to("/etc/passwd")
    elif case == "two-desktop-files":
        shutil.copy(appdir / "aihello.desktop", appdir / "other.desktop")
    return make_appimage(out, appdir)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("offset-past-end", "is past the end of the file"),
        ("shoff-past-end", "is past the end of the file"),
        ("type1", "a type 1 AppImage (ISO 9660) is not supported"),
        ("not-an-appimage", "not an AppImage (no AppImage magic at offset 8)"),
        ("dotdot-link", "the link '/usr/lib/up' points out of the image"),
        ("absolute-link", "the link '/usr/lib/passwd' points out of the image ('/etc/passwd')"),
        ("desktop-injection", "shell metacharacter ';' outside quotes"),
        ("two-desktop-files", "2 desktop files at the AppImage's root"),
    ],
)
def test_hostile_appimages_are_refused_with_one_line(tmp_path, case, says) -> None:
    image = _hostile(tmp_path, case)
    outside = sorted(p.name for p in tmp_path.iterdir())
    target = tmp_path / "out" / "app"
    result = appimg("init", target, "--from", image, check=False)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result)
    assert says in result.stderr, result.stderr
    assert not target.exists(), "DIR is removed again"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == outside
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
