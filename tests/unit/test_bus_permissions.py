"""D-Bus names in ``[permissions]`` (spec/manifest.md §3.5), their flags and policy
spelling (spec/permissions.md), and the filter rules they become (spec/run.md, D-Bus)."""

from __future__ import annotations

import pytest

from appimg.errors import FormatError, PolicyError, UsageError
from appimg.format.permissions import Permissions, bus_name_covers, parse, parse_bus_name
from appimg.host.overrides import Override, from_flags, from_table
from appimg.host.permission_policy import PermissionPolicy, parse_denial

APP = "org.example.App"


@pytest.mark.parametrize("name", ["org.example.Service", "org.example.*", "a.b", "org._x-y.Z9",
                                  "org.mpris.MediaPlayer2.app"])  # fmt: skip
def test_bus_names(name: str) -> None:
    assert parse_bus_name(name, "k") == name


BAD_NAMES = ["*", "org.*", "org", "org.ex*", "org.*.Foo", "*.example.Foo", ":1.42",
             "org..example", "org.9lives", "org.example.", "org.exa mple", "org.example/x",
             "a." + "b" * 254, ""]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_bus_names_are_refused_at_pack_with_one_line(name: str) -> None:
    with pytest.raises(FormatError) as info:
        parse({"talk": [name]}, strict=True, app_id=APP)
    assert "\n" not in str(info.value)
    assert "permissions.talk[0]" in str(info.value)


def test_names_over_255_characters() -> None:
    name = "org." + "x" * 252
    assert len(name) == 256
    with pytest.raises(FormatError, match="at most 255"):
        parse_bus_name(name, "k")
    assert parse_bus_name(name[:-1], "k")


@pytest.mark.parametrize("name", ["org.other.App", "org.freedesktop.secrets", "org.example",
                                  "org.example.*", "org.mpris.MediaPlayer2.*"])  # fmt: skip
def test_owning_another_apps_name_is_refused_at_pack(name: str) -> None:
    with pytest.raises(FormatError, match="neither the app's id") as info:
        parse({"own": [name]}, strict=True, app_id=APP)
    assert "\n" not in str(info.value)
    # Reading an image, the same entry grants nothing and is reported.
    granted, ignored = parse({"own": [name]}, strict=False, app_id=APP)
    assert not granted.own and ignored == [f"permissions.own: {name}"]


@pytest.mark.parametrize("name", [APP, f"{APP}.Sub", f"{APP}.*", "org.mpris.MediaPlayer2.app"])
def test_owning_its_own_names(name: str) -> None:
    assert parse({"own": [name]}, strict=True, app_id=APP)[0].own == {name}


def test_round_trip_and_widening() -> None:
    table = {"talk": ["org.b.B", "org.a.A"], "system-talk": ["org.freedesktop.UPower"],
             "see": ["org.c.*"], "sockets": ["session-bus"]}  # fmt: skip
    asked, ignored = parse(table, strict=True, app_id=APP)
    assert not ignored
    assert asked.to_manifest()["talk"] == ["org.a.A", "org.b.B"]
    assert parse(asked.to_manifest(), strict=True)[0] == asked
    assert ("system-talk", "org.freedesktop.UPower") in asked.entries()
    assert asked.dangers() == ["socket=session-bus: dangerous: the whole bus, unfiltered"]
    wider = parse({**table, "talk": ["org.a.A", "org.b.B", "org.d.D"]}, strict=True)[0]
    assert asked.widened_by(wider) == ["talk-name=org.d.D"]
    assert not wider.widened_by(asked)


def test_unknown_bus_socket_is_ancillary_when_reading() -> None:
    granted, ignored = parse({"talk": ["*"]}, strict=False)
    assert granted == Permissions() and ignored == ["permissions.talk: *"]


def test_flags_and_stored_form() -> None:
    change = from_flags([("talk-name", "org.a.A"), ("no-talk-name", "org.b.B"),
                         ("own-name", "org.other.Name"), ("system-talk-name", "org.x.Y"),
                         ("see-name", "org.s.*"), ("socket", "session-bus")])  # fmt: skip
    assert change.flags() == [
        "--socket=session-bus", "--talk-name=org.a.A", "--no-talk-name=org.b.B",
        "--own-name=org.other.Name", "--see-name=org.s.*", "--system-talk-name=org.x.Y",
    ]  # fmt: skip
    table = change.to_table()
    assert table["talk"] == ["org.a.A", "!org.b.B"] and table["system-talk"] == ["org.x.Y"]
    assert from_table(table, "t") == change
    base = Permissions(talk=frozenset({"org.b.B"}))
    after = change.apply(base)
    assert after.talk == {"org.a.A"} and after.own == {"org.other.Name"}
    assert Override().merged(change) == change
    with pytest.raises(UsageError, match="not a D-Bus name"):
        from_flags([("talk-name", "*")])


def test_policy_spelling() -> None:
    denial = parse_denial("talk-name=org.freedesktop.*", "f")
    policy = PermissionPolicy((denial,))
    assert policy.refusal("talk", "org.freedesktop.secrets") is denial
    assert policy.refusal("talk", "org.freedesktop.*") is denial
    assert policy.refusal("own", "org.freedesktop.secrets") is None
    assert bus_name_covers("org.a.*", "org.a.b.c") and not bus_name_covers("org.a.*", "org.ab")
    with pytest.raises(PolicyError):
        parse_denial("talk-name=*", "f")
