"""The daemon freezes what start-up and loads leave, so collector passes stay short (collector.py)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
import weakref
from fabstir_node import collector
assert collector.settle() == 0 and gc.get_freeze_count() == 0  # off by default: nothing frozen
collector.enable()
frozen = collector.settle()
assert frozen == gc.get_freeze_count() > 1000, frozen  # the imported modules' objects, at least
class Node:
    pass
kept = [Node() for _ in range(100)]
assert collector.settle() >= frozen + 100  # a load's survivors join them
class Cycle:
    pass
garbage = Cycle()
garbage.me = garbage  # a reference cycle: garbage once dropped
gone = weakref.ref(garbage)
del garbage
collector.settle()
assert gone() is None  # collected by the full pass first, not frozen
print("ok")
"""


def test_settle_freezes_only_once_enabled():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
