"""The format core: one image file, read and written (spec/format.md, spec/manifest.md).

Pure format logic, no host policy: the container (:mod:`.container`: protective
MBR, GPT, partitions), the payload (:mod:`.squashfs` reads it lazily,
:mod:`.payload` writes it and resolves paths in it), the integrity tree
(:mod:`.verity`), the signed statement (:mod:`.statement`, :mod:`.keys`,
:mod:`.canonical`), the manifest (:mod:`.manifest`), opening and checking an
image (:mod:`.image`), packing (:mod:`.packer`) and extracting
(:mod:`.extract`). Every binary structure is parsed through :mod:`.binary`, the
one place a parser error becomes a FormatError. Nothing here imports :mod:`appimg.host`,
:mod:`appimg.services` or :mod:`appimg.cli`; a test keeps it so.
"""
