"""From an existing program to a window on the desktop (spec/manifest.md §7, §8):
real Debian packages and a ``make install`` tree go through ``init --from`` →
``pack`` → ``install`` as a normal user → listed by GLib with their icon →
launched from their desktop entry's Exec under Xvfb, where their window appears.
Then what ``init --from`` refuses, and what ``pack`` refuses or reports.

The packages are fetched with ``apt-get download`` into a cache directory that
outlives the run; the tests skip only when apt cannot reach its mirror. Their
dependencies must be on the host (tools/setup installs libgtk-3-0).
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from ..helpers import appimg, assert_one_line_error
from ..users import appimg_as, run_as, user_env, user_tmpdir
from .test_permissions_sockets import home, spawn_as, stop, user, wait_for, xvfb  # noqa: F401

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("Xvfb", "xauth", "xwininfo", "apt-get", "dpkg-deb")),
        reason="needs xvfb, xauth, x11-utils, apt and dpkg (tools/setup)",
    ),
]
DEB_CACHE = Path("/tmp/appimg-test-debs")
GLIB_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi
GLIB_FIND = """
import json, sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio
for info in Gio.AppInfo.get_all():
    if info.get_id() == sys.argv[1]:
        icon = info.get_icon()
        print(json.dumps({"name": info.get_name(), "commandline": info.get_commandline(),
                          "icon": icon.to_string() if icon else None}))
"""
#: package -> (app id given to init, X window class its main program sets)
PACKAGES = {
    "xterm": ("org.invisible_island.XTerm", '"xterm" "XTerm"'),  # Athena widgets (Xaw/Xt)
    "gtk-3-examples": ("org.gtk.Demo3", '"gtk3-demo" "Gtk3-demo"'),  # GTK 3
    "gpicview": ("org.lxde.GPicView", '"gpicview" "Gpicview"'),  # GTK 2
}


def fetch(*packages: str) -> dict[str, Path]:
    """``apt-get download`` into the cache (once); skip if apt has no network."""
    DEB_CACHE.mkdir(exist_ok=True)
    DEB_CACHE.chmod(0o777)  # apt downloads as _apt when it can
    found = {p: sorted(DEB_CACHE.glob(f"{p}_*.deb")) for p in packages}
    wanted = [p for p, debs in found.items() if not debs]
    if wanted:
        out = subprocess.run(["apt-get", "download", *wanted], cwd=DEB_CACHE,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        if out.returncode != 0:
            pytest.skip(f"apt-get download failed (no network?): {out.stderr.strip()[-200:]}")
        found = {p: sorted(DEB_CACHE.glob(f"{p}_*.deb")) for p in packages}
    return {p: debs[-1] for p, debs in found.items()}


def init_pack(source: Path, work: Path, user, *extra: str) -> tuple[dict, Path, str]:  # noqa: F811
    """init --from SOURCE, then pack; the image readable by ``user``."""
    app_dir = work / "app"
    out = appimg("init", app_dir, "--from", source, "--json", *extra)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    image = user_tmpdir(user, "appimg-images-") / "app.appimg"
    packed = appimg("pack", app_dir, "-o", image)
    assert packed.returncode == 0, packed.stderr
    image.chmod(0o644)
    return summary, image, packed.stderr


def install_and_launch(user, home: Path, display: int, image: Path, app_id: str,  # noqa: F811
                       window_class: str) -> dict:  # fmt: skip
    """Install as ``user``, find the entry with GLib, run its Exec and wait for the window."""
    env = user_env(user, home)
    for args in (("xdg", "setup"), ("install", "--allow-unsigned", image)):
        done = appimg_as(user, env, *args)
        assert done.returncode == 0, done.stderr.decode()
    data_dirs = appimg_as(user, env, "xdg", "env").stdout.decode().strip()
    listing = run_as(user, [GLIB_PYTHON, "-c", GLIB_FIND, f"{app_id}.desktop"],
                     {**env, "XDG_DATA_DIRS": data_dirs}, check=True)  # fmt: skip
    entry = json.loads(listing.stdout)
    assert entry["icon"] == app_id
    exports = home / ".local/share/appimg/exports/share/icons/hicolor"
    assert any(exports.glob(f"*/apps/{app_id}.*")), "the icon GLib names is exported"
    display_env = {**env, "DISPLAY": f":{display}", "XAUTHORITY": str(home / ".Xauthority")}
    argv = [a for a in shlex.split(entry["commandline"]) if not a.startswith("%")]
    app = spawn_as(user, argv, display_env)
    try:
        deadline = time.monotonic() + 25
        tree = ""
        while time.monotonic() < deadline and app.poll() is None:
            tree = run_as(user, ["xwininfo", "-root", "-tree"], display_env).stdout.decode()
            if window_class in tree:
                break
            time.sleep(0.3)
        assert window_class in tree, (app.poll(), tree[-800:])
    finally:
        stop(app)
    return entry


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_debian_package_to_a_window(package, user, home, xvfb, tmp_path) -> None:  # noqa: F811
    app_id, window_class = PACKAGES[package]
    deb = fetch(package)[package]
    summary, image, report = init_pack(deb, tmp_path, user, "--id", app_id)
    manifest = summary["manifest"]
    assert manifest["profile"] == "host"
    assert manifest["entrypoint"].startswith("usr/bin/")
    assert "share" not in manifest.get("permissions", {}), "network is never inferred"
    sockets = manifest["permissions"]["sockets"]
    assert sockets == (["fallback-x11", "wayland"] if package == "gtk-3-examples" else ["x11"])
    assert f"share/applications/{app_id}.desktop" in manifest["exports"]["desktop"]
    assert "pack: info: needs GLIBC_2." in report and "this host has 2." in report
    assert "pack: warning" not in report, report
    install_and_launch(user, home, xvfb[0], image, app_id, window_class)


def test_make_install_tree_to_a_window(user, home, xvfb, tmp_path) -> None:  # noqa: F811
    """A program built from source and installed with `make install DESTDIR=...`; its id
    comes from its AppStream metainfo, its icon is in share/pixmaps."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "xhello.c").write_text(XHELLO_C)
    (src / "Makefile").write_text(MAKEFILE)
    (src / "xhello.desktop").write_text(
        "[Desktop Entry]\nType=Application\nName=X Hello\nExec=xhello\nIcon=xhello\n"
    )
    (src / "xhello.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" '
        'height="16"/></svg>\n'
    )
    (src / "xhello.metainfo.xml").write_text(
        '<?xml version="1.0"?>\n<component type="desktop-application">\n'
        "  <id>org.example.XHello</id>\n  <name>X Hello</name>\n"
        '  <launchable type="desktop-id">xhello.desktop</launchable>\n</component>\n'
    )
    stage = tmp_path / "stage"
    subprocess.run(["make", "-C", src, "install", f"DESTDIR={stage}"], check=True,
                   capture_output=True)  # fmt: skip
    summary, image, _report = init_pack(stage, tmp_path, user, "--version", "1.0")
    manifest = summary["manifest"]
    assert manifest["id"] == "org.example.XHello"
    assert manifest["entrypoint"] == "usr/bin/xhello"
    assert manifest["permissions"] == {"sockets": ["x11"]}
    assert manifest["exports"]["icons"] == [
        "share/icons/hicolor/scalable/apps/org.example.XHello.svg"
    ]
    assert manifest["exports"]["metainfo"] == ["share/metainfo/org.example.XHello.metainfo.xml"]
    why = {d["key"]: d["why"] for d in summary["decisions"]}
    assert "AppStream" in why["id"] and "PT_INTERP" in why["profile"]
    assert "libX11" in why["permissions"]
    meta = (tmp_path / "app/share/metainfo/org.example.XHello.metainfo.xml").read_text()
    assert '<launchable type="desktop-id">org.example.XHello.desktop</launchable>' in meta
    install_and_launch(user, home, xvfb[0], image, "org.example.XHello", '"xhello" "XHello"')


