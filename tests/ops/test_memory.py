"""The allocator settings the daemon applies at start (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabstir_node import memory

#: What each script below starts with: the module, and the process's anonymous resident kB.
_PRELUDE = """
from fabstir_node import memory
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1])
"""


def _in_fresh_process(script: str) -> list[str]:
    """What ``script`` (after :data:`_PRELUDE`) prints, in a process of its own (allocator settings
    are per process), split into words."""
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + script], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_freed_large_buffer_goes_back_to_the_system():
    # In a fresh process: after one large free glibc would raise its mmap threshold and keep later
    # multi-MiB buffers in the heap; pinned, a 16 MiB buffer is returned the moment it is freed.
    applied, growth_kb = _in_fresh_process("""
applied = memory.tune_allocator()
big = bytearray(64 << 20); del big          # glibc would now raise its threshold to 64 MiB
before = rss()
keep = []
for _ in range(20):
    buf = bytearray(16 << 20)                 # touched: zero-filled
    keep.append(bytearray(100))              # a small live allocation after it
    del buf
print(applied, rss() - before)
""")
    assert applied == "True"
    assert int(growth_kb) < 8 * 1024


def test_release_free_memory_is_safe_to_call():
    memory.release_free_memory()
    memory.release_free_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_decode_worker_reuses_its_large_buffers_and_trims_when_idle():
    # The worker's setting: a 36 MiB buffer freed and allocated again is the same heap memory (no
    # new mapping, so no page faults), and the idle trim hands it back.
    applied, faults, trimmed_kb = _in_fresh_process("""
applied = memory.tune_worker_allocator()
def faults():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
first = bytearray(36 << 20); del first
before = faults()
for _ in range(5):
    again = bytearray(36 << 20); del again
reused = faults() - before
held = rss()
memory.release_free_memory()
print(applied, reused, held - rss())
""")
    assert applied == "True"
    assert int(faults) < 1000  # a fresh 36 MiB mapping each time would fault ~9,000 pages per buffer
    assert int(trimmed_kb) > 30 * 1024
