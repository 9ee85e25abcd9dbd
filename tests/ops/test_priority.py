"""Background work runs under SCHED_IDLE (Linux), and threads get their policy back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from fabstir_node import priority

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux only")


@linux_only
def test_idle_thread_applies_to_the_calling_thread_only_and_is_undone():
    seen = {}

    def worker():
        tid = threading.get_native_id()
        before = os.sched_getscheduler(tid)
        with priority.idle_thread() as took:
            seen["inside"] = os.sched_getscheduler(tid)
            seen["main"] = os.sched_getscheduler(main_tid)
            seen["took"] = took
        seen["after"], seen["before"] = os.sched_getscheduler(tid), before

    main_tid = threading.get_native_id()
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["took"] and seen["inside"] == os.SCHED_IDLE
    assert seen["main"] != os.SCHED_IDLE and seen["after"] == seen["before"] != os.SCHED_IDLE


@linux_only
def test_idle_thread_is_undone_when_the_body_raises():
    tid = threading.get_native_id()
    before = os.sched_getscheduler(tid)
    with pytest.raises(RuntimeError):
        with priority.idle_thread():
            raise RuntimeError("boom")
    assert os.sched_getscheduler(tid) == before


@linux_only
def test_idle_process_reaches_the_threads_a_child_starts_later():
    script = (
        "import os, sys, threading, time\n"
        "sys.stdin.readline()\n"  # wait until the parent has set the policy
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(os.sched_getscheduler(threading.get_native_id())))\n"
        "t.start(); t.join()\n"
        "print(os.sched_getscheduler(0), out[0])\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert priority.idle_process(child.pid)
    out, _ = child.communicate("go\n", timeout=30)
    assert out.split() == [str(os.SCHED_IDLE)] * 2
    assert not priority.idle_process(child.pid)  # gone: False, no exception
