"""Unit tests: the library's modules called directly, one behaviour at a time.

Images, where needed, are made by the project's own packer from small trees.
"""
