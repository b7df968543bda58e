"""Size caps of format v1 (spec/format.md §Limits).

A reader refuses anything larger before allocating for it, so a hostile image
can never make appimg allocate without bound.
"""

SECTOR_SIZE = 512
#: Partitions start and end on this boundary.
ALIGNMENT = 4096
#: Entries in the GPT partition array (the UEFI minimum array of 16 KiB).
GPT_ENTRY_COUNT = 128
GPT_ENTRY_SIZE = 128
#: Canonical manifest JSON, in bytes.
MAX_MANIFEST_BYTES = 256 * 1024
#: The signature partition has this fixed size; its JSON must fit in it.
SIGNATURE_PARTITION_SIZE = 64 * 1024
#: At most this many signatures in one image.
MAX_SIGNATURES = 64
#: Lengths of manifest strings.
MAX_ID_LENGTH = 255
MAX_STRING_LENGTH = 4096
MAX_LIST_ITEMS = 1024
