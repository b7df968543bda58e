"""The extended XDG search path (spec/xdg-index.md §7-§9): `xdg env`, `xdg setup`,
`xdg find` (also inside images, without mounting) and `apps` against GLib's rules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..helpers import appimg, assert_one_line_error
from .test_install_store import home_env, make_app, pack, store_dir


def exports_of(home: Path) -> str:
    return str(store_dir(home) / "exports" / "share")


def test_xdg_env(tmp_path: Path) -> None:
    home = tmp_path / "home"
    exports = exports_of(home)
    out = appimg("xdg", "env", env=home_env(home)).stdout.strip()
    assert out == f"{exports}:/usr/local/share:/usr/share"
    out = appimg("xdg", "env", env=home_env(home, XDG_DATA_DIRS="/opt/share:/usr/share")).stdout
    assert out.strip() == f"{exports}:/opt/share:/usr/share"
    # Already on the path: not added again. The value is the parsed XDG_DATA_DIRS, so a
    # trailing slash goes, and so do empty and relative entries (XDG Base Directory spec).
    already = f"/opt/share:{exports}/"
    out = appimg("xdg", "env", env=home_env(home, XDG_DATA_DIRS=already)).stdout
    assert out.strip() == f"/opt/share:{exports}"
    out = appimg("xdg", "env", env=home_env(home, XDG_DATA_DIRS="share::/opt/share")).stdout
    assert out.strip() == f"{exports}:/opt/share"
    line = appimg("xdg", "env", "--export", env=home_env(home)).stdout.strip()
    assert line == f"export XDG_DATA_DIRS={exports}:/usr/local/share:/usr/share"
    custom = home_env(home, XDG_DATA_HOME=str(tmp_path / "data"))
    assert appimg("xdg", "env", env=custom).stdout.startswith(f"{tmp_path}/data/appimg/exports/")


def test_xdg_setup_and_undo(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    profile = home / ".profile"
    original = "# my profile\nexport EDITOR=vi\n"
    profile.write_text(original)
    appimg("xdg", "setup", env=env)
    appimg("xdg", "setup", env=env)  # idempotent
    text = profile.read_text()
    assert text.startswith(original) and text.count(">>> appimg xdg setup >>>") == 1
    conf = home / ".config/environment.d/60-appimg.conf"
    exports = exports_of(home)
    assert f"XDG_DATA_DIRS={exports}:${{XDG_DATA_DIRS:-/usr/local/share:/usr/share}}" in (
        conf.read_text()
    )
    # A login shell gets the exports directory once, even if the profile runs twice.
    for start, expected in (
        ("", f"{exports}:/usr/local/share:/usr/share"),
        ("/opt/s", f"{exports}:/opt/s"),
    ):
        shell = subprocess.run(
            ["sh", "-c", '. "$HOME/.profile"; . "$HOME/.profile"; echo "$XDG_DATA_DIRS"'],
            env={"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_DATA_DIRS": start},
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout.strip() == expected
    appimg("xdg", "setup", "--undo", env=env)
    assert profile.read_text() == original
    assert not conf.exists() and not (home / ".config/appimg/profile.sh").exists()
    assert "nothing to undo" in appimg("xdg", "setup", "--undo", env=env).stdout

    bare = tmp_path / "bare"
    appimg("xdg", "setup", env=home_env(bare))
    appimg("xdg", "setup", "--undo", env=home_env(bare))
    assert not (bare / ".profile").exists()  # setup created it, undo removes it


@pytest.fixture(scope="module")
def partial_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app that exports only its desktop entry; its icons stay inside the image."""
    root = tmp_path_factory.mktemp("partial")
    tree = make_app(root / "tree", "org.example.Partial")
    toml = tree / "appimg.toml"
    toml.write_text(
        toml.read_text() + "[exports]\ndesktop = "
        '["share/applications/org.example.Partial.desktop"]\n'
    )
    (tree / "share/metainfo").mkdir(parents=True)
    (tree / "share/metainfo/org.example.Partial.metainfo.xml").write_text("<component/>\n")
    return pack(tree, root / "Partial.appimg")


