"""Icon export rules: hicolor placement, PNG and SVG checks (spec/xdg-index.md §Icons).

An exported icon lives at ``share/icons/hicolor/<size dir>/<context>/<name>``
where the size directory is one of the hicolor theme's (``NxN``, ``NxN@2``,
``scalable``, ``symbolic``), the name starts with the app id, and the file is a
PNG of exactly the directory's pixel size (square) or an SVG. PNGs are checked
without an image library: the signature, then every chunk's length and CRC up
to ``IEND``; the size comes from ``IHDR``. Nothing is decompressed.
"""

from __future__ import annotations

import re
import struct
import zlib

from appimg.services.exports import Refused
from appimg.services.exports.xmlcheck import root_element

#: Nominal sizes of the hicolor theme (hicolor-icon-theme 0.17 index.theme).
HICOLOR_SIZES = frozenset({16, 22, 24, 32, 36, 48, 64, 72, 96, 128, 192, 256, 512})
#: Its contexts (without the legacy stock/*).
HICOLOR_CONTEXTS = frozenset({
    "actions", "animations", "apps", "categories", "devices", "emblems", "emotes",
    "filesystems", "intl", "mimetypes", "places", "status",
})  # fmt: skip
MAX_ICON_BYTES = 1 << 20
_SIZE_DIR = re.compile(r"([1-9][0-9]{1,2})x([1-9][0-9]{1,2})(@2)?\Z")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_PNG_CHUNKS = 4096


def check_placement(payload_path: str) -> tuple[int | None, str]:
    """``(pixel size or None for scalable/symbolic, extension)`` for a valid icon path."""
    parts = payload_path.split("/")
    if len(parts) != 6 or parts[:3] != ["share", "icons", "hicolor"]:
        raise Refused("icons must be at share/icons/hicolor/SIZE/CONTEXT/NAME")
    size_dir, context, name = parts[3], parts[4], parts[5]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in ("png", "svg"):
        raise Refused(f"icon format .{ext} is not allowed (PNG or SVG only)")
    if context not in HICOLOR_CONTEXTS:
        raise Refused(f"{context!r} is not a hicolor icon context")
    if size_dir == "scalable":
        pixels = None
    elif size_dir == "symbolic":
        if context != "apps":
            raise Refused("hicolor has only symbolic/apps")
        pixels = None
    else:
        match = _SIZE_DIR.match(size_dir)
        if (
            not match
            or match.group(1) != match.group(2)
            or int(match.group(1)) not in HICOLOR_SIZES
        ):
            raise Refused(f"{size_dir!r} is not a hicolor icon size")
        pixels = int(match.group(1)) * (2 if match.group(3) else 1)
    if pixels is None and ext == "png":
        raise Refused(f"PNG icons need a size directory, not {size_dir}/")
    return pixels, ext


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a structurally valid PNG (all chunk CRCs checked)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise Refused("not a PNG file")
    pos = len(_PNG_SIGNATURE)
    size: tuple[int, int] | None = None
    for index in range(_MAX_PNG_CHUNKS):
        if pos + 12 > len(data):
            raise Refused("PNG truncated")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise Refused("PNG chunk runs past the end of the file")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(ctype + body) != crc:
            raise Refused(f"PNG chunk {ctype!r} has a bad CRC")
        if index == 0:
            if ctype != b"IHDR" or length != 13:
                raise Refused("PNG does not start with IHDR")
            width, height = struct.unpack_from(">II", body)
            if not (0 < width <= 65536 and 0 < height <= 65536):
                raise Refused("PNG has an invalid size")
            size = (width, height)
        if ctype == b"IEND":
            if end != len(data):
                raise Refused("PNG has data after IEND")
            assert size is not None
            return size
        pos = end
    raise Refused(f"PNG has more than {_MAX_PNG_CHUNKS} chunks")


def check_icon(payload_path: str, data: bytes) -> None:
    """Refuse an icon that breaks the placement, format or size rules."""
    pixels, ext = check_placement(payload_path)
    if len(data) > MAX_ICON_BYTES:
        raise Refused(f"icon is {len(data)} bytes (limit {MAX_ICON_BYTES})")
    if ext == "png":
        width, height = png_size(data)
        if width != height:
            raise Refused(f"icon is {width}x{height}, not square")
        if width != pixels:
            raise Refused(f"icon is {width}x{height} but its directory says {pixels}x{pixels}")
    elif root_element(data, svg=True) != "svg":
        raise Refused("not an SVG document (root element is not <svg>)")
