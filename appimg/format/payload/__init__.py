"""The payload partition seen from the packer and from path lookups (spec/format.md §Payload).

:mod:`.options` names the compressors and their levels, :mod:`.writer` writes
the SquashFS with squashfs-tools-ng, :mod:`.paths` resolves paths inside it,
confined to the image. The reader itself is :mod:`appimg.format.squashfs`.
"""