def test_find_on_disk_and_inside_images(tmp_path: Path, partial_image: Path) -> None:
    home = tmp_path / "home"
    host = tmp_path / "host-share"
    (host / "icons/hicolor/48x48/apps").mkdir(parents=True)
    host_icon = host / "icons/hicolor/48x48/apps/org.example.Partial.png"
    host_icon.write_bytes(b"host icon")
    env = home_env(home, XDG_DATA_DIRS=str(host))
    appimg("install", partial_image, "--allow-unsigned", env=env)
    image = json.loads(appimg("info", "org.example.Partial", "--json", env=env).stdout)
    image_file = image["versions"][0]["file"]

    exported = appimg("xdg", "find", "applications/org.example.Partial.desktop", env=env)
    assert exported.stdout == (
        f"appimg\t{exports_of(home)}/applications/org.example.Partial.desktop\n"
    )
    rel = "icons/hicolor/48x48/apps/org.example.Partial.png"
    first = json.loads(appimg("xdg", "find", rel, "--json", env=env).stdout)
    assert first == [{"source": "host", "path": str(host_icon)}]
    every = json.loads(appimg("xdg", "find", rel, "--all", "--json", env=env).stdout)
    assert every[1] == {
        "source": "image",
        "app_id": "org.example.Partial",
        "version": "1.0",
        "image": image_file,
        "path": f"share/{rel}",
    }
    text = appimg("xdg", "find", "metainfo/org.example.Partial.metainfo.xml", env=env).stdout
    assert text == f"image\t{image_file}\tshare/metainfo/org.example.Partial.metainfo.xml\n"
    # What find names inside an image is read without mounting, verified.
    content = appimg("cat", image_file, "share/metainfo/org.example.Partial.metainfo.xml", env=env)
    assert content.stdout == "<component/>\n"

    missing = appimg("xdg", "find", "icons/nope.png", env=env, check=False)
    assert missing.returncode == 1 and not missing.stdout
    bad = appimg("xdg", "find", "../etc/passwd", env=env, check=False)
    assert_one_line_error(bad)


