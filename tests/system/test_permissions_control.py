"""Who decides an app's permissions, through the real CLI as a normal user
(spec/permissions.md): ``appimg permissions``, ``appimg override``, the host's
permissions.d policy, what ``install`` prints and the ``update`` rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appimg.errors import PolicyError, UsageError

from ..helpers import assert_one_line_error
from ..users import appimg_as, ensure_user, user_tmpdir
from .test_install_store import assert_consistent, load_index, make_app, pack

APP = "org.example.Perm"


def perm_app(root: Path, version: str, table: str) -> Path:
    make_app(root, APP, version)
    with (root / "appimg.toml").open("a") as f:
        f.write(f"[permissions]\n{table}\n")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1.0 asks for x11 and Downloads; 2.0 more (wayland, home); 3.0 less than 2.0."""
    user = ensure_user()
    out = user_tmpdir(user, "appimg-perm-images-")
    base = tmp_path_factory.mktemp("perm-trees")
    tables = {
        "1.0": 'sockets = ["x11"]\nfilesystems = ["xdg-download"]',
        "2.0": 'sockets = ["x11", "wayland"]\nfilesystems = ["xdg-download", "home:ro"]',
        "3.0": 'sockets = ["wayland"]\nfilesystems = ["home:ro"]',
    }
    found = {}
    for version, table in tables.items():
        image = pack(perm_app(base / version, version, table), out / f"perm-{version}.appimg")
        image.chmod(0o644)
        found[version] = image
    return found


def cli(user_home: tuple, *args: object, ok: bool = True):
    user, _, env = user_home
    result = appimg_as(user, env, *args)
    if ok:
        assert result.returncode == 0, result.stderr.decode()
    return result


def perms(user_home: tuple, target: object) -> dict:
    return json.loads(cli(user_home, "permissions", target, "--json").stdout)


def test_install_prints_what_the_app_gets(user_home: tuple, images: dict[str, Path]) -> None:
    out = cli(user_home, "install", images["1.0"], "--allow-unsigned").stdout.decode()
    assert "  permissions: sockets: x11\n" in out
    assert "  permissions: filesystems: xdg-download\n" in out
    cli(user_home, "uninstall", APP)
    outcome = json.loads(cli(user_home, "install", images["1.0"], "--allow-unsigned",
                             "--json").stdout)  # fmt: skip
    assert outcome["permissions"]["granted"]["sockets"] == ["x11"]


def test_install_of_an_app_without_permissions_says_none(
    user_home: tuple, tmp_path: Path
) -> None:  # fmt: skip
    _, home, _ = user_home
    image = pack(make_app(tmp_path / "plain", "org.example.Plain"), home / "plain.appimg")
    image.chmod(0o644)
    out = cli(user_home, "install", image, "--allow-unsigned").stdout.decode()
    assert "  permissions: none\n" in out


def test_override_then_permissions_shows_the_change_and_reset_drops_it(
    user_home: tuple, images: dict[str, Path]
) -> None:  # fmt: skip
    _, home, _ = user_home
    cli(user_home, "install", images["1.0"], "--allow-unsigned")
    before = perms(user_home, APP)
    assert before["installed"] is True
    assert before["granted"] == {"sockets": ["x11"], "devices": [], "share": [],
                                 "talk": [], "own": [], "see": [], "system-talk": [],
                                 "filesystems": ["xdg-download"]}  # fmt: skip
    assert {(s["permission"], s["source"]) for s in before["sources"]} == {
        ("socket=x11", "manifest"), ("filesystem=xdg-download", "manifest")}  # fmt: skip

    cli(user_home, "override", APP, "--nosocket=x11", "--share", "network",
        "--filesystem=xdg-download:ro")  # fmt: skip
    stored = json.loads(cli(user_home, "override", APP, "--json").stdout)
    assert stored["flags"] == ["--nosocket=x11", "--share=network",
                               "--filesystem=xdg-download:ro"]  # fmt: skip
    assert Path(stored["file"]) == home / ".config/appimg/overrides" / f"{APP}.toml"
    after = perms(user_home, APP)
    assert after["granted"]["sockets"] == [] and after["granted"]["share"] == ["network"]
    assert {(s["permission"], s["source"]) for s in after["sources"]} == {
        ("share=network", "user override"),
        ("filesystem=xdg-download:ro", "user override"),
    }
    assert [(r["permission"], r["by"]) for r in after["revoked"]] == [
        ("socket=x11", "user override")
    ]
    text = cli(user_home, "permissions", APP).stdout.decode()
    assert "socket=x11" in text and "by user override" in text

    # The same image run as a file is not the installed app (it was installed
    # unsigned: no key ties the file to it), so the stored override is not its.
    as_file = perms(user_home, images["1.0"])
    assert as_file["installed"] is False and as_file["override_file"] is None
    assert as_file["granted"] == before["granted"]

    cli(user_home, "override", APP, "--reset")
    assert perms(user_home, APP)["granted"] == before["granted"]
    assert not (home / ".config/appimg/overrides" / f"{APP}.toml").exists()
    assert "no override" in cli(user_home, "override", APP).stdout.decode()


