"""An app is its id and the keys it was installed with (spec/run.md "The data
directory", spec/format.md §12.1, spec/xdg-index.md §4): crafted images that only
claim an installed app's id get neither its data, nor a run in its place, nor
the right to replace it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from appimg.errors import PolicyError
from appimg.format import keys
from appimg.format.image import Image

from ..forge import rewrite_signatures
from ..helpers import appimg, assert_one_line_error
from ..users import allow_fuse_for_users, appimg_as, ensure_user, user_env, user_tmpdir
from .test_install_store import home_env, load_index, make_app, pack
from .test_run import BUSYBOX, make_busybox_app

needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (tools/setup)")


def key_id(public: Path) -> str:
    return keys.key_id(keys.load_public(public))


def root_hash(image: Path) -> str:
    with Image.open(image) as opened:
        return opened.verity.root_hash.hex()


@pytest.fixture(scope="module")
def keys2() -> dict[str, tuple[Path, Path]]:
    """Two publishers' key pairs, A and B; the test user can read the public keys."""
    directory = user_tmpdir(ensure_user(), "appimg-keys-")  # outside root's private tmp
    pairs = {}
    for name in ("A", "B"):
        key = directory / f"{name}.key"
        appimg("keygen", "-o", key)  # the private key stays root's: the tests sign as root
        (directory / f"{name}.key.pub").chmod(0o644)
        pairs[name] = (key, directory / f"{name}.key.pub")
    return pairs


# -- 1. the data directory belongs to the identity ------------------------------------------


@needs_busybox
@pytest.mark.root
def test_data_directory_is_bound_to_the_signing_key(
    tmp_path: Path, keys2: dict[str, tuple[Path, Path]]
) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    home = user_tmpdir(user, "appimg-home-")
    env = user_env(user, home)
    images = user_tmpdir(user)

    def build(name: str, version: str, key: Path | None) -> Path:
        tree = make_busybox_app(tmp_path / name)
        toml = tree / "appimg.toml"
        toml.write_text(toml.read_text().replace('version = "1"', f'version = "{version}"'))
        image = pack(tree, images / f"{name}.appimg", key)
        image.chmod(0o644)
        return image

    genuine = build("genuine", "1", keys2["A"][0])
    unsigned = build("unsigned", "6.6.6", None)  # a crafted image claiming the same id
    other = build("other", "6.6.7", keys2["B"][0])  # signed, but by another publisher
    var = home / ".var" / "appimg"
    app = "org.example.Box"
    assert appimg_as(user, env, "trust", "add", keys2["A"][1]).returncode == 0

    def count(*target: object) -> str:
        out = appimg_as(user, env, "run", *target, "--", "count")
        assert out.returncode == 0, out.stderr
        return out.stdout.decode().strip()

    # Not installed yet: the signed image gets ID@KEY, so nothing can seed ~/.var/appimg/ID.
    kid_a, kid_b = key_id(keys2["A"][1]), key_id(keys2["B"][1])
    assert count(genuine) == "count=1"
    assert (var / f"{app}@{kid_a[:16]}" / "data" / "count").exists()
    assert not (var / app).exists()

    installed = appimg_as(user, env, "install", genuine)
    assert installed.returncode == 0, installed.stderr
    assert count(app) == "count=1"  # the installed app, by its id
    assert count(genuine) == "count=2"  # the same key's image run as a file: the app
    assert (var / app / "data" / "count").read_text().strip() == "2"

    # The impostors neither see nor change it: each gets a directory of its own.
    assert count("--allow-unsigned", unsigned) == "count=1"
    assert count("--allow-untrusted", other) == "count=1"
    assert count("--allow-unsigned", unsigned) == "count=2"
    assert (var / app / "data" / "count").read_text().strip() == "2"
    assert (var / f"{app}@unsigned-{root_hash(unsigned)[:16]}/data/count").read_text() == "2\n"
    assert (var / f"{app}@{kid_b[:16]}" / "data" / "count").read_text() == "1\n"
    assert count(app) == "count=3"


# -- 2. unsigned is never easier than signed by an unknown key ----------------------------


