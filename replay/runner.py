"""A replay run: decisions from a feeder thread, sends on the event loop, results to Parquet.

Three parts, so that nothing slow sits on the loop that keeps the schedule:
  * the feeder (a thread) reads captured exchanges, decides (plan.Planner), restores time
    order and computes each job's due offset (schedule), and hands chunks to the loop;
  * the dispatcher (the loop) waits for each due time, journals the ids, submits to every
    target's pool, and waits when all connections are busy (--concurrency bounds it);
  * the writer (an executor thread) turns finished results into Parquet parts.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import math
import os
import random
import signal
import sys
import threading
import time
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import pyarrow as pa

from . import native
from .client import Pool, Target
from .plan import COLUMNS, SKIP_REASONS, Captured, Job, Planner, count_skip
from .results import Journal, Result, ResultParts, read_journal, recorded_ids, target_dir
from .schedule import Pacer, in_time_order

CHUNK = 256  # jobs per hand-over from the feeder to the loop
ROW_BATCH = 512  # recording rows per read, when Python plans them
PLANNED_BATCH = 4096  # ... and when planner.c does (workers stride over batches: one size per run)
ROWS_PER_PART = 20_000
BYTES_PER_PART = 64 << 20
LAG_SAMPLE = 200_000
_rng = random.Random(0)
SPIN = 0.0015  # s before a due time when timers give way to yielding (see Run._until)
FLUSH_EVERY = 5.0  # s: a killed run loses at most this much of its results (they stay journaled)
LEAD = 0.25  # s: how far ahead of its time a paced job goes to the native loop, which keeps the time


Chunk = Any  # list[tuple[Job, float]] (due offsets), or planner.c's Planned (--pace fast)


@dataclass
class TargetStats:
    target: Target
    sent: int = 0
    responses: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    lags: array = field(default_factory=lambda: array("d"))  # a uniform sample, at most LAG_SAMPLE
    lag_count: int = 0
    last_lag: float = 0.0
    interrupted_before: int = 0  # results recovered as `interrupted` from an earlier run
    already: int = 0  # ids an earlier run sent

    def record_batch(self, rb: "pa.RecordBatch") -> None:
        """`record` for a batch of the native loop's results, column by column."""
        errors = rb.column("error").to_pylist()
        statuses = rb.column("status").to_pylist()
        self.errors.update(e for e in errors if e is not None)
        self.statuses.update(s for e, s in zip(errors, statuses) if s is not None and (e is None or e == "too_large"))
        self.responses += sum(1 for e in errors if e is None or e == "too_large")
        due = rb.column("t_due")
        if due.null_count < len(due):
            for sent, d in zip(rb.column("t_send").to_pylist(), due.to_pylist()):
                if sent is not None and d is not None:
                    self.add_lag(sent - d)

    def record(self, r: Result) -> None:
        if r.error is None or r.error == "too_large":
            self.responses += 1
            if r.status is not None:
                self.statuses[r.status] += 1
        if r.error is not None:
            self.errors[r.error] += 1
        lag = r.lag
        if lag is not None:
            self.add_lag(lag)

    def add_lag(self, lag: float) -> None:
        """Exact percentiles up to LAG_SAMPLE requests, a uniform sample (Algorithm R) beyond:
        a mirror that runs for days keeps a bounded memory."""
        self.lag_count += 1
        self.last_lag = lag
        if len(self.lags) < LAG_SAMPLE:
            self.lags.append(lag)
        else:
            k = _rng.randrange(self.lag_count)
            if k < LAG_SAMPLE:
                self.lags[k] = lag

    def lag_ms(self, q: float) -> float | None:
        if not self.lags:
            return None
        s = sorted(self.lags)
        return 1000.0 * s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.target.url, "sent": self.sent, "responses": self.responses,
            "errors": dict(self.errors), "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "lag_ms": {"p50": _round(self.lag_ms(0.5)), "p99": _round(self.lag_ms(0.99)),
                       "max": _round(self.lag_ms(1.0))},
            "resumed": {"already_sent": self.already, "interrupted": self.interrupted_before},
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


