"""The v1 container: protective MBR, GPT and the four appimg partitions (spec/format.md)."""