def write_entry(directory: Path, name: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("[Desktop Entry]\nType=Application\n" + body)


def test_apps_follows_glib(tmp_path: Path, partial_image: Path) -> None:
    home = tmp_path / "home"
    host = tmp_path / "host-share"
    apps = host / "applications"
    write_entry(apps, "plain.desktop", "Name=Plain\nExec=sh -c true\nIcon=plain-icon\n")
    write_entry(apps, "hidden.desktop", "Name=Hidden\nExec=true\nHidden=true\n")
    write_entry(apps, "nodisplay.desktop", "Name=NoDisplay\nExec=true\nNoDisplay=true\n")
    write_entry(apps, "tryexec.desktop", "Name=TryExec\nExec=true\nTryExec=no-such-program-x\n")
    write_entry(apps, "noprogram.desktop", "Name=NoProgram\nExec=/nonexistent/bin/x %U\n")
    write_entry(apps, "quoted.desktop", 'Name=Quoted\nExec="/bin/true" --x\n')
    write_entry(apps / "vendor", "sub.desktop", "Name=Sub\nExec=true\n")
    write_entry(apps, "org.example.Partial.desktop", "Name=Host copy\nExec=true\n")
    (apps / "link.desktop").write_text("[Desktop Entry]\nType=Link\nName=L\nURL=http://x\n")
    (host / "icons/hicolor/16x16/apps").mkdir(parents=True)
    (host / "icons/hicolor/16x16/apps/plain-icon.png").write_bytes(b"png")
    (host / "icons/hicolor/scalable/apps").mkdir(parents=True)
    (host / "icons/hicolor/scalable/apps/plain-icon.svg").write_bytes(b"<svg/>")
    user_apps = home / ".local/share/applications"
    write_entry(user_apps, "plain.desktop", "Name=Mine\nExec=true\nHidden=true\n")
    write_entry(user_apps, "quoted.desktop", "Name=My Quoted\nExec=true\n")
    env = home_env(home, XDG_DATA_DIRS=str(host))
    appimg("install", partial_image, "--allow-unsigned", env=env)

    listed = json.loads(appimg("apps", "--all", "--json", env=env).stdout)
    by_id = {a["id"]: a for a in listed}
    assert sorted(by_id) == [
        "nodisplay.desktop",
        "org.example.Partial.desktop",
        "quoted.desktop",
        "vendor-sub.desktop",
    ]
    assert by_id["quoted.desktop"]["name"] == "My Quoted"  # XDG_DATA_HOME comes first
    partial = by_id["org.example.Partial.desktop"]
    assert (partial["source"], partial["app_id"]) == ("appimg", "org.example.Partial")
    assert partial["name"] == "Partial"  # the exports directory precedes the host's
    assert partial["icon_path"] is None  # the icon stayed inside the image
    shown = json.loads(appimg("apps", "--json", env=env).stdout)
    assert "nodisplay.desktop" not in {a["id"] for a in shown}
    assert (
        "hides"
        in appimg(
            "install",
            partial_image,
            "--allow-unsigned",
            env=home_env(tmp_path / "h2", XDG_DATA_DIRS=str(host)),
        ).stderr
    )

    # Without the masking entry in XDG_DATA_HOME, the icon lookup prefers scalable.
    (user_apps / "plain.desktop").unlink()
    listed = json.loads(appimg("apps", "--all", "--json", env=env).stdout)
    plain = next(a for a in listed if a["id"] == "plain.desktop")
    assert plain["icon_path"] == str(host / "icons/hicolor/scalable/apps/plain-icon.svg")

    if not Path("/usr/bin/python3").exists() or shutil.which("gio") is None:
        return
    script = (
        "import gi; gi.require_version('Gio', '2.0'); from gi.repository import Gio; "
        "print('\\n'.join(sorted(a.get_id() for a in Gio.AppInfo.get_all())))"
    )
    data_dirs = appimg("xdg", "env", env=env).stdout.strip()
    glib = subprocess.run(
        ["/usr/bin/python3", "-c", script],
        capture_output=True,
        text=True,
        env={**env, "XDG_DATA_DIRS": data_dirs, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    ours = json.loads(
        appimg(
            "apps",
            "--all",
            "--json",
            env={**env, "XDG_DATA_DIRS": data_dirs, "PATH": "/usr/bin:/bin"},
        ).stdout
    )
    assert glib.stdout.split() == [a["id"] for a in ours]


def test_apps_skips_an_oversized_entry(tmp_path: Path) -> None:
    """An entry over the size cap is skipped like one GLib cannot load (not read cut short),
    and it still claims its desktop id: the same id in a later directory stays hidden."""
    from appimg.services.xdgpath.apps import MAX_DESKTOP_FILE

    home = tmp_path / "home"
    host = tmp_path / "host-share"
    user_apps = home / ".local/share/applications"
    padding = "#" * MAX_DESKTOP_FILE + "\n"
    write_entry(user_apps, "big.desktop", "Name=Big\nExec=true\n" + padding)
    write_entry(user_apps, "small.desktop", "Name=Small\nExec=true\n")
    write_entry(host / "applications", "big.desktop", "Name=Host big\nExec=true\n")
    env = home_env(home, XDG_DATA_DIRS=str(host))
    listed = json.loads(appimg("apps", "--all", "--json", env=env).stdout)
    assert [a["id"] for a in listed] == ["small.desktop"]
    head = "[Desktop Entry]\nType=Application\nName=Big\nExec=true\n"
    (user_apps / "big.desktop").write_text(head + "#" * (MAX_DESKTOP_FILE - len(head)))
    listed = json.loads(appimg("apps", "--all", "--json", env=env).stdout)
    assert [a["id"] for a in listed] == ["big.desktop", "small.desktop"]