@needs_busybox
@pytest.mark.root
def test_stripping_a_signature_does_not_turn_a_refusal_into_a_warning(
    tmp_path: Path, keys2: dict[str, tuple[Path, Path]]
) -> None:
    user = ensure_user()
    allow_fuse_for_users()
    env = user_env(user, user_tmpdir(user, "appimg-home-"))
    image = pack(make_busybox_app(tmp_path / "tree"), user_tmpdir(user) / "box.appimg",
                 keys2["B"][0])  # fmt: skip
    image.chmod(0o644)
    untrusted = appimg_as(user, env, "run", image)
    assert untrusted.returncode == PolicyError.exit_code
    stripped = image.parent / "stripped.appimg"
    shutil.copyfile(image, stripped)
    rewrite_signatures(stripped, lambda block: block.signatures.clear())
    stripped.chmod(0o644)
    for command in (["run"], ["mount"]):
        refused = appimg_as(user, env, *command, stripped)
        assert refused.returncode == PolicyError.exit_code, refused.stderr
        assert len(refused.stderr.splitlines()) == 1
        assert b"--allow-unsigned" in refused.stderr
    ran = appimg_as(user, env, "run", "--allow-unsigned", stripped)
    assert ran.returncode == 0, ran.stderr
    assert b"unsigned" in ran.stderr  # still a warning
    # Installed with --allow-unsigned, the app runs by its id without the flag again.
    assert appimg_as(user, env, "install", "--allow-unsigned", stripped).returncode == 0
    by_id = appimg_as(user, env, "run", "org.example.Box")
    assert by_id.returncode == 0, by_id.stderr


# -- 4. an argument is a file only if it looks like a path ---------------------------------


@needs_busybox
def test_a_file_named_like_an_app_id_in_the_cwd_is_not_run(tmp_path: Path) -> None:
    env = home_env(tmp_path / "home")
    genuine = pack(make_busybox_app(tmp_path / "genuine"), tmp_path / "genuine.appimg")
    appimg("install", "--allow-unsigned", genuine, env=env)
    planted_dir = tmp_path / "home"
    planted = pack(make_busybox_app(tmp_path / "planted", "org.example.Planted"),
                   planted_dir / "org.example.Box")  # fmt: skip
    cwd = os.getcwd()
    os.chdir(planted_dir)
    try:
        out = appimg("run", "org.example.Box", "--", "env", env=env)
        assert "id=org.example.Box" in out.stdout
        missing = appimg("run", "--allow-unsigned", "org.example.Nope", env=env, check=False)
        assert_one_line_error(missing)
        shutil.copyfile(planted, planted_dir / "org.example.Nope")
        missing = appimg("run", "--allow-unsigned", "org.example.Nope", env=env, check=False)
        assert_one_line_error(missing)
        assert "./org.example.Nope" in missing.stderr
        # As a path it is a file again.
        out = appimg("run", "--allow-unsigned", "./org.example.Box", "--", "env", env=env)
        assert "id=org.example.Planted" in out.stdout
        # umount takes the same view of its argument.
        gone = appimg("umount", "org.example.Box", env=env, check=False)
        assert_one_line_error(gone)
        assert "./org.example.Box" in gone.stderr
    finally:
        os.chdir(cwd)


@needs_busybox
def test_an_installed_id_ending_in_appimg_wins_over_a_file_in_the_cwd(tmp_path: Path) -> None:
    """Its menu entry runs `appimg run org.example.appimg` from $HOME: a file planted
    there under that name must not run instead."""
    env = home_env(tmp_path / "home")
    app = "org.example.appimg"
    genuine = pack(make_busybox_app(tmp_path / "genuine", app), tmp_path / "genuine.appimg")
    appimg("install", "--allow-unsigned", genuine, env=env)
    planted = pack(make_busybox_app(tmp_path / "planted", "org.example.Planted"),
                   tmp_path / "home" / app)  # fmt: skip
    out = appimg("run", "--allow-unsigned", app, "--", "env", env=env, cwd=tmp_path / "home")
    assert f"id={app}" in out.stdout
    out = appimg("run", "--allow-unsigned", f"./{app}", "--", "env", env=env,
                 cwd=planted.parent)  # fmt: skip
    assert "id=org.example.Planted" in out.stdout


# -- 3. who may replace an app ---------------------------------------------------------


