"""The export rules on their own (spec/xdg-index.md §3): Exec parsing and rewriting,
key files, icon and XML checks, names. No image is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appimg.services.exports import Refused, exec_line, keyfile
from appimg.services.exports.icons import check_icon, check_placement, png_size
from appimg.services.exports.plan import (
    Context,
    _owner_conflict,
    owned_name,
    rewrite_dbus,
    rewrite_desktop,
)
from appimg.services.exports.xmlcheck import root_element
from appimg.services.xdgpath.apps import WANTED

from ..helpers import FIXTURES, png

MANIFEST = {
    "id": "org.example.App",
    "entrypoint": "bin/app",
    "commands": {"viewer": "bin/view-files", "shell": "bin/sh"},
}
CTX = Context(
    app_id="org.example.App",
    version="1.0",
    launcher="/opt/my tools/appimg",
    image_path="/home/u/.local/share/appimg/images/org.example.App/1.0-abc.appimg",
)
LAUNCHER = '"/opt/my tools/appimg"'


# --- Exec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("app %U", [("app", False), ("%U", False)]),
        (
            'app --window "a b" %f',
            [("app", False), ("--window", False), ("a b", True), ("%f", False)],
        ),
        (r'app "say \"hi\" for \$5 \\ \`x\`"', [("app", False), ('say "hi" for $5 \\ `x`', True)]),
        ("app 100%% --x=%k", [("app", False), ("100%%", False), ("--x=%k", False)]),
        ('app ""', [("app", False), ("", True)]),
    ],
)
def test_exec_parse(value: str, expected: list[tuple[str, bool]]) -> None:
    assert [(a.text, a.quoted) for a in exec_line.split_exec(value)] == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("app; rm -rf ~", "metacharacter ';'"),
        ("app $(id)", "metacharacter '$'"),
        ("app `id`", "metacharacter '`'"),
        ("app | nc host 1", "metacharacter '|'"),
        ("app > /tmp/x", "metacharacter '>'"),
        ("app 'single quoted'", 'metacharacter "\'"'),
        ("app ~/file", "metacharacter '~'"),
        ("app *.txt", "metacharacter '*'"),
        ('app "unterminated', "unterminated"),
        ('app "a"b', "followed by a space"),
        (r'app "bad \n escape"', "invalid backslash"),
        ("app %z", "invalid field code %z"),
        ('app "%f"', "inside a quoted argument"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_exec_refused(value: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason.replace("$", r"\$").replace("*", r"\*")):
        exec_line.split_exec(value)


def test_exec_deprecated_field_codes_dropped() -> None:
    args = exec_line.drop_deprecated(exec_line.split_exec("app %d %U --name=%c%m"))
    assert exec_line.join(args) == "app %U --name=%c"


def test_exec_quote_roundtrip() -> None:
    for text in ["plain", "with space", 'q"uote', "dollar$", "back\\slash", "tick`", ""]:
        quoted = exec_line.quote(text)
        assert [a.text for a in exec_line.split_exec("p " + quoted)][1] == text


# --- key files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[Desktop Entry]\nName=a\nName=b\n", "duplicate key"),
        (b"[Desktop Entry]\nName=a\n[Desktop Entry]\n", "duplicate group"),
        (b"Name=a\n[Desktop Entry]\n", "before the first group"),
        (b"[Desktop Entry]\nName=\xff\n", "not UTF-8"),
        (b"[Desktop Entry]\nName=a\x01\n", "control character"),
        (b"[Desktop Entry]\njust text\n", "not a Key=Value"),
        (b"[Desk[top]\n", "malformed group"),
        (b"# only a comment\n", "no group"),
    ],
)
def test_keyfile_refused(data: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        keyfile.parse_keyfile(data)


def test_keyfile_round_trip_keeps_order_and_raw_values() -> None:
    data = b"# comment\n[Desktop Entry]\nName=A\nName[de]=B\nComment=x\\sy\n\n[X-Vendor]\nK = v\n"
    kf = keyfile.parse_keyfile(data)
    assert kf.dump() == b"[Desktop Entry]\nName=A\nName[de]=B\nComment=x\\sy\n\n[X-Vendor]\nK=v\n"
    assert keyfile.unescape(kf.groups[0].get("Comment") or "") == "x y"
    with pytest.raises(Refused, match="invalid escape"):
        keyfile.unescape(r"a\$b")


# --- desktop entries and D-Bus services ------------------------------------------------------


def rewrite(text: str, dbus_names: tuple[str, ...] = ()) -> str:
    return rewrite_desktop(text.encode(), MANIFEST, CTX, dbus_names, "org.example.App").decode()


def test_desktop_rewrite() -> None:
    out = rewrite(
        "[Desktop Entry]\nType=Application\nName=App\nExec=app --open %F\nTryExec=app\n"
        "Path=/srv\nIcon=org.example.App\nDBusActivatable=true\nX-Appimg-Id=org.evil.Other\n"
        'Actions=view;\n\n[Desktop Action view]\nName=View\nExec=/usr/bin/view-files "a b" %u\n'
    )
    assert out == (
        "[Desktop Entry]\nType=Application\nName=App\n"
        f"Exec={LAUNCHER} run org.example.App -- --open %F\n"
        "TryExec=/opt/my tools/appimg\nIcon=org.example.App\nActions=view;\n"
        "X-Appimg-Id=org.example.App\nX-Appimg-Version=1.0\n"
        f"X-Appimg-Image={CTX.image_path}\n\n"
        "[Desktop Action view]\nName=View\n"
        f'Exec={LAUNCHER} run org.example.App --command viewer -- "a b" %u\n'
    )


def test_desktop_keeps_dbus_activation_only_with_its_service() -> None:
    text = "[Desktop Entry]\nType=Application\nName=A\nExec=app\nDBusActivatable=true\n"
    assert "DBusActivatable=true" in rewrite(text, ("org.example.App",))
    assert "DBusActivatable" not in rewrite(text)


def test_desktop_without_exec_gets_one() -> None:
    assert f"Exec={LAUNCHER} run org.example.App --\n" in rewrite(
        "[Desktop Entry]\nType=Application\nName=A\n"
    )


def test_backslashes_survive_both_escaping_layers() -> None:
    out = rewrite('[Desktop Entry]\nType=Application\nName=A\nExec=app "x\\\\\\\\y \\\\$HOME"\n')
    value = keyfile.unescape(out.split("Exec=")[1].split("\n")[0])
    assert [a.literal() for a in exec_line.split_exec(value)][-1] == "x\\y $HOME"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[Desktop Entry]\nType=Link\nName=A\nURL=http://x\n", "Type is not Application"),
        ("[Desktop Entry]\nType=Application\nExec=app\n", "no Name"),
        ("[Other]\nName=A\n", "first group"),
        ("[Desktop Entry]\nType=Application\nName=A\nExec=app; id\n", "metacharacter"),
        (
            '[Desktop Entry]\nType=Application\nName=A\nExec=bash -c "rm -rf ~"\n',
            "neither the app's entry point nor one of its commands",
        ),
        ("[Desktop Entry]\nType=Application\nName=A\nExec=%U\n", "field code"),
        ("[Desktop Entry]\nType=Application\nName=A\nIcon=../../../etc/passwd\n", "icon name"),
        ("[Desktop Entry]\nType=Application\nName=A\nIcon=/usr/share/pixmaps/x.png\n", "icon name"),
        ("[Desktop Entry]\nType=Application\nName=A\n\n[Desktop Action x]\nName=X\n", "no Exec"),
        ("[Desktop Entry]\nType=Application\nName=A\n\n[Random]\nK=v\n", "unexpected group"),
    ],
)
def test_desktop_refused(text: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        rewrite(text)


def test_localised_program_keys_are_dropped_in_every_group() -> None:
    """Exec/TryExec/Path are not localestrings: a variant would run or chdir unchecked
    (KDE reads Exec[xx]); X-Appimg-* variants would fake our own keys."""
    out = rewrite(
        "[Desktop Entry]\nType=Application\nName=A\nName[de]=B\nExec=app\nExec[C]=sh -c evil\n"
        "TryExec[de]=/bin/sh\nPath[fr]=/etc\nX-Appimg-Id[C]=org.evil.Other\n"
        "X-Appimg-Launcher=/bin/sh\nActions=v;\n\n"
        "[Desktop Action v]\nName=V\nExec=app\nExec[de_DE@euro]=rm -rf ~\nPath[C]=/\n\n"
        "[X-Extra]\nExec[C]=evil\nOther=kept\n"
    )
    assert "[" not in "".join(
        line.split("=", 1)[0] for line in out.splitlines() if "=" in line and "Name" not in line
    )
    assert "Name[de]=B" in out and "Other=kept" in out
    assert "evil" not in out and "rm -rf" not in out and "/bin/sh" not in out


@pytest.mark.parametrize("group", ["Desktop Entry", "Desktop Action v"])
@pytest.mark.parametrize(
    "icon", ["Icon[C]=/etc/passwd", "Icon[de]=../../x", "Icon[fr]=.", "Icon[en_GB]=a/b"]
)
def test_localised_icon_must_be_an_icon_name(group: str, icon: str) -> None:
    text = "[Desktop Entry]\nType=Application\nName=A\nExec=app\nActions=v;\n\n"
    text += "[Desktop Action v]\nName=V\nExec=app\n"
    text = text.replace(f"[{group}]\n", f"[{group}]\nIcon=org.example.App\n{icon}\n")
    with pytest.raises(Refused, match=r"Icon\[.*must be an icon name"):
        rewrite(text)
    assert "Icon[de]=org.example.App-de" in rewrite(
        text.replace(icon, "Icon[de]=org.example.App-de")
    )
    # A variant without the key itself is dropped (desktop-file-validate calls it an error).
    assert "Icon[" not in rewrite(text.replace("Icon=org.example.App\n", ""))


def test_dbus_service() -> None:
    data = b"[D-BUS Service]\nName=org.example.App\nExec=/bin/app --service\nSystemdService=x\n"
    out = rewrite_dbus(data, MANIFEST, CTX, "org.example.App").decode()
    assert out == (
        f"[D-BUS Service]\nName=org.example.App\nExec={LAUNCHER} run org.example.App -- --service\n"
    )
    with pytest.raises(Refused, match="Name must be"):
        rewrite_dbus(
            data.replace(b"Name=org.example.App", b"Name=org.freedesktop.Notifications"),
            MANIFEST,
            CTX,
            "org.example.App",
        )
    with pytest.raises(Refused, match="User="):
        rewrite_dbus(data + b"User=root\n", MANIFEST, CTX, "org.example.App")


# --- names ----------------------------------------------------------------------------------


def test_names() -> None:
    assert owned_name("org.example.App.desktop", "org.example.App")
    assert owned_name("org.example.App-symbolic.svg", "org.example.App")
    assert not owned_name("org.example.AppX.desktop", "org.example.App")
    assert not owned_name("org.other.App.desktop", "org.example.App")
    ctx = Context("org.example.App", "1", "/x", "/y", other_ids={"org.example.App.Editor"})
    assert _owner_conflict("org.example.App.Editor.desktop", ctx) == "org.example.App.Editor"
    assert _owner_conflict("org.example.App.Viewer.desktop", ctx) is None


# --- icons ----------------------------------------------------------------------------------


def test_png_checks() -> None:
    assert png_size(png(48)) == (48, 48)
    check_icon("share/icons/hicolor/48x48/apps/org.example.App.png", png(48))
    check_icon("share/icons/hicolor/24x24@2/apps/org.example.App.png", png(48))
    with pytest.raises(Refused, match="not square"):
        check_icon("share/icons/hicolor/48x48/apps/org.example.App.png", png(48, 47))
    with pytest.raises(Refused, match="directory says 512x512"):
        check_icon("share/icons/hicolor/512x512/apps/org.example.App.png", png(4096))
    bad = bytearray(png(16))
    bad[20] ^= 1
    with pytest.raises(Refused, match="bad CRC"):
        png_size(bytes(bad))
    with pytest.raises(Refused, match=r"truncated|past the end"):
        png_size(png(16)[:-5])
    with pytest.raises(Refused, match="after IEND"):
        png_size(png(16) + b"junk")
    with pytest.raises(Refused, match="limit"):
        check_icon("share/icons/hicolor/16x16/apps/org.example.App.png", png(16) + bytes(2 << 20))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("share/icons/hicolor/47x47/apps/a.png", "not a hicolor icon size"),
        ("share/icons/hicolor/48x32/apps/a.png", "not a hicolor icon size"),
        ("share/icons/hicolor/scalable/apps/a.png", "need a size directory"),
        ("share/icons/hicolor/48x48/stock/a.png", "not a hicolor icon context"),
        ("share/icons/Adwaita/48x48/apps/a.png", "share/icons/hicolor"),
        ("share/icons/hicolor/48x48/apps/a.xpm", "PNG or SVG only"),
        ("share/icons/hicolor/48x48/apps/a.svgz", "PNG or SVG only"),
        ("share/icons/hicolor/symbolic/mimetypes/a.svg", "only symbolic/apps"),
    ],
)
def test_icon_placement_refused(path: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_placement(path)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect/></svg>'


def test_svg_checks() -> None:
    check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg", SVG)
    for data, reason in [
        (SVG.replace(b"<rect/>", b"<script>alert(1)</script>"), "script"),
        (SVG.replace(b"<rect/>", b'<rect onload="x()"/>'), "event-handler"),
        (b"<html/>", "not an SVG"),
        (SVG[:-3], "not well-formed"),
        (b'<!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><svg>&b;</svg>', "entity"),
        (b'<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>', "entity"),
    ]:
        with pytest.raises(Refused, match=reason):
            check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg", data)


SVG_NS = b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'<use xlink:href="file:///etc/passwd#x"/>', "not a #fragment"),
        (b'<use href="http://example.com/sprite.svg#a"/>', "not a #fragment"),
        (b'<use xlink:href="sprite.svg#a"/>', "not a #fragment"),
        (b'<image href="http://example.com/track.png"/>', "not a #fragment"),
        (b'<image xlink:href="file:///home/u/.ssh/id_rsa"/>', "not a #fragment"),
        (b'<image href="data:image/svg+xml;base64,PHN2Zy8+"/>', "not a #fragment"),
        (b'<feImage href="/etc/passwd"/>', "not a #fragment"),
        (b'<a href="https://example.com/"><rect/></a>', "not a #fragment"),
        (
            b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>',
            "XInclude",
        ),
        (b'<rect fill="url(http://example.com/p.svg#g)"/>', "url"),
        (b"<rect style=\"fill: URL( 'file:///etc/passwd' )\"/>", "url"),
        (b'<rect style="fill:u\\72l(http://x/)"/>', "CSS escapes"),
        (b"<style>@import url(#ok); a{}</style>", "@import"),
        (b'<style>@IMPORT "http://example.com/x.css";</style>', "@import"),
        (b"<style><![CDATA[rect{fill:url(http://example.com/g)}]]></style>", "url"),
        (b'<set attributeName="xlink:href" to="http://example.com/"/>', "animations of href"),
        (b'<animate attributeName="href" values="file:///etc/passwd"/>', "animations of href"),
        (b'<h:iframe xmlns:h="http://www.w3.org/1999/xhtml" src="http://x/"/>', "not allowed"),
        (b'<h:p xmlns:h="http://www.w3.org/1999/xhtml">x</h:p>', "XHTML"),
        # xml:base would resolve even '#a' against another document.
        (b'<g xml:base="http://example.com/s.svg"><use href="#a"/></g>', "xml:base"),
        # CSS functions that load a string, not a url().
        (b"<rect style=\"fill:src('http://example.com/p.svg#g')\"/>", r"src\(\)"),
        (b"<rect fill=\"image('file:///etc/passwd')\"/>", r"image\(\)"),
        (b'<style>rect{fill:image-set("http://example.com/x" 1x)}</style>', "image-set"),
        (b'<style>a{b:-WEBKIT-image-set("http://example.com/x" 1x)}</style>', "image-set"),
        (b'<rect fill="cross-fade(&quot;http://x/&quot;)"/>', "cross-fade"),
    ],
)
def test_svg_external_references_refused(body: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg",
                   SVG_NS + body + b"</svg>")  # fmt: skip


@pytest.mark.parametrize(
    ("prolog", "reason"),
    [
        (b'<?xml-stylesheet type="text/css" href="http://example.com/x.css"?>', "xml-stylesheet"),
        (b'<!DOCTYPE svg SYSTEM "file:///etc/passwd">', "external DTD"),
        (
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
            b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">',
            "external DTD",
        ),
        (b'<!DOCTYPE svg [<!ENTITY % p SYSTEM "http://example.com/x.dtd"> %p;]>', "entity"),
    ],
)
def test_xml_prolog_refused(prolog: bytes, reason: str) -> None:
    data = b'<?xml version="1.0"?>' + prolog + SVG_NS + b"</svg>"
    with pytest.raises(Refused, match=reason):
        check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg", data)
    with pytest.raises(Refused, match=reason):
        root_element(data.replace(b"<svg", b"<component").replace(b"</svg>", b"</component>"))


def test_svg_local_references_stay() -> None:
    body = (
        b'<defs><linearGradient id="g"/><path id="p" d="M0 0"/></defs>'
        b'<use xlink:href="#p"/><use href=" #p"/><rect fill="url(#g)" style="stroke:url(\'#g\')"/>'
        b'<image href="data:image/png;base64,iVBORw0KGgo="/>'
        b'<image xlink:href="data:image/jpeg;base64,/9j/"/>'
        b"<style>rect{fill:url(#g)} .a{fill:url( data:image/gif;base64,R0lG )}</style>"
    )
    check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg", SVG_NS + body + b"</svg>")


def test_xml_root() -> None:
    assert root_element(b'<?xml version="1.0"?><component type="desktop"/>') == "component"
    ns = b'<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info"/>'
    assert root_element(ns) == "mime-info"


# --- one parser, two modes -------------------------------------------------------------------
# The lenient mode serves `appimg apps`, which had its own reader before; these are that
# reader's functions, kept as the reference the lenient mode must agree with.

_LEGACY_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _legacy_unescape(raw: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw):
            out.append(_LEGACY_ESCAPES.get(raw[i + 1], raw[i + 1]))
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def _legacy_read_entry(data: bytes) -> dict[str, str] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    values: dict[str, str] = {}
    in_group = False
    for line in text.split("\n"):
        line = line.strip()
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            if in_group:
                break
            if line != "[Desktop Entry]":
                return None
            in_group = True
            continue
        if not in_group:
            return None
        key, sep, value = line.partition("=")
        key = key.rstrip()
        if sep and key in WANTED:
            values[key] = _legacy_unescape(value.lstrip())
    return values if in_group else None


def _legacy_first_word(command: str) -> str | None:
    head = command.split(None, 1)[0] if command.strip() else ""
    if head and not any(c in head for c in "'\"\\"):
        return head
    word: list[str] = []
    i, n = 0, len(command)
    while i < n and command[i] in " \t\n":
        i += 1
    while i < n and command[i] not in " \t\n":
        c = command[i]
        if c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                return None
            word.append(command[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and command[i] != '"':
                if command[i] == "\\" and i + 1 < n and command[i + 1] in '"\\$`\n':
                    i += 1
                word.append(command[i])
                i += 1
            if i >= n:
                return None
            i += 1
        elif c == "\\" and i + 1 < n:
            word.append(command[i + 1])
            i += 2
        else:
            word.append(c)
            i += 1
    return "".join(word) or None


def _lenient_entry(data: bytes) -> dict[str, str] | None:
    """What `appimg apps` reads of an entry (apps.read_entry without the file)."""
    groups = keyfile.parse_keyfile(data, strict=False, first_group_only=True, keys=WANTED).groups
    if not groups or groups[0].name != "Desktop Entry":
        return None
    return {k: keyfile.unescape(v, strict=False) for k, v in groups[0].entries}


FIXTURE_FILES = sorted(
    p for p in FIXTURES.rglob("*") if p.suffix in (".desktop", ".service") and p.is_file()
)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_both_modes_agree_with_the_old_readers_on_fixtures(path: Path) -> None:
    data = path.read_bytes()
    strict = keyfile.parse_keyfile(data)  # every fixture is well-formed
    assert _lenient_entry(data) == _legacy_read_entry(data)
    first = strict.groups[0]
    if first.name == "Desktop Entry":
        wanted = {k: keyfile.unescape(v) for k, v in first.entries if k in WANTED}
        assert _lenient_entry(data) == wanted
    for group in strict.groups:
        raw = group.get("Exec")
        if raw is not None:
            value = keyfile.unescape(raw)
            args = exec_line.split_exec(value, field_codes=group.name != "D-BUS Service")
            assert exec_line.split_exec(value, strict=False) == args
            assert exec_line.first_word(value) == _legacy_first_word(value) == args[0].text


#: Desktop-entry-shaped text: pieces of lines, quotes, escapes, separators.
_PIECES = [*"[]=#;\\\"' \t\n\rsnxy%\u00e9", "Exec", "Name", "Type", "Hidden", "[Desktop Entry]"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_lenient_mode_agrees_with_the_old_readers(text: str) -> None:
    for data in (text.encode(), ("[Desktop Entry]\n" + text).encode(), text.encode() + b"\xff"):
        assert _lenient_entry(data) == _legacy_read_entry(data)
    assert exec_line.first_word(text) == _legacy_first_word(text)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_strict_lines_split_the_same_in_both_modes(text: str) -> None:
    try:
        args = exec_line.split_exec(text)
    except Refused:
        return
    assert exec_line.split_exec(text, strict=False) == args


GLIB_READ = """
import json, sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio
info = Gio.DesktopAppInfo.new_from_filename(sys.argv[1])
icon = info.get_icon()
print(json.dumps({"icon": icon.to_string() if icon else None,
                  "commandline": info.get_commandline(),
                  "exec": info.get_locale_string("Exec"), "path": info.get_locale_string("Path"),
                  "tryexec": info.get_locale_string("TryExec")}))
