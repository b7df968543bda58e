"""Bounded fuzz of the export checker (spec/xdg-index.md §3): desktop entries (key file
parsing and Exec rewriting) and SVG/XML checks. Only :class:`Refused` may come out, and
every desktop entry that is exported parses again strictly, keeps no localised program
key or path icon, and (sampled) passes desktop-file-validate.

Derandomized and a few seconds by default; ``APPIMG_FUZZ_EXAMPLES=N`` runs N examples
per test instead (the convention of tests/system/test_hostile_payload.py)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appimg.services.exports import Refused, keyfile
from appimg.services.exports.icons import check_icon
from appimg.services.exports.plan import Context, rewrite_desktop
from appimg.services.exports.xmlcheck import root_element

FUZZ_EXAMPLES = int(os.environ.get("APPIMG_FUZZ_EXAMPLES", "150"))
VALIDATE_EVERY = 10  # desktop-file-validate is a process per entry: sample
MANIFEST = {"id": "org.example.App", "entrypoint": "bin/app", "commands": {"view": "bin/view"}}
IMAGE = "/home/u/.local/share/appimg/images/org.example.App/1.0-a.appimg"
CTX = Context(app_id="org.example.App", version="1.0", launcher="/usr/bin/appimg", image_path=IMAGE)
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

_words = st.sampled_from([
    "app", "/bin/app", "bin/view", "view", "sh", "%f", "%U", "%%", "%d", "%z", '"a b"', "'x'",
    ";", "$(id)", "`id`", "\\", "\\s", "\\n", "~", "*", "--x=1", '"%f"', '"\\$HOME"', "",
])  # fmt: skip
_values = st.one_of(
    st.lists(_words, max_size=5).map(" ".join),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
)
_keys = st.sampled_from([
    "Exec", "TryExec", "Path", "Icon", "Name", "Type", "Actions", "DBusActivatable",
    "X-Appimg-Id", "X-Appimg-Image", "Comment", "Hidden", "X-KDE-Foo",
])  # fmt: skip
_locales = st.sampled_from(["", "[C]", "[de]", "[de_DE@euro]", "[en_GB.UTF-8]", "[x"])
_lines = st.one_of(
    st.tuples(_keys, _locales, _values).map(lambda t: f"{t[0]}{t[1]}={t[2]}"),
    st.sampled_from(
        ["[Desktop Action v]", "[X-Extra]", "[Other]", "# c", "", "=x", "[Desktop Entry]"]
    ),
)  # fmt: skip


def _entry(lines: list[str]) -> bytes:
    head = "[Desktop Entry]\nType=Application\nName=App\n"
    return (head + "\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def _validate(data: bytes, tmp: Path, *, always: bool = False) -> None:
    """desktop-file-validate on a sample (chosen by the bytes: the same in every run)."""
    tool = shutil.which("desktop-file-validate")
    if tool is None or (zlib.crc32(data) % VALIDATE_EVERY and not always):
        return
    path = tmp / "org.example.App.desktop"
    path.write_bytes(data)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    # The keys the rules rewrite or check must satisfy the validator; other keys are the
    # publisher's, copied as they are (spec §3.1), and may draw its complaints.
    ours = ("Exec", "TryExec", "Path", "Icon", "X-Appimg", "DBusActivatable", "Type")
    errors = [
        line for line in result.stdout.splitlines()
        if "error:" in line and any(f'"{key}' in line for key in ours)
    ]  # fmt: skip
    assert not errors, (data.decode(), result.stdout)


@FUZZ
@given(lines=st.lists(_lines, max_size=12))
def test_fuzz_desktop_entries(lines: list[str], tmp_path: Path) -> None:
    try:
        out = rewrite_desktop(_entry(lines), MANIFEST, CTX, (), "org.example.App")
    except Refused:
        return
    again = keyfile.parse_keyfile(out)  # what we write parses strictly again
    for group in again.groups:
        for key, raw in group.entries:
            base, _, locale = key.partition("[")
            assert not (locale and base in ("Exec", "TryExec", "Path")), key
            if base == "Icon":
                assert "/" not in keyfile.unescape(raw), key
            if base == "Exec" and not group.name.startswith("X-"):  # X- groups: not run
                assert keyfile.unescape(raw).startswith("/usr/bin/appimg run org.example.App ")
    _validate(out, tmp_path)


_svg_attrs = st.sampled_from([
    'href="#a"', 'xlink:href="#a"', 'href="http://x/"', 'xlink:href="file:///etc/passwd"',
    'fill="url(#g)"', 'fill="url(http://x/)"', 'style="fill:url(#g)"', "style=\"a:u\\72l(x)\"",
    'href="data:image/png;base64,AA"', 'href="data:text/html,x"', 'onload="x"', 'id="a"',
])  # fmt: skip
_svg_elements = st.sampled_from(
    ["rect", "use", "image", "a", "style", "script", "set", "feImage", "xi:include", "g"]
)
_svg_text = st.sampled_from(["", "@import 'x';", "a{fill:url(#g)}", "a{fill:url(http://x)}", "&x;"])
_prologs = st.sampled_from([
    "", '<?xml version="1.0"?>', '<?xml-stylesheet href="x.css"?>', '<!DOCTYPE svg SYSTEM "x.dtd">',
    '<!DOCTYPE svg [<!ENTITY x "y">]>', "<!DOCTYPE svg>",
])  # fmt: skip


@st.composite
def _svgs(draw: st.DrawFn) -> bytes:
    body = []
    for _ in range(draw(st.integers(0, 6))):
        element = draw(_svg_elements)
        attrs = " ".join(draw(st.lists(_svg_attrs, max_size=3, unique=True)))
        text = draw(_svg_text) if element == "style" else ""  # CSS only where it is CSS
        body.append(f"<{element} {attrs}>{text}</{element}>")
    text = (
        draw(_prologs)
        + '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xi="http://www.w3.org/2001/XInclude">' + "".join(body) + "</svg>"
    )
    data = text.encode()
    if draw(st.booleans()):  # and some byte-level damage
        for position, value in draw(st.lists(st.tuples(st.integers(0), st.integers(0, 255)),
                                             max_size=3)):  # fmt: skip
            mutable = bytearray(data)
            mutable[position % len(mutable)] = value
            data = bytes(mutable)
    return data


@FUZZ
@given(data=_svgs())
def test_fuzz_svg_and_xml(data: bytes) -> None:
    try:
        check_icon("share/icons/hicolor/scalable/apps/org.example.App.svg", data)
    except Refused:
        pass
    else:  # what passes references nothing outside the document
        lowered = data.lower()
        lowered = re.sub(rb'xmlns(:[a-z]+)?="[^"]*"', b"", lowered)  # declarations, not refs
        for bad in (b'href="http', b'href="file', b"url(http", b"url(file", b"@import",
                    b"<?xml-stylesheet", b"<!doctype svg system", b"data:text", b"<script",
                    b"onload", b"\\72"):  # fmt: skip
            assert bad not in lowered, data
    with contextlib.suppress(Refused):
        root_element(data)


def test_fuzz_sampling_reaches_the_validator(tmp_path: Path) -> None:
    """The sample is not empty: a plain entry is validated whatever the counter says;
    a clean entry draws no complaint at all."""
    lines = ["Exec=app %U", "Icon=org.example.App", "Icon[de]=org.example.App"]
    _validate(
        rewrite_desktop(_entry(lines), MANIFEST, CTX, (), "org.example.App"), tmp_path, always=True
    )