def test_update_must_be_signed_by_a_pinned_key_and_raise_the_version(
    tmp_path: Path, keys2: dict[str, tuple[Path, Path]]
) -> None:
    env = home_env(tmp_path / "home")
    (key_a, pub_a), (key_b, pub_b) = keys2["A"], keys2["B"]
    kid_a, kid_b = key_id(pub_a), key_id(pub_b)
    appimg("trust", "add", pub_a, env=env)
    appimg("trust", "add", pub_b, env=env)  # B publishes other apps: trusted, not pinned
    app = "org.example.Pinned"

    def image(version: str, *signers: Path, tag: str = "") -> Path:
        tree = make_app(tmp_path / f"tree-{version}{tag}", app, version)
        (tree / "bin" / "tag").write_text(tag)
        out = pack(tree, tmp_path / f"{version}{tag}.appimg", signers[0] if signers else None)
        for key in signers[1:]:
            appimg("sign", out, "--key", key)
        return out

    def refused(*args: object) -> str:
        result = appimg("update", *args, env=env, check=False)
        assert_one_line_error(result)
        assert result.returncode == PolicyError.exit_code, result.stderr
        return result.stderr

    def pinned() -> list[str]:
        return load_index(tmp_path / "home")["apps"][app]["pinned_keys"]  # type: ignore[index]

    appimg("install", image("1.0", key_a), env=env)
    assert pinned() == [kid_a]
    # Another trusted publisher's key is not enough, with or without --trust.
    other = image("2.0", key_b)
    assert "pinned" in refused(other)
    assert "pinned" in refused(other, "--trust")
    # Nor is no signature at all.
    assert "pinned" in refused(image("2.0", tag="unsigned"), "--allow-unsigned")
    # An older version only with --allow-downgrade; the same version with other bytes never.
    older = image("0.9", key_a)
    assert "--allow-downgrade" in refused(older)
    # --allow-downgrade lowers the version, never the bar on the key.
    assert "pinned" in refused(image("0.8", key_b), "--allow-downgrade", "--trust")
    same = image("1.0", key_a, tag="other-bytes")
    assert "same version" in refused(same)
    assert "same version" in refused(same, "--allow-downgrade")
    assert "same version" in refused(image("1.00", key_a), "--allow-downgrade")
    appimg("update", older, "--allow-downgrade", env=env)
    appimg("rollback", app, env=env)  # back to 1.0: going back to an installed version
    assert load_index(tmp_path / "home")["apps"][app]["versions"][0]["version"] == "1.0"
    # Key rotation: B is accepted on an image A signed too, then B alone will do.
    rotated = json.loads(appimg("update", image("2.0", key_a, key_b, tag="rot"), "--json",
                                env=env).stdout)  # fmt: skip
    assert sorted(rotated["signature"]["key_ids"]) == sorted([kid_a, kid_b])
    assert sorted(pinned()) == sorted([kid_a, kid_b])
    appimg("update", image("3.0", key_b), env=env)
    assert pinned() == [kid_b]
    assert "pinned" in refused(image("4.0", key_a))  # A was rotated out


def test_an_app_installed_unsigned_is_replaced_only_with_allow_unsigned_again(
    tmp_path: Path, keys2: dict[str, tuple[Path, Path]]
) -> None:
    env = home_env(tmp_path / "home")
    app = "org.example.Loose"
    one = pack(make_app(tmp_path / "one", app, "1.0"), tmp_path / "one.appimg")
    two = pack(make_app(tmp_path / "two", app, "2.0"), tmp_path / "two.appimg", keys2["A"][0])
    appimg("install", "--allow-unsigned", one, env=env)
    appimg("trust", "add", keys2["A"][1], env=env)
    result = appimg("update", two, env=env, check=False)
    assert_one_line_error(result)
    assert result.returncode == PolicyError.exit_code
    assert "installed unsigned" in result.stderr and "--allow-unsigned" in result.stderr
    updated = json.loads(appimg("update", two, "--allow-unsigned", "--json", env=env).stdout)
    assert updated["signature"]["state"] == "trusted"
    assert load_index(tmp_path / "home")["apps"][app]["pinned_keys"] == [key_id(keys2["A"][1])]


def test_mount_accepts_a_key_the_installed_app_is_pinned_to(
    tmp_path: Path, keys2: dict[str, tuple[Path, Path]]
) -> None:
    """run and mount judge a file alike: signed by a key the installed app of its id is
    pinned to (accepted with --trust at install), it needs no --allow-untrusted."""
    env = {**home_env(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    (tmp_path / "run").mkdir(mode=0o700)
    key_a, _ = keys2["A"]
    tree = make_app(tmp_path / "tree", "org.example.PinnedMount", "1")
    image = pack(tree, tmp_path / "app.appimg", key_a)
    other = make_app(tmp_path / "other", "org.example.NotInstalled", "1")
    stranger = pack(other, tmp_path / "stranger.appimg", key_a)
    refused = appimg("mount", image, env=env, check=False)  # untrusted, not installed
    assert refused.returncode == PolicyError.exit_code, refused.stderr
    appimg("install", image, "--trust", env=env)  # pins A for this app only
    mounted = appimg("mount", image, env=env)
    assert "warning" not in mounted.stderr
    appimg("umount", mounted.stdout.strip(), env=env)
    # The pin is the app's, not the key's: another app signed by A is still untrusted.
    other_refused = appimg("mount", stranger, env=env, check=False)
    assert other_refused.returncode == PolicyError.exit_code, other_refused.stderr