class _Sink:
    """One target's results: buffered, written as parts by the shared writer thread."""

    def __init__(self, rec: Path, name: str, writer: concurrent.futures.ThreadPoolExecutor, tag: str) -> None:
        self.parts = ResultParts(target_dir(rec, name), tag)
        self.writer = writer
        self.rows: list[Result] = []
        self.batches: list[pa.RecordBatch] = []  # from the native loop
        self.batch_rows = 0
        self.bytes = 0
        self.futures: list[concurrent.futures.Future[None]] = []

    def add(self, r: Result) -> None:
        self.rows.append(r)
        if r.body:
            self.bytes += len(r.body)
        if len(self.rows) >= ROWS_PER_PART or self.bytes >= BYTES_PER_PART:
            self.flush()

    def add_batch(self, rb: pa.RecordBatch) -> None:
        self.batches.append(rb)
        self.batch_rows += rb.num_rows
        self.bytes += rb.column("body").nbytes
        if self.batch_rows >= ROWS_PER_PART or self.bytes >= BYTES_PER_PART:
            self.flush()

    def flush(self) -> None:
        if self.rows or self.batches:
            rows, batches = self.rows, self.batches
            self.rows, self.batches, self.bytes, self.batch_rows = [], [], 0, 0
            self.futures.append(self.writer.submit(self.parts.write, rows, batches))
        self.futures = [f for f in self.futures if not f.done() or f.exception() is not None]
        while len(self.futures) > 3 and self.futures[0].exception() is None:
            self.futures.pop(0)  # (exception() waits: the writer fell behind; so does the sender)

    def failure(self) -> BaseException | None:
        for f in self.futures:
            if f.done() and f.exception() is not None:
                return f.exception()
        return None


class Feeder(threading.Thread):
    """Decisions off the loop: reading Parquet, extracting pcaps and building request bytes
    take milliseconds per batch, which the schedule cannot spare."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: Iterable[Captured], planner: Planner,
                 pacer: Pacer, deliver: Callable[[Chunk | None], None],
                 shard: tuple[int, int] = (0, 1), fast: Any = None) -> None:
        super().__init__(name="replay-feeder", daemon=True)
        self.loop = loop
        self.source = source
        self.planner = planner
        self.fast = fast  # planner.c's Planner: whole batches of a recording, for the native loop
        self.pacer = pacer
        self.deliver = deliver
        self.shard = shard
        self.read = 0
        self.skips: Counter[str] = Counter()
        self.skipped_writes: Counter[str] = Counter()
        self.room = threading.Semaphore(8)  # chunks in flight to the loop
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def _admitted(self, source: Iterable[Captured]) -> Iterator[Captured]:
        for c in source:
            self.read += 1
            skip = self.planner.admit(c)
            if skip is not None:
                count_skip(skip, self.skips, self.skipped_writes)
                continue
            yield c
            if self.stop.is_set():
                return

    def run(self) -> None:
        """Every worker paces every admitted request (so the schedule's origin and a --rate's
        count are the same in all of them) and builds and sends only its own shard's."""
        index, count = self.shard
        if self.pacer.mode == "fast":
            background()
        size = 1 if self.pacer.mode == "live" else CHUNK  # live: each as it comes
        try:
            if self.fast is not None:  # (Run._fast_planner gives one only for a Recorded source)
                assert isinstance(self.source, Recorded)
                self._run_planned(self.source)
                return
            admitted: Iterable[Captured] = self._admitted(self.source)
            if self.pacer.mode == "captured":
                admitted = in_time_order(admitted, key=lambda c: c.t or 0.0)
            chunk: list[tuple[Job, float]] = []
            for c in admitted:
                off = self.pacer.offset(c.t or 0.0)
                if count > 1 and shard_of(c.id, count) != index:
                    continue
                chunk.append((self.planner.job(c), off))
                if len(chunk) >= size:
                    self._hand(chunk)
                    chunk = []
                if self.stop.is_set():
                    break
            if chunk:
                self._hand(chunk)
        except BaseException as e:  # reported by the run, as one line
            self.error = e
        finally:
            if not self.stop.is_set():
                self._hand(None)

    def _run_planned(self, source: "Recorded") -> None:
        """--pace fast to the native loop: planner.c decides and builds a batch at a time
        without the GIL, and the loop gets its jobs without a Python object per request. A
        batch it hands back (text beyond Latin-1) is planned here, as every other run's."""
        for batch in source.batches(PLANNED_BATCH):
            planned = native.plan_batch(self.fast, self.planner, batch)
            if planned is None:
                chunk: list[tuple[Job, float]] = []
                for c in self._admitted(captured_rows(batch)):
                    chunk.append((self.planner.job(c), self.pacer.offset(c.t or 0.0)))
                    if len(chunk) >= CHUNK:
                        self._hand(chunk)
                        chunk = []
                if chunk:
                    self._hand(chunk)
            else:
                self.read += planned.rows
                for reason, n in zip(SKIP_REASONS, planned.skips):
                    if n:
                        self.skips[reason] += n
                self.skipped_writes.update(planned.writes)
                if len(planned) or planned.refused is not None:
                    self._hand(planned)
            if self.stop.is_set():
                return

    def _hand(self, chunk: Chunk | None) -> None:
        while not self.room.acquire(timeout=0.2):
            if self.stop.is_set():
                return
        try:
            self.loop.call_soon_threadsafe(self.deliver, chunk)
        except RuntimeError:  # the loop is gone: the run ended
            self.stop.set()


