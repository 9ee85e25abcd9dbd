"""Background work runs under SCHED_IDLE (Linux), and threads get their policy back."""

from __future__ import annotations

import json
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


def test_the_rule_for_leaving_idle():
    import resource

    assert priority.may_leave_idle(0, 0, 1 << 23)  # CAP_SYS_NICE
    assert not priority.may_leave_idle(0, 0, 0)  # an unprivileged daemon with the default RLIMIT_NICE
    assert priority.may_leave_idle(20, 0, 0) and not priority.may_leave_idle(19, 0, 0)
    assert priority.may_leave_idle(10, 10, 0)  # nice 10 is within a limit of 10
    assert priority.may_leave_idle(resource.RLIM_INFINITY, 0, 0)


@linux_only
def test_a_thread_that_could_not_be_restored_is_never_lowered(monkeypatch):
    monkeypatch.setattr(priority, "can_leave_idle", lambda: False)
    tid = threading.get_native_id()
    before = os.sched_getscheduler(tid)
    with priority.idle_thread() as took:
        assert not took and os.sched_getscheduler(tid) == before


_UNPRIVILEGED = """
import os, sys, threading
sys.path.insert(0, sys.argv[1])
from fabstir_node import priority
tid = threading.get_native_id()
with priority.idle_thread() as took:
    inside = os.sched_getscheduler(tid)
print(priority.can_leave_idle(), took, inside, os.sched_getscheduler(tid))
"""


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as an unprivileged user")
def test_an_unprivileged_process_keeps_its_threads_at_normal_priority():
    # The real kernel rule, as the daemon meets it under systemd or in its container (no CAP_SYS_NICE,
    # RLIMIT_NICE 0): a child as user nobody, with only the standard library and this module.
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="fabstir-priority-"))  # pytest's tmp_path is closed to nobody
    try:
        package = root / "fabstir_node"
        package.mkdir()
        (package / "__init__.py").write_text("")
        shutil.copy(Path(priority.__file__), package / "priority.py")
        for path in (root, package, package / "__init__.py", package / "priority.py"):
            os.chmod(path, 0o755)
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        done = subprocess.run(
            [python, "-c", _UNPRIVILEGED, str(root)], user=65534, capture_output=True, text=True,
            cwd=root, timeout=30,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"user nobody cannot run {python}")
    assert done.returncode == 0, done.stderr
    can, took, inside, after = done.stdout.split()
    assert (can, took) == ("False", "False")
    assert int(inside) == int(after) == os.SCHED_OTHER


def test_a_background_process_gets_one_blas_thread_and_keeps_the_rest_of_the_environment(monkeypatch):
    monkeypatch.setenv("FABSTIR_TEST_MARK", "kept")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    env = priority.background_env()
    assert env["FABSTIR_TEST_MARK"] == "kept" and env["OPENBLAS_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "8"  # this process's own is left alone
    seen = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert seen.stdout.split() == ["1", "1"]


@linux_only
@pytest.mark.skipif(not priority.can_leave_idle(), reason="this process may not put a thread under SCHED_IDLE and back")
def test_a_background_hash_runs_idle_even_after_a_normal_thread_hashed_first(tmp_path):
    """The disk cache's digests (``disk_cache._digest``) hash on threads as idle as their caller, also when
    a normal thread hashed first (a session opening a saved database): blake3's shared pool would keep
    that first caller's priority, and every later background save would hash at normal priority."""
    script = (
        "import json, os, sys, threading, time\n"
        "from pathlib import Path\n"
        "from fabstir_node.priority import idle_thread\n"
        "from fabstir_node.storage.disk_cache import _digest\n"
        "path = Path(sys.argv[1]); path.write_bytes(os.urandom(1 << 20) * 48)\n"
        "_digest(path); time.sleep(0.3)\n"  # a normal thread first (an open of a saved database)
        "inside, done = threading.Event(), threading.Event(); me = threading.get_native_id(); seen = set()\n"
        "def hash_idle():\n"
        "    with idle_thread():\n"
        "        inside.set()\n"
        "        for _ in range(40): _digest(path)\n"
        "        done.set()\n"
        "threading.Thread(target=hash_idle).start(); inside.wait()\n"
        "while not done.is_set():\n"
        "    for tid in os.listdir('/proc/self/task'):\n"
        "        try:\n"
        "            state = open(f'/proc/self/task/{tid}/stat').read().rsplit(')', 1)[1].split()[0]\n"
        "            if state == 'R' and int(tid) != me: seen.add(os.sched_getscheduler(int(tid)))\n"
        "        except (OSError, IndexError): pass\n"
        "print(json.dumps(sorted(seen)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "rows.bin")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    seen = json.loads(out)
    assert os.SCHED_IDLE in seen  # the sampling saw the hashing run
    assert seen == [os.SCHED_IDLE], f"hashing threads ran under policies {seen}"
