"""A one-line progress bar for terminals; silent elsewhere."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """``bar.update(done, total, label)`` redraws one line on a TTY; ``close()`` ends it."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = getattr(self.stream, "isatty", lambda: False)()
        self._drawn = False

    def update(self, done: int, total: int, label: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        filled = int(self.width * min(done, total) / total)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} {label[:40]:<40}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