def background() -> None:
    """Lower this thread's scheduling priority (Linux nice is per thread). With --pace fast
    the send loop, its target and these threads share the cores: the loop must get a core the
    moment an answer arrives, and the feeder and writer only have to keep up on average."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass


class Recorded:
    """The exchanges of a recording: as Captured rows, or as record batches (planner.c)."""

    def __init__(self, rec: Path, limit: int | None = None, stride: tuple[int, int] = (0, 1)) -> None:
        self.rec = rec
        self.limit = limit
        self.stride = stride  # (k, n): batches numbered k modulo n, so n workers share the input

    def batches(self, size: int) -> Iterator[pa.RecordBatch]:
        from capture.recording import exchange_batches

        # (batches decode faster in this thread than handed to arrow's pool and back)
        return exchange_batches(self.rec, COLUMNS, batch_size=size, limit=self.limit, stride=self.stride,
                                threads=False)

    def __iter__(self) -> Iterator[Captured]:
        """Small batches (the loop's thread shares the GIL), converted column by column (row
        dicts cost twice as much)."""
        for batch in self.batches(ROW_BATCH):
            yield from captured_rows(batch)


def captured_rows(batch: pa.RecordBatch) -> list[Captured]:
    """A Captured for every row of a batch of COLUMNS (headers as (name, value) pairs, no
    flags as an empty list)."""
    col = batch.column
    hdr = col("req_headers")
    offs = hdr.offsets.to_pylist()
    base = offs[0]
    # (the values the offsets point at: flatten() would drop those behind a null list)
    flat = hdr.values.slice(base, offs[-1] - base)
    pairs = list(zip(flat.field("name").to_pylist(), flat.field("value").to_pylist()))
    heads = [pairs[a - base : b - base] for a, b in zip(offs, offs[1:])]
    if hdr.null_count:  # a null list: no headers
        heads = [h if ok else [] for h, ok in zip(heads, _valid(hdr))]
    flags = [f or [] for f in col("flags").to_pylist()]
    return [Captured(*row) for row in zip(
        col("id").to_pylist(), col("server").to_pylist(), col("method").to_pylist(), col("target").to_pylist(),
        col("version").to_pylist(), heads, col("req_body").to_pylist(), col("t_req_start").to_pylist(), flags)]


def _valid(a: pa.Array) -> list[bool]:
    """Each row's validity bit (without pyarrow.compute, whose import costs 0.1 s)."""
    bits = a.buffers()[0]
    if bits is None:
        return [True] * len(a)
    raw = bits.to_pybytes()
    return [bool(raw[k >> 3] >> (k & 7) & 1) for k in range(a.offset, a.offset + len(a))]


def shard_of(exchange_id: str, count: int) -> int:
    return zlib.crc32(exchange_id.encode()) % count


