"""Who decides an app's permissions (spec/permissions.md): the host's permissions.d
policy, the user's stored override and its flag grammar, and effective()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appimg.errors import PolicyError, UsageError
from appimg.host import overrides
from appimg.host.dirs import UserDirs
from appimg.host.overrides import Override, from_flags
from appimg.host.permission_policy import SHIPPED_DIR, load_permission_policy, parse_policy
from appimg.services.permissions import effective

MANIFEST = {
    "id": "org.example.Perm",
    "permissions": {
        "sockets": ["x11", "wayland"],
        "devices": ["all"],
        "filesystems": ["xdg-download", "~/Games:create", "/srv/data:ro"],
    },
}


def policy_of(text: str, source: str = "test.toml"):
    from appimg.host.permission_policy import PermissionPolicy

    return PermissionPolicy(tuple(parse_policy(text.encode(), source)), (source,))


# --- host policy ------------------------------------------------------------------------------


def test_policy_refuses_what_it_denies_whoever_grants_it(tmp_path: Path) -> None:
    policy = policy_of('deny = ["device=all", "filesystem=home", "filesystem=/srv", '
                       '"share=network"]')  # fmt: skip
    extra = from_flags([("share", "network"), ("filesystem", "home")])
    result = effective(MANIFEST, UserDirs(tmp_path), extra, stored=Override(), policy=policy)
    granted = result.permissions
    assert granted.devices == frozenset() and granted.share == frozenset()
    assert granted.filesystems == {"xdg-download": "rw"}  # ~/Games, home, /srv/data refused
    refused = {(cat, entry): why for cat, entry, why in result.refused}
    assert set(refused) == {
        ("devices", "all"), ("share", "network"), ("filesystems", "home"),
        ("filesystems", "~/Games:create"), ("filesystems", "/srv/data:ro"),
    }  # fmt: skip
    assert refused["devices", "all"] == "refused by the host policy test.toml (deny device=all)"


def test_filesystem_denial_is_by_location_and_whole_components() -> None:
    policy = policy_of('deny = ["filesystem=xdg-download", "filesystem=/srv"]')
    assert policy.refusal("filesystems", "xdg-download/sub")
    assert policy.refusal("filesystems", "/srv/x")
    assert not policy.refusal("filesystems", "/srvx")
    assert not policy.refusal("filesystems", "xdg-downloadx")
    assert not policy.refusal("filesystems", "home")  # denying a part never refuses the whole


@pytest.mark.parametrize("text, needle", [
    ('deny = ["device=al"]', "did you mean 'all'"),
    ('deny = ["sockets=x11"]', "unknown category 'sockets'"),
    ('deny = ["x11"]', "is not 'category=entry'"),
    ('deny = ["filesystem=../etc"]', "unknown location"),
    ('deny = "device=all"', "must be a list"),
    ('allow = ["device=all"]', "unknown key(s) allow"),
    ("deny = [", "invalid TOML"),
])  # fmt: skip
def test_malformed_policy_fails_closed_naming_file_and_entry(text: str, needle: str) -> None:
    with pytest.raises(PolicyError, match=r"bad\.toml") as info:
        policy_of(text, "bad.toml")
    assert needle in str(info.value)


def test_policy_is_read_from_system_and_user_dirs(tmp_path: Path) -> None:
    system, user = tmp_path / "etc", tmp_path / "user"
    system.mkdir()
    user.mkdir()
    (system / "10-site.toml").write_text('deny = ["device=all"]\n')
    (user / "20-me.toml").write_text('deny = ["socket=ssh-auth"]\n')
    (user / "ignored.txt").write_text("not toml at all [")
    policy = load_permission_policy(UserDirs(tmp_path), system_dir=system, user_dir=user)
    assert [(d.category, d.entry, Path(d.source).name) for d in policy.deny] == [
        ("devices", "all", "10-site.toml"), ("sockets", "ssh-auth", "20-me.toml")]  # fmt: skip
    (user / "30-broken.toml").write_bytes(b"\xff")
    with pytest.raises(PolicyError, match=r"30-broken\.toml"):
        load_permission_policy(UserDirs(tmp_path), system_dir=system, user_dir=user)


def test_shipped_default_policy_refuses_nothing(tmp_path: Path) -> None:
    """appimg ships no policy file (reading none keeps the TOML parser off the
    launch path); its folder's README documents the format."""
    policy = load_permission_policy(UserDirs(tmp_path), system_dir=None)
    assert policy.deny == () and policy.sources == ()
    assert (SHIPPED_DIR / "README").is_file() and not list(SHIPPED_DIR.glob("*.toml"))


# --- the flag grammar ---------------------------------------------------------------------------


def test_flag_grammar_grants_revokes_and_modes() -> None:
    o = from_flags([("socket", "x11"), ("nosocket", "wayland"), ("device", "dri"),
                    ("unshare", "network"), ("filesystem", "xdg-music:ro"),
                    ("filesystem", "~/Games:create"), ("nofilesystem", "home"),
                    ("socket", "wayland")])  # fmt: skip
    assert o.sockets == {"x11": True, "wayland": True}  # the later flag wins
    assert o.devices == {"dri": True} and o.share == {"network": False}
    assert o.filesystems == {"xdg-music": "ro", "~/Games": "create", "home": None}
    assert o.flags() == ["--socket=wayland", "--socket=x11", "--device=dri", "--unshare=network",
                         "--nofilesystem=home", "--filesystem=xdg-music:ro",
                         "--filesystem=~/Games:create"]  # fmt: skip


