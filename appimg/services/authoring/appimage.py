"""Reading an AppImage without running it (spec/manifest.md §7.1, AppImage sources).

A type 2 AppImage is an ELF program (the AppImage runtime) with the magic
``AI\\x02`` at offset 8 of its ELF identification, followed by a SquashFS
filesystem. The filesystem starts where the ELF file ends: after its section
header table (``e_shoff + e_shnum * e_shentsize``) or its last section,
whichever is later, the rule AppImage's own runtime applies. Type 1 (``AI\\x01``,
an ISO 9660 image) is refused.

:func:`probe` reads the ELF header and the runtime's metadata sections
(``.upd_info``: the update information; ``.sha256_sig`` / ``.sig_key``: a GPG
signature and its key) through pyelftools; nothing is executed. :func:`unpack`
writes the filesystem into an app directory with appimg's own SquashFS reader
and its safe extractor (:mod:`appimg.format.extract`: names never leave the
target, no device nodes, no set-id bits), after refusing a symbolic link whose
target leaves the image (absolute, or climbing above its root): in an AppImage
such a link points into the host, which an appimg image never reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from appimg.errors import AppimgError, FormatError, UsageError
from appimg.format import extract
from appimg.format.source import FileRegion
from appimg.format.squashfs import SquashfsReader

ELF_MAGIC = b"\x7fELF"
TYPE1_MAGIC = b"AI\x01"
TYPE2_MAGIC = b"AI\x02"
#: Sections of the runtime that hold metadata, each read up to this size.
MAX_SECTION_BYTES = 64 << 10


@dataclass(frozen=True)
class AppImageInfo:
    offset: int  # where the SquashFS filesystem starts
    update_info: str  # .upd_info, "" if none
    signed: bool  # .sha256_sig holds a signature
    has_key: bool  # .sig_key holds a key


def _section_text(elf: object, name: str) -> bytes:
    section = elf.get_section_by_name(name)  # type: ignore[attr-defined]
    if section is None or section["sh_type"] == "SHT_NOBITS":
        return b""
    if section["sh_size"] > MAX_SECTION_BYTES:
        raise UsageError(f"its {name} section is larger than {MAX_SECTION_BYTES} bytes")
    return section.data().rstrip(b"\0")  # the runtime reserves them zero-filled


def probe(path: Path) -> AppImageInfo:
    """The SquashFS offset and metadata of a type 2 AppImage; UsageError for anything else."""
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.elffile import ELFFile

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            ident = f.read(16)
            if ident[8:11] == TYPE1_MAGIC:
                raise UsageError(f"{path}: a type 1 AppImage (ISO 9660) is not supported; "
                                 "convert it to type 2 with appimagetool first")  # fmt: skip
            if ident[:4] != ELF_MAGIC or ident[8:11] != TYPE2_MAGIC:
                raise UsageError(f"{path}: an ELF program but not an AppImage "
                                 "(no AppImage magic at offset 8)")  # fmt: skip
            elf = ELFFile(f)
            header = elf.header
            offset = header["e_shoff"] + header["e_shnum"] * header["e_shentsize"]
            if offset < size:  # else the table itself is not there: not read
                for section in elf.iter_sections():
                    if section["sh_type"] != "SHT_NOBITS":
                        offset = max(offset, section["sh_offset"] + section["sh_size"])
            if offset >= size:
                raise UsageError(f"{path}: its SquashFS offset {offset} is past the end of "
                                 f"the file ({size} bytes)")  # fmt: skip
            update = _section_text(elf, ".upd_info")
            signature = _section_text(elf, ".sha256_sig")
            key = _section_text(elf, ".sig_key")
    except UsageError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise UsageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except (ELFError, ConstructError, ValueError, KeyError, AssertionError) as exc:
        raise UsageError(f"{path}: not a readable AppImage runtime ({exc})") from None
    text = update.decode("utf-8", "replace")
    printable = "".join(c if c.isprintable() else "?" for c in text)[:512]
    return AppImageInfo(offset, printable, bool(signature), bool(key))


def _escapes(link: str, target: str) -> bool:
    """Whether symlink ``link`` (a path from the image's root) pointing at ``target``
    leaves the image: absolute, or more ``..`` than it has parents."""
    if target.startswith("/"):
        return True
    depth = len([p for p in link.strip("/").split("/") if p]) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def unpack(path: Path, info: AppImageInfo, target: Path, notes: list[str]) -> str:
    """Write the AppImage's filesystem into the empty directory ``target``; its compressor."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        region = FileRegion(fd, info.offset, os.fstat(fd).st_size - info.offset, str(path))
        try:
            reader = SquashfsReader(region)
            for name, inode in reader.walk():
                if inode.is_symlink():
                    link = reader.readlink(inode)
                    if _escapes(name, link):
                        raise UsageError(f"refused a hostile AppImage: the link {name!r} "
                                         f"points out of the image ({link!r})")  # fmt: skip
            extract.extract(reader, target, [], notice=notes.append)
        except FormatError as exc:
            raise UsageError(f"{path}: not a readable AppImage filesystem: {exc}") from None
        except AppimgError as exc:
            raise UsageError(f"{path}: {exc}") from None
        return reader.compression
    finally:
        os.close(fd)
