"""What an installed image shows the desktop (spec/xdg-index.md §Export rules).

:mod:`.keyfile` parses and writes desktop entries and D-Bus service files,
:mod:`.exec_line` splits and rewrites their ``Exec`` lines (both also serve
``appimg apps``, in their lenient mode, so they import nothing heavy), :mod:`.icons` and
:mod:`.xmlcheck` validate icons and XML data files, and :mod:`.plan` applies the
rules to an image: which files are exported (with their new bytes), which are
refused and why. Nothing here writes to the disk; the store does that.
"""

from __future__ import annotations


class Refused(Exception):
    """One file is not exported; the message says why (shown to the user, kept in the index)."""
