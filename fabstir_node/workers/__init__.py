"""Worker processes of the daemon: CPU-bound work that must not share the daemon's GIL.

A load's chunks are decoded here (``decode.py``), in as many long-lived processes as the machine
has cores (``service/decoders.py`` starts and owns them).  A worker speaks length-prefixed frames
over its stdin and stdout (``frames.py``); its only other I/O is reading a chunk the daemon pointed
it to (``storage/direct.py``: one GET from the bridge, or a file the local store opened).  Nothing
here imports Trio.
"""
