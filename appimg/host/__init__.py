"""Host policy: what this host and this user allow (spec/overlay-rules.md, spec/xdg-index.md).

The user's directories (:mod:`.dirs`), trusted keys (:mod:`.trust`), the host's
whitelist of paths (:mod:`.whitelist`), named profiles (:mod:`.profiles`,
:mod:`.profile_dirs`), rule resolution as pure logic (:mod:`.rules`), an app's
rules on this host (:mod:`.app_rules`) and no-follow reads of host paths
(:mod:`.fs`). Imports the format core, never the services or the CLI.
"""
