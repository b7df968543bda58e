"""What appimg does with images on this host (spec/overlay-rules.md, spec/run.md,
spec/xdg-index.md).

The merged view (:mod:`.view`), mounting it (:mod:`.mount`), running an app in
it (:mod:`.run`), the per-user store (:mod:`.store`), desktop exports
(:mod:`.exports`), the extended XDG search path (:mod:`.xdgpath`) and
``appimg verify`` as a call (:mod:`.verify`). Built on the format core and host
policy; the CLI is the only layer above.
"""
