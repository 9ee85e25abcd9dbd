"""The decode worker processes of one daemon, and the loads' way to them.

Decoding a chunk is mostly Python (the CBOR walker or simdjson's tape, ids and metadata, record
digests), so decoding threads share one core: a 1M-vector load spent ~23 s of one core on it while
the other idled, and its threads' GIL hand-offs slowed the event loop too.  A
:class:`DecoderPool` runs :func:`~fabstir_node.workers.decode.decode_job` in worker processes
instead (``python -m fabstir_node.workers.decode``), one per core by default
(``FABSTIR_DECODE_WORKERS``).

* **Ownership.** :meth:`DecoderPool.run` runs in the daemon's nursery; the processes are its: they
  start a second after the daemon listens, or at the first load if that comes sooner (:meth:`warm`,
  in the pool's own nursery; each takes ~0.3 s of CPU to import), and stay for the next one; when
  the pool stops every one of them is killed and reaped.  A pool that is not running (a
  :class:`~.node.Node` built without a daemon, or 0 workers) reports ``running`` False and the
  loader decodes in threads, with the same function.
* **One job per worker**, at most ``size`` at once (a ``CapacityLimiter``).  A job's chunk bytes go
  down the worker's stdin and its rows come back on its stdout as frames (``workers/frames.py``):
  about 50 MB of pipe traffic per SDK chunk, a few ms of copying against 100-200 ms of decoding.
* **Failures.** Bad input is the worker's reply (a :class:`FabstirError`, the same the thread path
  raises); the worker goes back to the pool.  A job cancelled mid-way (the session left, the load
  timed out) or a worker that died or answered out of step is killed and reaped, and the next job
  gets a new one; a worker's crash fails its load (``INTERNAL_ERROR``), never the daemon.  A worker
  that cannot be started (a process limit, say) is logged (``decode_workers_unavailable``) and jobs
  are decoded in threads for a minute.
* **A previous version** (a new version's load, ``lineage.py``) is named to each worker once per load
  (its cache key and directory; the worker opens it and builds its record digest lookup), and
  dropped again when the last load that needed it ends (:meth:`share`, :meth:`unshare`): a 1M-vector
  lookup is ~150 MB in each worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import attrs
import trio

from ..logging import get_logger
from ..storage.direct import Direct
from ..workers import frames
from ..workers.decode import LOOKUPS, ChunkJob, DecodedChunk, read_result

log = get_logger(__name__)

__all__ = ["DecoderPool", "Known", "WorkersUnavailable", "pool_size"]

#: Each pipe's buffer (Linux's default unprivileged maximum): fewer wake-ups per chunk.
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def pool_size(setting: int | None) -> int:
    """Workers for a ``decode_workers`` setting (None: one per core)."""
    return max(1, os.cpu_count() or 1) if setting is None else setting


#: After a worker failed to start, jobs are decoded in threads for this long before trying again.
RETRY_START_SECONDS = 60.0
#: How long a new worker may take to import its modules and say it is ready (~0.25 s here).
READY_SECONDS = 30.0


class WorkersUnavailable(Exception):
    """No worker process could be started: decode this job in a thread."""


@attrs.frozen
class Known:
    """A previous version a load recognises records of: its cache key (``token``) and disk-cache
    ``directory``, which a worker opens for the version's record digests, rows and metadata."""

    token: str
    directory: str