def test_user_policy_refuses_and_a_broken_one_fails_closed(
    user_home: tuple, images: dict[str, Path]
) -> None:  # fmt: skip
    user, home, _ = user_home
    policy = home / ".config/appimg/permissions.d"
    policy.mkdir(parents=True)
    (policy / "10-mine.toml").write_text('deny = ["socket=x11", "filesystem=home"]\n')
    for path in (home / ".config", home / ".config/appimg", policy):
        os.chown(path, user.pw_uid, user.pw_gid)
    cli(user_home, "install", images["1.0"], "--allow-unsigned")
    cli(user_home, "override", APP, "--filesystem=~/Games")
    result = perms(user_home, APP)
    assert result["installed"] is True
    refused = {r["permission"]: r["reason"] for r in result["refused"]}
    assert set(refused) == {"socket=x11", "filesystem=~/Games"}
    assert "10-mine.toml (deny socket=x11)" in refused["socket=x11"]
    (policy / "20-typo.toml").write_text('deny = ["device=kvn"]\n')
    bad = cli(user_home, "permissions", images["1.0"], ok=False)
    assert bad.returncode == PolicyError.exit_code
    assert "20-typo.toml" in bad.stderr.decode() and "did you mean 'kvm'" in bad.stderr.decode()


def test_widening_update_is_refused_unless_accepted(
    user_home: tuple, images: dict[str, Path]
) -> None:  # fmt: skip
    _, home, _ = user_home
    cli(user_home, "install", images["1.0"], "--allow-unsigned")
    index = load_index(home)
    result = cli(user_home, "update", images["2.0"], "--allow-unsigned", ok=False)
    assert result.returncode == PolicyError.exit_code
    message = result.stderr.decode()
    assert (
        f"{APP} 2.0 asks for more than 1.0: socket=wayland, filesystem=home:ro; "
        "run again with --accept-permissions to allow it" in message
    )
    assert load_index(home) == index  # nothing changed in the store
    assert_consistent(home)
    cli(user_home, "update", images["2.0"], "--allow-unsigned", "--accept-permissions")
    # 3.0 asks for less than 2.0: no flag needed.
    cli(user_home, "update", images["3.0"], "--allow-unsigned")
    assert load_index(home)["apps"][APP]["versions"][0]["version"] == "3.0"
    assert_consistent(home)


@pytest.mark.parametrize("args, needle", [
    (("override", "../../.ssh/authorized_keys", "--socket=x11"), "id '../../.ssh"),
    (("override", APP, "--socket=wayand"), "did you mean 'wayland'"),
    (("override", APP, "--filesystem=home:rx"), "unknown access"),
    (("run", APP, "--nodevice=gpu"), "unknown device 'gpu'"),
])  # fmt: skip
def test_bad_override_input_is_refused_before_touching_anything(
    user_home: tuple, args: tuple, needle: str
) -> None:  # fmt: skip
    _, home, _ = user_home
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    result = cli(user_home, *args, ok=False)
    assert result.returncode == UsageError.exit_code
    stderr = result.stderr.decode()
    assert needle in stderr, stderr
    assert_one_line_error(type("R", (), {"returncode": result.returncode, "stdout": "",
                                         "stderr": stderr})())  # fmt: skip
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before


def test_run_takes_change_flags_before_and_after_the_target() -> None:
    """The flags reach run_app as one Override (parsed, not yet run: no sandbox needed)."""
    from argparse import Namespace

    from appimg.cli.commands.run import _take_options

    args = Namespace(permission_changes=[("socket", "x11")], app_command=None)
    rest = _take_options(args, ["--nosocket", "wayland", "--filesystem=home:ro", "--", "--x"])
    assert rest == ["--x"]
    assert args.permission_changes == [("socket", "x11"), ("nosocket", "wayland"),
                                       ("filesystem", "home:ro")]  # fmt: skip