def test_missing_libraries_are_reported_at_pack_time(tmp_path) -> None:
    deb = fetch("gtkterm")["gtkterm"]  # links libvte-2.91, which the host lacks
    assert appimg("init", tmp_path / "app", "--from", deb).returncode == 0
    packed = appimg("pack", tmp_path / "app", "-o", tmp_path / "t.appimg")
    assert packed.returncode == 0, packed.stderr
    assert (
        "pack: warning: libvte-2.91.so.0 (needed by usr/bin/gtkterm) is in neither the app "
        "nor this host" in packed.stderr
    )


# --- what init --from refuses ---------------------------------------------------------


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def _tar(entries: list[tuple[str, bytes | str | None]]) -> bytes:
    """A gzip tar: (name, bytes) a file, (name, "->target") a symlink, (name, None) a dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(path: Path, data: list[tuple[str, bytes | str | None]],
             control: bytes = b"Package: evil\nVersion: 1\nArchitecture: amd64\n"
             b"Maintainer: x <x@example.org>\nDescription: x\n") -> Path:  # fmt: skip
    path.write_bytes(_ar({
        "debian-binary": b"2.0\n",
        "control.tar.gz": _tar([("./control", control)]),
        "data.tar.gz": _tar(data),
    }))  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("case", "data", "says"),
    [
        ("dotdot", [("./usr/", None), ("./../escaped", b"x")], "leaves the package's root"),
        ("through-link", [("./usr/", None), ("./usr/x", "->/tmp"), ("./usr/x/escaped", b"x")],
         "goes through a link"),
        ("relative-link", [("./usr/", None), ("./usr/up", "->../../.."),
                           ("./usr/up/escaped", b"x")], "goes through a link"),
    ],
)  # fmt: skip
def test_hostile_packages_write_nothing_outside_dir(tmp_path, case, data, says) -> None:
    deb = make_deb(tmp_path / f"{case}.deb", data)
    target = tmp_path / "out" / "app"
    result = appimg("init", target, "--from", deb, check=False)
    assert result.returncode == 2
    assert_one_line_error(result)
    assert says in result.stderr
    assert not target.exists(), "DIR is removed again"
    assert not (tmp_path / "out" / "escaped").exists()
    assert not Path("/tmp/escaped").exists()


def test_bad_sources_and_targets_fail_with_one_line(tmp_path) -> None:
    text = tmp_path / "notes.deb"
    text.write_text("not a package\n")
    huge = make_deb(
        tmp_path / "huge.deb",
        [("./usr/", None)],
        control=b"Package: huge\nVersion: 1\nDescription: " + b"x" * (4 << 20) + b"\n",
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("mine")
    cases = [
        ((tmp_path / "nope.deb",), "no such file or directory"),
        ((text,), "not a Debian package"),
        ((huge,), "control fields exceed"),
    ]
    for (source,), says in cases:
        result = appimg("init", tmp_path / "new", "--from", source, check=False)
        assert result.returncode != 0 and says in result.stderr, result.stderr
        assert_one_line_error(result)
        assert not (tmp_path / "new").exists()
    deb = make_deb(tmp_path / "ok.deb", [("./usr/", None)])
    result = appimg("init", busy, "--from", deb, check=False)
    assert result.returncode == 2 and "exists and is not empty" in result.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["file"]


# --- what pack refuses ----------------------------------------------------------------


def _tree(root: Path, toml: str, *, dynamic: bool = False) -> Path:
    (root / "bin").mkdir(parents=True)
    program = shutil.which("xwininfo") if dynamic else "/bin/busybox"
    shutil.copy(program, root / "bin" / "app")
    (root / "appimg.toml").write_text(
        'id = "org.example.Checked"\nname = "C"\nversion = "1"\nentrypoint = "bin/app"\n' + toml
    )
    return root


@pytest.mark.parametrize(
    ("toml", "dynamic", "files", "says"),
    [
        ('profile = "hosts"\n', False, {}, "profile 'hosts' is not a profile of this host "
         "(did you mean 'host'?)"),
        ('profile = "none"\n', True, {}, 'bin/app is dynamically linked (it needs '
         "/lib64/ld-linux-x86-64.so.2), but profile \"none\""),
        ("", False, {"share/applications/app.desktop": b"[Desktop Entry]\nType=Application\n"
                     b"Name=A\nExec=app\n"}, "the app has desktop files"),
        ("", False, {"share/applications/org.example.Checked.desktop": b"[Desktop Entry]\n"
                     b"Type=Application\nName=A\nExec=app\nIcon=/usr/share/x.png\n"},
         "org.example.Checked.desktop: [Desktop Entry] Icon '/usr/share/x.png' must be an "
         "icon name, not a path (appimg install would refuse it)"),
        ("", False, {"share/icons/hicolor/48x48/apps/org.example.Checked.png": b"not a png"},
         "org.example.Checked.png: not a PNG file (appimg install would refuse it)"),
    ],
)  # fmt: skip
def test_pack_refuses_what_install_or_run_would(tmp_path, toml, dynamic, files, says) -> None:
    tree = _tree(tmp_path / "app", toml, dynamic=dynamic)
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    image = tmp_path / "c.appimg"
    refused = appimg("pack", tree, "-o", image, check=False)
    assert refused.returncode == 3, refused.stderr
    assert f"pack: error: {says}" in refused.stderr or says in refused.stderr, refused.stderr
    assert "nothing written (or pack with --warn)" in refused.stderr.splitlines()[-1]
    assert not image.exists() and not list(tmp_path.glob(".appimg-pack-*"))
    warned = appimg("pack", tree, "-o", image, "--warn")
    assert warned.returncode == 0 and says in warned.stderr, warned.stderr
    assert image.exists()


def test_pack_json_lists_its_checks(tmp_path) -> None:
    tree = _tree(tmp_path / "app", 'profile = "host"\n', dynamic=True)
    out = appimg("pack", tree, "-o", tmp_path / "c.appimg", "--json")
    assert out.returncode == 0, out.stderr
    checks = json.loads(out.stdout)["checks"]
    assert [c["level"] for c in checks] == ["info"]
    assert checks[0]["message"].startswith("needs GLIBC_2.")


XHELLO_C = r"""
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <unistd.h>
int main(void) {
    Display *d = XOpenDisplay(NULL);
    if (!d) return 1;
    Window w = XCreateSimpleWindow(d, DefaultRootWindow(d), 0, 0, 100, 50, 0, 0, 0);
    XClassHint hint = {"xhello", "XHello"};
    XSetClassHint(d, w, &hint);
    XMapWindow(d, w);
    XFlush(d);
    for (;;) pause();
}
"""
MAKEFILE = """\
PREFIX ?= /usr
xhello: xhello.c
\tcc -o $@ $< -lX11
install: xhello
\tinstall -D -m 755 xhello $(DESTDIR)$(PREFIX)/bin/xhello
\tinstall -D -m 644 xhello.desktop $(DESTDIR)$(PREFIX)/share/applications/xhello.desktop
\tinstall -D -m 644 xhello.svg $(DESTDIR)$(PREFIX)/share/pixmaps/xhello.svg
\tinstall -D -m 644 xhello.metainfo.xml $(DESTDIR)$(PREFIX)/share/metainfo/xhello.metainfo.xml
"""
