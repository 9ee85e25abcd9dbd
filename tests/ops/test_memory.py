"""The allocator settings the daemon applies at start (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabstir_node import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_freed_large_buffer_goes_back_to_the_system():
    # In a fresh process: after one large free glibc would raise its mmap threshold and keep later
    # multi-MiB buffers in the heap; pinned, a 16 MiB buffer is returned the moment it is freed.
    script = """
import sys
from fabstir_node import memory
applied = memory.tune_allocator()
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1])
big = bytearray(64 << 20); del big          # glibc would now raise its threshold to 64 MiB
before = rss()
keep = []
for _ in range(20):
    buf = bytearray(16 << 20)                 # touched: zero-filled
    keep.append(bytearray(100))              # a small live allocation after it
    del buf
print(applied, rss() - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    applied, growth_kb = out.stdout.split()
    assert applied == "True"
    assert int(growth_kb) < 8 * 1024


def test_release_free_memory_is_safe_to_call():
    memory.release_free_memory()
    memory.release_free_memory()
