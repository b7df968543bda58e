"""System tests: appimg driven as a user drives it — the command line, real FUSE
mounts, sandboxes, daemons and stock tools, as root and as a non-root user.
"""