@dataclass
class Options:
    concurrency: int = 10
    timeout: float = 10.0
    max_body: int = 64 << 20
    discard: bool = False
    allow_primary: bool = False
    live: bool = False  # mirror: a target's own traffic, if captured, is ignored, never looped back
    sender: str = "auto"  # "native" (the C loop, when usable), "asyncio" (replay.client), or auto


class Gate(Protocol):
    """How worker processes agree on one start instant (see replay.workers)."""

    def ready(self) -> None: ...

    def start_at(self) -> float | None: ...


@dataclass
class Outcome:
    """What a run did; the outcomes of worker processes merge into one."""

    stats: dict[str, TargetStats]
    read: int = 0
    skips: Counter[str] = field(default_factory=Counter)
    skipped_writes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    split_input: bool = False  # each worker read its own part of the input (counts add up)
    stopping: str | None = None  # why the run stopped before the end
    failure: str | None = None  # what went wrong (results kept)
    refused: tuple[str, str] | None = None  # (exchange id, server) captured at a target's address
    own_traffic: int = 0

    @classmethod
    def merge(cls, parts: list["Outcome"]) -> "Outcome":
        """Paced workers all read (and skip) the same exchanges and each sends its own shard;
        fast ones each read their own share of the input."""
        first = max(parts, key=lambda o: o.read)
        out = cls({}, first.read, Counter(first.skips), Counter(first.skipped_writes))
        if first.split_input:
            out.read = sum(o.read for o in parts)
            out.skips = sum((o.skips for o in parts), Counter())
            out.skipped_writes = sum((o.skipped_writes for o in parts), Counter())
        for o in parts:
            for name, st in o.stats.items():
                m = out.stats.get(name)
                if m is None:
                    out.stats[name] = m = TargetStats(st.target, already=st.already,
                                                      interrupted_before=st.interrupted_before)
                m.sent += st.sent
                m.responses += st.responses
                m.errors.update(st.errors)
                m.statuses.update(st.statuses)
                for lag in st.lags:  # (a sample of a sample, when a worker's was full)
                    m.add_lag(lag)
            out.elapsed = max(out.elapsed, o.elapsed)
            out.stopping = out.stopping or o.stopping
            out.failure = out.failure or o.failure
            out.refused = out.refused or o.refused
            out.own_traffic += o.own_traffic
        return out


