"""The verity partition: a dm-verity hash tree over the payload (spec/format.md §Verity partition).

:mod:`.structs` declares the superblock's bytes; :mod:`.hashtree` builds and
checks the tree and offers the verity-checked byte source the payload reader uses.
"""