class _Worker:
    """One worker process and the ends of its pipes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin: Any = process.stdin
        self.stdout: Any = process.stdout
        #: Tokens of the record digests this worker holds, oldest first (it keeps ``LOOKUPS``).
        self.known: list[str] = []
        #: How long the process took to say it was ready (its imports).
        self.ready_ms: float | None = None
        ends: tuple[Any, ...] = (self.stdin, self.stdout)
        for end in ends:
            try:
                fcntl.fcntl(end.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)  # trio's FdStream
            except OSError:
                pass  # a smaller pipe only means more wake-ups

    async def send(self, pieces: list[Any]) -> None:
        for piece in pieces:
            if len(piece):
                await self.stdin.send_all(piece)

    async def _exactly(self, size: int) -> bytearray:
        """The next ``size`` bytes of the worker's output, read straight into one buffer.

        With ``readv`` on the pipe's (non-blocking) descriptor rather than the stream's
        ``receive_some``, which returns each read as a new ``bytes`` to be copied again: at 1M
        vectors that was 2 GB of fresh buffers and copies, ~2 s of the daemon's CPU."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        fd = self.stdout.fileno()
        got = 0
        while got < size:
            await trio.lowlevel.wait_readable(fd)
            try:
                count = os.readv(fd, [view[got:]])
            except BlockingIOError:
                continue
            if not count:
                raise frames.FrameError("the decode worker ended its output")
            got += count
        view.release()
        return buffer

    async def receive(self) -> tuple[dict[str, Any], list[memoryview]]:
        head = await self._exactly(frames.header_length(await self._exactly(frames.PREFIX_SIZE)))
        header, sizes = frames.parse_header(head)
        return header, frames.split(await self._exactly(sum(sizes)), sizes)

    async def kill(self) -> None:
        """Kill and reap the process (shielded: also when the caller is cancelled)."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            for end in (self.stdin, self.stdout):
                await end.aclose()


class DecoderPool:
    """Up to ``size`` decode worker processes (0: none; the loader decodes in threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._limiter = trio.CapacityLimiter(max(1, size))
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._starting = 0
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._shared: Counter[str] = Counter()
        #: After a worker failed to start (e.g. the process limit): decode in threads until then.
        self._unavailable_until = float("-inf")

    @property
    def running(self) -> bool:
        """Whether jobs go to worker processes (else the caller decodes in a thread)."""
        return self._nursery is not None and self.size > 0 and trio.current_time() >= self._unavailable_until

    @property
    def workers(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        """The worker processes' ids (the benchmark adds their memory to the daemon's)."""
        return [w.process.pid for w in self._workers]

    async def run(
        self, *, warm_after: float | None = None, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the workers until cancelled; then kill and reap every one.

        ``warm_after``: start the workers that many seconds from now if no load did before (a daemon
        starts listening first; its first load then finds them ready).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                if warm_after is not None:
                    await trio.sleep(warm_after)
                    self.warm()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            workers, self._idle = list(self._workers), []
            self._workers.clear()
            for worker in workers:
                await worker.kill()

    def warm(self) -> None:
        """Start the missing workers now, in the background (a load is about to need them)."""
        if not self.running:
            return
        assert self._nursery is not None
        for _ in range(self.size - len(self._workers) - self._starting):
            self._starting += 1
            self._nursery.start_soon(self._start_spare)

    async def _start_spare(self) -> None:
        try:
            worker = await self._start()
        except WorkersUnavailable:
            return
        finally:
            self._starting -= 1
            self._notify()
        self._idle.append(worker)
        self._notify()
        log.info("decode_worker_started", pid=worker.process.pid, workers=len(self._workers), size=self.size,
                 ready_ms=worker.ready_ms)

    async def _start(self) -> _Worker:
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "fabstir_node.workers.decode"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as exc:
            self._unavailable_until = trio.current_time() + RETRY_START_SECONDS
            log.warning("decode_workers_unavailable", error=str(exc), retry_seconds=RETRY_START_SECONDS)
            raise WorkersUnavailable(str(exc)) from exc
        worker = _Worker(process)
        self._workers.add(worker)
        started = trio.current_time()
        try:
            # the worker says when its imports are done: until then a job would only wait in its pipe
            with trio.fail_after(READY_SECONDS):
                header, _ = await worker.receive()
            if header.get("ready") is not True:
                raise frames.FrameError("the decode worker's first frame is not its ready frame")
        except (trio.TooSlowError, frames.FrameError, trio.BrokenResourceError, trio.ClosedResourceError,
                OSError, ValueError) as exc:
            await self._discard(worker)
            self._unavailable_until = trio.current_time() + RETRY_START_SECONDS
            log.warning("decode_workers_unavailable", error=f"{type(exc).__name__}: {exc}",
                        retry_seconds=RETRY_START_SECONDS)
            raise WorkersUnavailable(str(exc)) from exc
        except BaseException:  # cancelled while it started: no half-started worker stays behind
            await self._discard(worker)
            raise
        worker.ready_ms = round((trio.current_time() - started) * 1000, 1)
        return worker

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _take(self) -> _Worker:
        while True:
            if self._idle:
                return self._idle.pop()
            if len(self._workers) + self._starting < self.size:
                self._starting += 1
                try:
                    return await self._start()
                finally:
                    self._starting -= 1
            await self._changed.wait()  # a spare is starting, or a job is ending (a load's deadline bounds this)

    async def _give_back(self, worker: _Worker) -> None:
        with trio.CancelScope(shield=True):  # a few bytes into an empty pipe: a cancel must not cut a frame
            for token in [t for t in worker.known if not self._shared[t]]:
                worker.known.remove(token)
                await worker.send(frames.encode({"op": "forget", "token": token}))
        self._idle.append(worker)
        self._notify()

    async def _discard(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        await worker.kill()
        self._notify()

    def share(self, token: str) -> None:
        """A load will name ``token``'s digests in its jobs (pair with :meth:`unshare`)."""
        self._shared[token] += 1

    async def unshare(self, token: str) -> None:
        """That load is over: idle workers drop the digests once no load needs them."""
        self._shared[token] -= 1
        if self._shared[token] > 0:
            return
        del self._shared[token]
        for worker in [w for w in self._idle if token in w.known]:
            self._idle.remove(worker)
            try:
                await self._give_back(worker)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._discard(worker)

    async def decode(
        self, job: ChunkJob, raw: bytes | bytearray | memoryview | Direct, key: bytes | None,
        known: Known | None = None, *, timeout: float = 30.0,
    ) -> DecodedChunk:
        """Run ``job`` on a worker; raises the job's :class:`FabstirError` for bad input.

        ``raw`` may be a :class:`~fabstir_node.storage.direct.Direct`: the worker reads the chunk
        itself (``timeout`` per socket operation) and a failed read raises ``DirectFailed``.
        """
        if isinstance(raw, Direct):
            # the store's connection limit covers the worker's GET
            async with raw.limiter if raw.limiter is not None else contextlib.nullcontext():
                result = await self._run(job, {"direct": raw.spec(), "timeout": timeout}, [], key, known)
            if raw.record is not None and result.fetched is not None:
                raw.record(result.fetched[0])
            return result
        return await self._run(job, {}, [raw], key, known)

    async def _run(
        self, job: ChunkJob, extra: dict[str, Any], buffers: list[Any], key: bytes | None, known: Known | None
    ) -> DecodedChunk:
        async with self._limiter:
            worker = await self._take()
            healthy = False
            try:
                if known is not None and known.token not in worker.known:
                    await worker.send(frames.encode({"op": "known", **attrs.asdict(known)}))
                    worker.known = [*worker.known, known.token][-LOOKUPS:]
                request = {"op": "decode", "job": attrs.asdict(job), "known": None if known is None else known.token,
                           **extra}
                await worker.send(frames.encode(request, buffers if key is None else [*buffers, key]))
                reply, buffers = await worker.receive()
                healthy = True
                return read_result(reply, buffers)
            except (trio.BrokenResourceError, trio.ClosedResourceError, frames.FrameError, OSError) as exc:
                log.error("decode_worker_failed", pid=worker.process.pid, error=type(exc).__name__)
                raise RuntimeError("a decode worker failed") from exc
            finally:
                if healthy:
                    await self._give_back(worker)
                else:
                    await self._discard(worker)