class Run:
    """One process's replay: a feeder, a loop with a pool per target, a writer.

    `shard` = (index, count) makes it one of `count` worker processes (replay.workers)."""

    def __init__(self, rec: Path, targets: list[Target], source: Iterable[Captured], planner: Planner,
                 pacer: Pacer, opts: Options, progress: Callable[["Run"], None] | None = None,
                 shard: tuple[int, int] = (0, 1), gate: "Gate | None" = None, tag: str = "") -> None:
        self.rec = rec
        self.shard = shard  # which requests this process sends, of those it reads
        self.gate = gate
        self.tag = tag  # names this process's parts and journal apart from other workers
        self.targets = targets
        self.source = source
        self.planner = planner
        self.pacer = pacer
        self.opts = opts
        self.progress = progress
        self.stats = {t.name: TargetStats(t) for t in targets}
        self.sent_before: dict[str, set[str]] = {}
        self.stopping: str | None = None  # why the run stops early
        self.failure: str | None = None
        self.primary: set[tuple[str, int]] = set()
        self.started = 0.0
        self.elapsed = 0.0
        self.feeder: Feeder | None = None
        self.refused: tuple[str, str] | None = None  # (id, server) of a job captured at a target (not sent)
        self.own_traffic = 0  # live: captured exchanges that were our own requests to a target
        self.hurry = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self._stopped: asyncio.Event | None = None  # set by request_stop (wakes _sleep_until)
        self.chunks: asyncio.Queue[Chunk | None] | None = None
        self.native: native.NativeLoop | None = None

    # -- resume --------------------------------------------------------------------------
    def recover(self, write: bool = True) -> None:
        """Ids an earlier run journaled: never sent again. Those without a result (the run
        was killed first) get an `interrupted` result now, so every sent id has one (written
        once, by the parent, when there are workers)."""
        common: set[str] | None = None
        for t in self.targets:
            d = target_dir(self.rec, t.name)
            journaled = read_journal(d)
            recorded = recorded_ids(d)
            sent = journaled | recorded  # a result without a journal line was sent all the same
            self.sent_before[t.name] = sent
            self.stats[t.name].already = len(sent)
            lost = journaled - recorded if write else set()
            if lost:
                rows = [Result(i, t.name, error="interrupted",
                               error_detail="sent by an earlier run that stopped before the answer was recorded")
                        for i in sorted(lost)]
                ResultParts(d).write(rows)
                self.stats[t.name].interrupted_before = len(rows)
            common = sent if common is None else common & sent
        self.planner.done = frozenset(common or ())

    # -- the run -------------------------------------------------------------------------
    def execute(self, recover: bool = True) -> Outcome:
        for t in self.targets:
            self.primary |= {a for a in t.addresses()}
        self.recover(write=recover)
        try:
            import uvloop
        except ImportError:
            asyncio.run(self._main())
        else:
            uvloop.run(self._main())
        return self.outcome()

    def outcome(self) -> Outcome:
        f = self.feeder
        return Outcome(self.stats, read=f.read if f else 0, skips=f.skips if f else Counter(),
                       skipped_writes=f.skipped_writes if f else Counter(), elapsed=self.elapsed,
                       stopping=self.stopping, failure=self.failure, refused=self.refused,
                       own_traffic=self.own_traffic)

    def request_stop(self, why: str) -> None:
        if self.stopping is None:
            self.stopping = why
        elif why in ("SIGINT", "SIGTERM"):
            self.hurry = True  # a second signal: stop waiting for answers
        if self.feeder is not None:
            self.feeder.stop.set()
        if self.native is not None:  # what it holds ahead of its time is not sent now
            self.native.sender.cancel_pending()
        if self._stopped is not None:
            self._stopped.set()
        w = self._room_waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self.chunks is not None:
            self.chunks.put_nowait(None)  # wakes a dispatcher waiting for the feeder

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        if self.pacer.mode != "fast":  # the feeder and writer threads must not hold the loop long
            sys.setswitchinterval(0.0005)
        # Millions of short-lived objects and hardly a cycle: a full collection stalls the loop
        # for 15-25 ms (a late burst of requests) for nothing. As in extract.
        gc.freeze()
        gc.set_threshold(100_000, 50, 1000)
        writer = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="replay-writer", initializer=background if self.pacer.mode == "fast" else None)
        self.sinks = {t.name: _Sink(self.rec, t.name, writer, self.tag) for t in self.targets}
        self.journals = {t.name: Journal(target_dir(self.rec, t.name), self.tag) for t in self.targets}
        self.loop = loop
        self._stopped = asyncio.Event()
        self.pools: list[Any]
        if native.chosen(self.opts.sender, self.targets, self.pacer.mode, self.opts.live):
            self.native = native.NativeLoop(
                loop, self.targets, [self.journals[t.name].fd for t in self.targets], self.opts.concurrency,
                self.opts.timeout, self.opts.max_body, self.opts.discard, self._on_batch, self._wake,
                self._native_failure)
            self.pools = self.native.pools
        else:
            self.pools = [Pool(loop, t, self.opts.concurrency, self.opts.timeout, self.opts.max_body,
                               self.opts.discard, self._on_result, self._journal_for(t.name), self._unsent)
                          for t in self.targets]
            for p in self.pools:
                p.on_room = self._wake
        self.chunks = asyncio.Queue()
        self.feeder = Feeder(loop, self.source, self.planner, self.pacer, self.chunks.put_nowait, self.shard,
                             self._fast_planner())
        self.started = time.monotonic()
        self.wall0, self.mono0 = time.time(), time.monotonic()  # until the first job sets them
        ticker = loop.create_task(self._tick())
        if threading.current_thread() is threading.main_thread():  # mirror runs us in a thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        self.feeder.start()
        try:
            await self._dispatch(loop)
            await self._drain()
        finally:
            ticker.cancel()
            for p in self.pools:
                p.close()
            for s in self.sinks.values():
                s.flush()
            writer.shutdown(wait=True)
            for j in self.journals.values():
                j.close()
            self.elapsed = time.monotonic() - self.started
            for s in self.sinks.values():
                e = s.failure()
                if e is not None and self.failure is None:
                    self.failure = _describe_write_error(self.rec, e)
            if self.feeder.error is not None and self.failure is None:
                self.failure = str(self.feeder.error) or type(self.feeder.error).__name__

    async def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.feeder is not None and self.chunks is not None
        room = self._room()
        first = True
        while True:
            chunk = await self.chunks.get()
            if chunk is not None:
                self.feeder.room.release()
            if first:  # the schedule starts when there is something to send, not before
                first = False
                await self._start()
            if chunk is None or self.stopping:
                return
            if self.pacer.mode == "fast":  # nothing to wait for but room: a chunk at a time
                while self._busiest() + len(chunk) > room and self._busiest() and not self.stopping:
                    self._room_waiter = loop.create_future()
                    await self._room_waiter
                if self.stopping:
                    return
                self._submit(chunk)
                continue
            batch: list[tuple[Job, float]] = []
            for job, off in chunk:
                due = self.mono0 + off
                if self.native is not None:  # the C loop keeps each job's time: hand on LEAD ahead
                    if due - LEAD > time.monotonic():
                        if batch:
                            self._submit(batch)
                            batch = []
                        await self._sleep_until(due - LEAD / 2)  # (coarse: a wake-up per LEAD / 2)
                        if self.stopping:
                            return
                elif due > time.monotonic():
                    if batch:
                        self._submit(batch)
                        batch = []
                    await self._until(due)
                    if self.stopping:
                        return
                batch.append((job, off))
                if len(batch) + self._busiest() >= room:
                    self._submit(batch)
                    batch = []
                    while self._busiest() >= room and not self.stopping:
                        self._room_waiter = loop.create_future()
                        await self._room_waiter
                    if self.stopping:
                        return
            if batch:
                self._submit(batch)

    async def _start(self) -> None:
        """Fix the schedule's origin: now, or (workers) the instant the parent names once
        every worker is ready, so that all of them keep one schedule."""
        if self.gate is not None:
            self.gate.ready()
            while (at := self.gate.start_at()) is None and not self.stopping:
                await asyncio.sleep(0.001)
            if at is not None:
                self.wall0, self.mono0 = at, time.monotonic() + (at - time.time())
                await self._until(self.mono0)
                return
        self.wall0, self.mono0 = time.time(), time.monotonic()

    async def _until(self, due: float) -> None:
        """Wait until `due` (time.monotonic()). The loop's timers tick in whole milliseconds
        (uvloop's clock too), so they take us to SPIN before the due time and the rest is
        spent yielding to the loop: responses are still read, and the send is on time."""
        while not self.stopping:
            wait = due - time.monotonic()
            if wait <= 0:
                return
            if wait > 0.5:
                await asyncio.sleep(0.5)  # long gaps in slices: a stop is heard
            elif wait > SPIN:
                await asyncio.sleep(wait - SPIN)
            else:
                await asyncio.sleep(0)

    def _fast_planner(self) -> Any:
        """planner.c for a fresh --pace fast run to the native loop from a recording (a resumed
        run filters ids per target, and pcaps are extracted row by row: Python plans those)."""
        if (self.native is None or self.pacer.mode != "fast" or self.shard[1] != 1
                or not isinstance(self.source, Recorded) or any(self.sent_before.values())):
            return None
        return native.fast_planner(self.planner, None if self.opts.allow_primary else sorted(self.primary))

    async def _sleep_until(self, at: float) -> None:
        """Wait until `at` (time.monotonic()) with the loop's plain timers, or a stop."""
        wait = at - time.monotonic()
        if wait > 0 and not self.stopping and self._stopped is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), wait)

    def _room(self) -> int:
        """Requests in flight per target, waiting ones included. The native loop gets a deep
        queue: it must never wait for Python to hand it the next request."""
        return self.opts.concurrency + 8192 if self.native is not None else self.opts.concurrency * 2

    def _busiest(self) -> int:
        return max(p.in_flight for p in self.pools)

    def _wake(self) -> None:
        w = self._room_waiter
        if w is not None and not w.done() and self._busiest() < self._room():
            w.set_result(None)

    def _submit(self, batch: Chunk) -> None:
        if not isinstance(batch, list):  # planner.c's: checked there (no resume, not live)
            if batch.refused is not None:
                self.refused = batch.refused
                self.request_stop("primary")
                return
            for pool in self.pools:
                pool.submit_planned(batch)
            return
        if self.opts.live:
            own = [j for j, _ in batch if _addr(j.server) in self.primary]
            if own:
                self.own_traffic += len(own)
                batch = [(j, off) for j, off in batch if _addr(j.server) not in self.primary]
        elif not self.opts.allow_primary:
            for job, _ in batch:
                if _addr(job.server) in self.primary:
                    self.refused = (job.id, job.server)
                    self.request_stop("primary")
                    return
        for pool in self.pools:
            name = pool.target.name
            before = self.sent_before.get(name) or ()
            todo = [(j, off) for j, off in batch if j.id not in before] if before else batch
            if not todo:
                continue
            mode = self.pacer.mode
            # fast has no schedule to lag behind; live lags behind the capture itself
            dues = [None if mode == "fast" else job.t if mode == "live" else self.wall0 + off for job, off in todo]
            if self.native is not None and mode != "fast":  # the loop sends each at its time
                pool.submit_batch([job for job, _ in todo], dues, [self.mono0 + off for _, off in todo])
            else:
                pool.submit_batch([job for job, _ in todo], dues)

    def _journal_for(self, name: str) -> Callable[[Job], None]:
        """Called by a connection just before it writes a request (OSError: not sent)."""
        journal = self.journals[name]
        stats = self.stats[name]

        def sending(job: Job) -> None:
            journal.add((job.id,))
            stats.sent += 1
        return sending

    def _unsent(self, job: Job, e: OSError) -> None:
        if self.failure is None:
            self.failure = _describe_write_error(self.rec, e)
        self.request_stop("journal failed")

    def _on_result(self, r: Result) -> None:
        self.stats[r.target].record(r)
        self.sinks[r.target].add(r)

    def _on_batch(self, name: str, rb: pa.RecordBatch) -> None:
        self.stats[name].record_batch(rb)
        self.sinks[name].add_batch(rb)
        assert self.native is not None
        for p in self.native.pools:
            self.stats[p.target.name].sent = p.sent

    def _native_failure(self, why: str) -> None:
        """The native loop could not write a journal: as `_unsent`."""
        if self.failure is None:
            self.failure = f"{self.rec}: {why.lower()}; results written so far are kept"
        self.request_stop("journal failed")

    async def _drain(self) -> None:
        """Wait for what is in flight: each request ends by --timeout once it has a connection,
        and waiting ones get theirs in turn. A second stop signal cuts this short: what was
        sent is then recorded as `interrupted`, and what was not is left for a re-run."""
        if self.native is not None:  # (a stop has cancelled what had not left: request_stop)
            self.native.sender.close_input()  # nothing more comes: it reports the last answers at once
        while any(p.in_flight for p in self.pools) and not self.hurry:
            await asyncio.sleep(0.01)
        if self.hurry:
            for p in self.pools:
                p.abandon("interrupted", "the run was stopped before the answer came")

    async def _tick(self) -> None:
        last_flush = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            if self.progress is not None:
                self.progress(self)
            now = time.monotonic()
            if now - last_flush >= FLUSH_EVERY:
                last_flush = now
                for s in self.sinks.values():
                    s.flush()
                    e = s.failure()
                    if e is not None and self.failure is None:
                        self.failure = _describe_write_error(self.rec, e)
                        self.request_stop("write failed")

    def current_lag_ms(self) -> float:
        lags = [s.last_lag for s in self.stats.values() if s.lag_count]
        return 1000.0 * max(lags) if lags else 0.0

    def stop_threadsafe(self, why: str) -> None:
        """request_stop from another thread (mirror's capture agent)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.request_stop, why)
            except RuntimeError:  # closed meanwhile: the run is over
                pass


def _addr(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _describe_write_error(rec: Path, e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"{rec}: {os.strerror(e.errno).lower()}; results written so far are kept"
    return f"writing results failed: {e}"
