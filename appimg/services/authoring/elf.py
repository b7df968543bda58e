"""What a program needs from the host, read from its ELF headers
(spec/manifest.md §7.2, §8).

Three things matter to appimg: ``PT_INTERP`` (a dynamically linked program needs
the host's loader and libraries, so the ``host`` profile), ``DT_NEEDED`` (which
libraries, hence which host APIs: X11, Wayland, sound, the GPU) and the
``GLIBC_2.x`` versions of ``.gnu.version_r`` (the oldest glibc it runs on, as
appimagelint reports it). :func:`read_elf` is the one place pyelftools is called:
any parse error becomes a :class:`~appimg.errors.FormatError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from appimg.errors import FormatError

ELF_MAGIC = b"\x7fELF"
#: A program larger than this is not parsed (its headers are all we read, but a
#: hostile section table could make pyelftools walk a lot).
MAX_ELF_BYTES = 1 << 30
_GLIBC = re.compile(r"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\Z")


@dataclass(frozen=True)
class ElfInfo:
    interp: str | None  # PT_INTERP: None for a static program
    needed: tuple[str, ...]  # DT_NEEDED, in order
    glibc: tuple[int, ...] | None  # newest GLIBC_x.y[.z] version it needs


def is_elf(path: Path) -> bool:
    """A regular file that starts with the ELF magic (symlinks are not followed)."""
    try:
        if not path.is_file() or path.is_symlink():
            return False
        with path.open("rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def glibc_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def read_elf(path: Path) -> ElfInfo:
    """Interpreter, needed libraries and newest glibc symbol version of one ELF file."""
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    try:
        with path.open("rb") as f:
            if path.stat().st_size > MAX_ELF_BYTES:
                raise FormatError(f"{path}: larger than {MAX_ELF_BYTES} bytes")
            elf = ELFFile(f)
            interp = None
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP":
                    interp = segment.get_interp_name()
            needed: list[str] = []
            newest: tuple[int, ...] | None = None
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    tags = section.iter_tags()
                    needed += [t.needed for t in tags if t.entry.d_tag == "DT_NEEDED"]
                elif isinstance(section, GNUVerNeedSection):
                    for _verneed, auxiliaries in section.iter_versions():
                        for aux in auxiliaries:
                            match = _GLIBC.match(aux.name)
                            if match:
                                version = tuple(int(g) for g in match.groups() if g is not None)
                                newest = max(newest or version, version)
    except OSError as exc:
        raise FormatError(f"{path}: {exc.strerror}") from None
    except (ELFError, ConstructError, ValueError, KeyError, AssertionError, UnicodeError) as exc:
        raise FormatError(f"{path}: not a readable ELF file ({exc})") from None
    return ElfInfo(interp=interp, needed=tuple(dict.fromkeys(needed)), glibc=newest)


def host_glibc() -> tuple[int, ...] | None:
    """The running host's glibc version (``confstr(CS_GNU_LIBC_VERSION)``), if it is glibc."""
    import os

    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    match = re.fullmatch(r"glibc (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def host_libraries() -> frozenset[str] | None:
    """The sonames the host's loader finds (``ldconfig -p``), None if that cannot be told."""
    import platform
    import subprocess

    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout  # fmt: skip
            break
        except (OSError, subprocess.SubprocessError):
            continue
    else:
        return None
    # Only this machine's word size: a 32-bit libfoo does not satisfy a 64-bit program.
    wanted = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine())
    names = set()
    for line in out.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        if wanted is None or wanted in rest.split(")")[0]:
            names.add(name)
    return frozenset(names)