"""


@pytest.mark.parametrize("lang", ["C", "de_DE.UTF-8", "fr_FR.UTF-8"])
def test_glib_sees_no_localised_value_escape(tmp_path: Path, lang: str) -> None:
    """GLib, as the desktop reads the exported entry, under several locales."""
    import json
    import subprocess

    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system python3 with python3-gi")
    import dataclasses

    ctx = dataclasses.replace(CTX, launcher="/usr/bin/true")  # GLib drops a missing program
    text = (
        "[Desktop Entry]\nType=Application\nName=A\nExec=app\nIcon=org.example.App\n"
        "Exec[C]=/bin/sh -c evil\nExec[de]=/bin/sh -c evil\nTryExec[C]=/bin/sh\n"
        "Path[C]=/etc\nPath[de]=/etc\nIcon[fr]=org.example.App-fr\n"
    )
    out = rewrite_desktop(text.encode(), MANIFEST, ctx, (), "org.example.App").decode()
    entry = tmp_path / "org.example.App.desktop"
    entry.write_text(out)
    env = {"PATH": "/usr/bin:/bin", "LANG": lang, "LC_ALL": lang, "LANGUAGE": ""}
    result = subprocess.run(["/usr/bin/python3", "-c", GLIB_READ, str(entry)], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0 and "gi" in result.stderr:
        pytest.skip("python3-gi is not installed")
    seen = json.loads(result.stdout)
    assert seen["commandline"] == "/usr/bin/true run org.example.App --"
    assert seen["exec"] == seen["commandline"]
    assert seen["path"] is None and seen["tryexec"] is None
    assert seen["icon"] in ("org.example.App", "org.example.App-fr")
    assert "evil" not in result.stdout and "/etc" not in result.stdout


def test_program_keys_leave_x_groups_and_kde_privilege_keys_go() -> None:
    """Nothing rewrites Exec/TryExec/Path in [X-…] groups, so they go; KDE's keys that
    run Exec as another user (kdesu) or grant privileged Wayland protocols go too."""
    out = rewrite(
        "[Desktop Entry]\nType=Application\nName=A\nExec=app\nX-KDE-SubstituteUID=true\n"
        "X-KDE-Username=root\nX-KDE-Wayland-Interfaces=org_kde_plasma_window_management\n\n"
        "[X-Extra]\nExec=/bin/sh -c evil\nTryExec=/bin/sh\nPath=/etc\nOther=kept\n"
    )
    assert "X-KDE" not in out and "/bin/sh" not in out and "/etc" not in out
    assert out.endswith("[X-Extra]\nOther=kept\n")


def test_localised_variant_of_a_missing_key_is_dropped() -> None:
    out = rewrite("[Desktop Entry]\nType=Application\nName=A\nKeywords[de]=a;\nComment[C]=x\n")
    assert "Keywords" not in out and "Comment" not in out


@pytest.mark.parametrize("value", ["app %f %F", "app %u --x=%U", "app %f %f"])
def test_exec_takes_one_file_field_code(value: str) -> None:
    """desktop-file-validate refuses a second %f/%F/%u/%U; GLib would expand both."""
    with pytest.raises(Refused, match="more than one of"):
        rewrite(f"[Desktop Entry]\nType=Application\nName=A\nExec={value}\n")
    assert "-- %k %i" in rewrite("[Desktop Entry]\nType=Application\nName=A\nExec=app %k %i\n")


def test_dbus_service_cannot_claim_a_freedesktop_name() -> None:
    """An image may claim the id org.freedesktop.secrets; its service must not take the
    bus name from the host's keyring (the exports come first on the search path)."""
    manifest = {**MANIFEST, "id": "org.freedesktop.secrets"}
    data = b"[D-BUS Service]\nName=org.freedesktop.secrets\nExec=/bin/app\n"
    with pytest.raises(Refused, match=r"org\.freedesktop\.\* bus names"):
        rewrite_dbus(data, manifest, CTX, "org.freedesktop.secrets")
