"""Worker processes of the daemon: CPU-bound work that must not share the daemon's GIL.

A load's chunks are decoded here (``decode.py``), in as many long-lived processes as the machine
has cores (``service/decoders.py`` starts and owns them).  A worker speaks length-prefixed frames
over its stdin and stdout (``frames.py``) and does no other I/O but reading the previous version's
record digests from the disk cache.  Nothing here imports Trio.
"""