@pytest.mark.parametrize("flag, value, needle", [
    ("socket", "wayand", "did you mean 'wayland'"),
    ("device", "gpu", "unknown device 'gpu'"),
    ("share", "net", "did you mean 'network'"),
    ("filesystem", "xdg-downlaod", "did you mean 'xdg-download'"),
    ("filesystem", "home:rx", "unknown access"),
    ("filesystem", "~/../.ssh", "without '.', '..'"),
    ("nofilesystem", "home:ro", "unknown location"),
])  # fmt: skip
def test_flag_typos_are_usage_errors_naming_the_nearest(flag: str, value: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        from_flags([(flag, value)])
    assert needle in str(info.value)


# --- stored overrides ---------------------------------------------------------------------------


def test_override_round_trip_and_reset(tmp_path: Path) -> None:
    dirs = UserDirs(tmp_path)
    assert overrides.load(dirs, "org.example.Perm") == Override()
    change = from_flags([("nosocket", "x11"), ("filesystem", "xdg-download:ro"),
                         ("share", "network")])  # fmt: skip
    path = overrides.save(dirs, "org.example.Perm", change)
    assert path == tmp_path / ".config/appimg/overrides/org.example.Perm.toml"
    assert overrides.load(dirs, "org.example.Perm") == change
    result = effective(MANIFEST, dirs, policy=policy_of(""))
    assert ("sockets", "x11", "user override") in result.revoked
    assert ("filesystems", "xdg-download:ro", "user override") in result.sources
    assert ("sockets", "wayland", "manifest") in result.sources
    # One run's flags come last: they grant x11 again, and it is no longer "revoked".
    again = effective(MANIFEST, dirs, from_flags([("socket", "x11")]), policy=policy_of(""))
    assert "x11" in again.permissions.sockets and again.revoked == []
    assert overrides.reset(dirs, "org.example.Perm") is True
    assert overrides.reset(dirs, "org.example.Perm") is False
    assert not path.exists()


@pytest.mark.parametrize("content, needle", [
    (b'sockets = ["x11"', "invalid TOML"),
    (b'sockets = ["x1"]', "did you mean 'x11'"),
    (b'sockets = "x11"', "must be a list"),
    (b'sockets = ["!"]', "is not an entry"),
    (b'devices = [3]', "is not an entry"),
    (b'session-bus = ["org.x"]', "unknown key(s) session-bus"),
    (b"\xff\xfe", "invalid TOML"),
    (b"#" * (overrides.MAX_OVERRIDE_BYTES + 1), "larger than"),
])  # fmt: skip
def test_malformed_override_is_an_error_naming_the_file(tmp_path: Path, content: bytes,
                                                       needle: str) -> None:  # fmt: skip
    dirs = UserDirs(tmp_path)
    path = tmp_path / ".config/appimg/overrides/org.example.Perm.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=r"org\.example\.Perm\.toml") as info:
        effective(MANIFEST, dirs, policy=policy_of(""))
    assert needle in str(info.value)


def test_override_symlink_or_fifo_is_never_followed(tmp_path: Path) -> None:
    dirs = UserDirs(tmp_path)
    folder = tmp_path / ".config/appimg/overrides"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "planted.toml"
    elsewhere.write_text('sockets = ["x11"]\n')
    (folder / "org.example.Perm.toml").symlink_to(elsewhere)
    with pytest.raises(PolicyError, match="a symlink"):
        overrides.load(dirs, "org.example.Perm")
    # Saving replaces the link itself, never writes through it.
    overrides.save(dirs, "org.example.Perm", from_flags([("device", "kvm")]))
    assert elsewhere.read_text() == 'sockets = ["x11"]\n'
    assert overrides.load(dirs, "org.example.Perm").devices == {"kvm": True}
    os.mkfifo(folder / "org.example.Other.toml")
    with pytest.raises(PolicyError, match="not a regular file"):
        overrides.load(dirs, "org.example.Other")  # and does not block on the fifo


def test_overrides_directory_symlink_is_refused(tmp_path: Path) -> None:
    dirs = UserDirs(tmp_path)
    (tmp_path / ".config/appimg").mkdir(parents=True)
    target = tmp_path / "other"
    target.mkdir()
    (tmp_path / ".config/appimg/overrides").symlink_to(target)
    with pytest.raises(PolicyError, match="cannot open the overrides"):
        overrides.save(dirs, "org.example.Perm", from_flags([("device", "kvm")]))
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("app_id", ["../../etc/passwd", "org.example/../x", "a.b", ".."])
def test_bad_app_ids_are_refused_before_any_path(tmp_path: Path, app_id: str) -> None:
    dirs = UserDirs(tmp_path)
    for call in (lambda: overrides.load(dirs, app_id),
                 lambda: overrides.save(dirs, app_id, from_flags([("device", "kvm")])),
                 lambda: overrides.reset(dirs, app_id)):  # fmt: skip
        with pytest.raises(UsageError):
            call()
    assert list(tmp_path.iterdir()) == []
