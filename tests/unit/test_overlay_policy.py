"""The host whitelist, profiles and rule resolution as pure logic (spec/overlay-rules.md §2-§5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appimg.errors import PolicyError
from appimg.host.dirs import UserDirs
from appimg.host.profiles import compiled_cache_dir, load_profile, shipped_profiles
from appimg.host.rules import DENIED, GRANTED, SHADOWED, SKIPPED, UNAVAILABLE, resolve
from appimg.host.whitelist import HostPolicy, covers, load_policy, normalise, parse_whitelist

NO_DIRS = UserDirs(Path("/nonexistent"))


def policy_dir(tmp_path: Path, name: str, **files: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file, text in files.items():
        (folder / f"{file}.toml").write_text(text)
    return folder


def test_normalise_and_covers() -> None:
    assert normalise("//usr/./share/../lib/") == "/usr/lib"
    assert normalise("/") == "/"
    assert covers("/usr", "/usr") and covers("/usr", "/usr/lib") and covers("/", "/x")
    assert not covers("/usr", "/usr2") and not covers("/usr/lib", "/usr")


def test_allow_deny_and_deny_wins(tmp_path: Path) -> None:
    system = policy_dir(tmp_path, "etc", a='allow = ["/opt/fonts", "/srv/data"]\n')
    user = policy_dir(
        tmp_path, "user", b='allow = ["/srv/data/secret/ok"]\ndeny = ["/srv/data/secret"]\n'
    )
    policy = load_policy(NO_DIRS, system_dir=system, user_dir=user, defaults=False)
    assert policy.check("/opt/fonts/dejavu").allowed
    assert "allow /opt/fonts" in policy.check("/opt/fonts").reason
    assert not policy.check("/opt").allowed  # above an allowed path is not allowed
    assert not policy.check("/etc").allowed
    denied = policy.check("/srv/data/secret/ok")  # deny wins, whichever file allows it
    assert not denied.allowed and "deny /srv/data/secret" in denied.reason
    granted = policy.check("/srv/data")
    assert granted.allowed and granted.hidden == ("/srv/data/secret",)  # hidden inside
    assert len(policy.sources) == 2


def test_shipped_defaults_grant_the_host_profile_and_hide_secrets(tmp_path: Path) -> None:
    policy = load_policy(NO_DIRS, system_dir=None, user_dir=tmp_path / "none")
    for path in ("/usr", "/usr/share/fonts", "/etc/fonts", "/etc/resolv.conf", "/lib64"):
        assert policy.check(path).allowed, path
    for path in ("/etc/shadow", "/root", "/proc/self", "/home/user", "/etc", "/"):
        assert not policy.check(path).allowed, path
    assert "/etc/ssl/private" in policy.check("/etc/ssl").hidden


@pytest.mark.parametrize(
    "text",
    ['allow = "/usr"', 'allow = ["usr"]', "deny = [1]", "other = []", "allow = [", "\xff"],
)
def test_malformed_policy_fails_closed(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "bad.toml").write_bytes(text.encode("latin-1"))
    with pytest.raises(PolicyError):
        load_policy(NO_DIRS, system_dir=None, user_dir=folder, defaults=False)


def test_policy_files_in_name_order_and_only_toml(tmp_path: Path) -> None:
    folder = policy_dir(tmp_path, "p", b='allow = ["/b"]', a='allow = ["/a"]')
    (folder / "ignored.conf").write_text("not toml")
    policy = load_policy(NO_DIRS, system_dir=None, user_dir=folder, defaults=False)
    assert [e.path for e in policy.allow] == ["/a", "/b"]


def test_user_dir_comes_from_xdg_config_home(tmp_path: Path) -> None:
    folder = tmp_path / "cfg" / "appimg" / "host-paths.d"
    folder.mkdir(parents=True)
    (folder / "mine.toml").write_text('allow = ["/data"]')
    policy = load_policy(
        UserDirs.from_env({"XDG_CONFIG_HOME": str(tmp_path / "cfg")}), system_dir=None
    )
    assert policy.check("/data/x").allowed


def test_shipped_profiles() -> None:
    assert {"none", "host"} <= set(shipped_profiles())
    none = load_profile("none", NO_DIRS, system_dir=None, user_dir=Path("/nonexistent"))
    assert none is not None and none.rules == ()
    host = load_profile("host", NO_DIRS, system_dir=None, user_dir=Path("/nonexistent"))
    assert host is not None
    rules = {r["at"]: r for r in host.rules}
    assert rules["/usr"]["mode"] == "under" and rules["/etc/resolv.conf"]["mode"] == "over"
    assert rules["/run/host/fonts"]["path"] == "/usr/share/fonts"
    policy = load_policy(NO_DIRS, system_dir=None, user_dir=Path("/nonexistent"))
    assert all(policy.check(r["path"]).allowed for r in host.rules)  # defaults grant it
    assert load_profile("no-such-profile", NO_DIRS, system_dir=None) is None
    assert load_profile("../etc", NO_DIRS, system_dir=None) is None


def test_user_profile_overrides_and_is_validated(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "host.toml").write_text('[[host]]\npath = "/opt"\nat = "/run/opt"\n')
    mine = load_profile("host", NO_DIRS, system_dir=None, user_dir=folder)
    assert mine is not None and mine.rules == (
        {"path": "/opt", "at": "/run/opt", "mode": "replace"},
    )
    (folder / "bad.toml").write_text('[[host]]\npath = "/opt"\nmode = "sideways"\n')
    with pytest.raises(PolicyError):
        load_profile("bad", NO_DIRS, system_dir=None, user_dir=folder)


def test_a_launch_reads_the_compiled_profile_and_a_changed_file_is_parsed_again(
    tmp_path: Path,
) -> None:
    dirs = UserDirs(tmp_path / "home", cache_home=tmp_path / "cache")
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "mine.toml").write_text('[[host]]\npath = "/opt"\n')
    first = load_profile("mine", dirs, system_dir=None, user_dir=folder)
    assert first is not None and first.rules == ({"path": "/opt", "at": "/opt", "mode": "replace"},)
    (compiled,) = compiled_cache_dir(dirs).iterdir()
    again = load_profile("mine", dirs, system_dir=None, user_dir=folder)
    assert again == first  # read back from the compiled form
    # A changed profile is another key: parsed again, never the stale form.
    (folder / "mine.toml").write_text('[[host]]\npath = "/srv"\nmode = "under"\n')
    changed = load_profile("mine", dirs, system_dir=None, user_dir=folder)
    assert changed is not None and changed.rules == (
        {"path": "/srv", "at": "/srv", "mode": "under"},
    )
    assert len(list(compiled_cache_dir(dirs).iterdir())) == 2
    # A damaged or hostile compiled form is checked like the TOML, and else ignored.
    (folder / "mine.toml").write_text('[[host]]\npath = "/opt"\n')
    for junk in ("{", '{"description": "", "host": [{"path": "relative"}]}', "[]"):
        compiled.write_text(junk)
        assert load_profile("mine", dirs, system_dir=None, user_dir=folder) == first
    (folder / "bad.toml").write_text('[[host]]\npath = "/opt"\nmode = "sideways"\n')
    for _ in range(2):  # a refused profile is never cached as good
        with pytest.raises(PolicyError):
            load_profile("bad", dirs, system_dir=None, user_dir=folder)


# -- rules ------------------------------------------------------------------------------------


POLICY = HostPolicy(
    *parse_whitelist(b'allow = ["/usr", "/opt", "/srv"]\ndeny = ["/opt/secret"]', "test")
)


def manifest(*rules: dict[str, str], profile: str = "none") -> dict:
    return {"id": "org.example.T", "profile": profile, "host": list(rules)}


def test_resolve_grants_denies_and_reports() -> None:
    m = manifest(
        {"path": "/usr/share/fonts", "at": "/fonts", "mode": "replace"},
        {"path": "/etc", "at": "/etc", "mode": "over"},
        {"path": "/opt", "at": "/opt", "mode": "under"},
    )
    res = resolve(m, None, POLICY)
    assert [d.status for d in res.decisions] == [GRANTED, DENIED, GRANTED]
    assert [r.at for r in res.granted] == ["/fonts", "/opt"]  # outermost first, then by name
    opt = next(r for r in res.granted if r.at == "/opt")
    assert opt.hidden == ("/opt/secret",)
    assert len(res.refusals()) == 1 and "/etc" in res.refusals()[0]
    assert any("without /opt/secret" in n for n in res.notices())


def test_same_at_precedence_manifest_beats_profile_later_beats_earlier() -> None:
    from appimg.host.profiles import Profile

    profile = Profile("p", "", ({"path": "/usr", "at": "/usr", "mode": "under"},), "test")
    m = manifest(
        {"path": "/srv/a", "at": "/usr", "mode": "replace"},
        {"path": "/srv/b", "at": "/x", "mode": "replace"},
        {"path": "/srv/c", "at": "/x", "mode": "over"},
    )
    res = resolve(m, profile, POLICY)
    status = {(d.rule.origin, d.rule.path): d.status for d in res.decisions}
    assert status[("profile p", "/usr")] == SHADOWED
    assert status[("manifest", "/srv/a")] == GRANTED
    assert status[("manifest", "/srv/b")] == SHADOWED
    assert status[("manifest", "/srv/c")] == GRANTED
    assert {r.path for r in res.granted} == {"/srv/a", "/srv/c"}


def test_unknown_profile_no_host_and_unavailable() -> None:
    res = resolve(manifest(profile="mystery"), None, POLICY)
    assert res.problems and "mystery" in res.refusals()[0]
    skipped = resolve(manifest({"path": "/usr", "at": "/usr", "mode": "under"}), None, POLICY,
                      no_host=True)  # fmt: skip
    assert [d.status for d in skipped.decisions] == [SKIPPED] and not skipped.granted
    missing = resolve(
        manifest({"path": "/usr", "at": "/usr", "mode": "under"}), None, POLICY,
        problem=lambda rule: "gone",
    )  # fmt: skip
    assert [d.status for d in missing.decisions] == [UNAVAILABLE]
    # The policy is only loaded when there is something to decide.
    assert resolve(manifest(), None, lambda: pytest.fail("loaded")).decisions == ()


def test_fingerprint_depends_only_on_granted_rules() -> None:
    a = resolve(manifest({"path": "/usr", "at": "/usr", "mode": "under"}), None, POLICY)
    b = resolve(manifest({"path": "/usr", "at": "/usr", "mode": "under"},
                         {"path": "/etc", "at": "/etc"}), None, POLICY)  # fmt: skip
    c = resolve(manifest({"path": "/usr", "at": "/usr", "mode": "over"}), None, POLICY)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


paths = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=0, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)


@given(allow=st.lists(paths, max_size=4), deny=st.lists(paths, max_size=4), path=paths)
def test_policy_check_matches_its_definition(allow: list[str], deny: list[str], path: str) -> None:
    text = f"allow = {allow!r}\ndeny = {deny!r}\n".replace("'", '"').encode()
    policy = HostPolicy(*parse_whitelist(text, "generated"))
    verdict = policy.check(path)

    def under(prefix: str) -> bool:
        return prefix == "/" or path == prefix or path.startswith(prefix + "/")

    expected = any(under(a) for a in allow) and not any(under(d) for d in deny)
    assert verdict.allowed == expected
    if verdict.allowed:
        assert set(verdict.hidden) == {
            d for d in deny if d != path and (path == "/" or d.startswith(path + "/"))
        }
