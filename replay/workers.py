"""Replay on several cores: worker processes, each a Run over its shard of the exchanges.

One Python process tops out near one core, and a replayer that is slower than the service it
tests measures itself. Workers split the exchanges by a hash of their id and the connections
evenly; every worker paces every request (so the schedule is the same in all), builds and
sends only its own, and writes its own result parts and journal (`part-…-wN`,
`sent-wN.log`). The parent recovers an earlier run's interrupted requests first, shows the
progress from counters the workers update, forwards signals, and merges their outcomes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .client import Target
from .plan import Planner
from .runner import Options, Outcome, Recorded, Run
from .schedule import Pacer

FIELDS = 4  # per worker: read, sent, responses, errors
START_WAIT = 60.0  # s the parent waits for every worker to be ready before starting anyway


@dataclass
class Spec:
    rec: Path
    targets: list[Target]
    planner: Planner
    pace: tuple[str, float, float | None]  # Pacer(mode, speed, rate)
    opts: Options
    limit: int | None
    shard: tuple[int, int]


class SharedGate:
    """Workers say they are ready (their first requests are built); the parent then names a
    start instant a little ahead, and every worker's schedule starts there."""

    def __init__(self, ready: Any, start: Any) -> None:
        self._ready = ready  # a shared int: workers ready
        self._start = start  # a shared double: the start instant (epoch s), 0 until named

    def ready(self) -> None:
        with self._ready.get_lock():
            self._ready.value += 1

    def start_at(self) -> float | None:
        v = float(self._start.value)
        return v if v > 0 else None

    def count_ready(self) -> int:
        return int(self._ready.value)

    def start(self, at: float) -> None:
        self._start.value = at


def _die_with_parent() -> None:
    """A worker whose parent was SIGKILLed must not go on sending unsupervised."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before we asked
        os._exit(1)


def _work(spec: Spec, counters: Any, results: Any, gate: SharedGate) -> None:
    _die_with_parent()
    i = spec.shard[0]

    def progress(run: Run) -> None:
        f = run.feeder
        counters[i * FIELDS] = f.read if f else 0
        counters[i * FIELDS + 1] = sum(s.sent for s in run.stats.values())
        counters[i * FIELDS + 2] = sum(s.responses for s in run.stats.values())
        counters[i * FIELDS + 3] = sum(sum(s.errors.values()) for s in run.stats.values())

    pacer = Pacer(*spec.pace)
    if pacer.mode == "fast":  # no schedule to share: each worker reads only its own batches
        source, shard = Recorded(spec.rec, spec.limit, spec.shard), (0, 1)
    else:  # every worker paces every request, and sends those whose id hashes to it
        source, shard = Recorded(spec.rec, spec.limit), spec.shard
    run = Run(spec.rec, spec.targets, source, spec.planner, pacer, spec.opts, progress, shard, gate, f"-w{i}")
    try:
        outcome = run.execute(recover=False)
        outcome.split_input = pacer.mode == "fast"
        progress(run)
    except BaseException as e:  # the parent reports it in one line
        outcome = run.outcome()
        outcome.failure = f"worker {i}: {e or type(e).__name__}"
    results.put(outcome)


def split(concurrency: int, workers: int) -> list[int]:
    """Connections per worker, adding up to `concurrency`."""
    return [concurrency // workers + (1 if k < concurrency % workers else 0) for k in range(workers)]


def run_workers(rec: Path, targets: list[Target], planner: Planner, pacer: Pacer, opts: Options,
                limit: int | None, workers: int,
                progress: Callable[[int, int, int, int], None] | None = None) -> Outcome:
    workers = max(1, min(workers, opts.concurrency))
    # The parent recovers an earlier run's interrupted requests, once, before any worker reads.
    first = Run(rec, targets, iter(()), planner, pacer, opts)
    first.recover(write=True)
    ctx = mp.get_context("spawn")  # not fork: pyarrow's and the loop's threads do not survive one
    counters = ctx.Array("q", workers * FIELDS, lock=False)
    results = ctx.Queue()
    gate = SharedGate(ctx.Value("i", 0), ctx.Value("d", 0.0))
    pace = (pacer.mode, pacer.speed, pacer.rate)
    procs = []
    for k, conc in enumerate(split(opts.concurrency, workers)):
        spec = Spec(rec, targets, replace_planner(planner), pace, replace(opts, concurrency=conc), limit,
                    (k, workers))
        procs.append(ctx.Process(target=_work, args=(spec, counters, results, gate), name=f"replay-w{k}"))
    # Children inherit an ignored SIGINT: a Ctrl-C while they start up (before their own
    # handlers) must not kill them mid-import; the parent forwards a SIGTERM instead.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, before)

    stopped: list[str] = []

    def forward(signum: int, _frame: Any) -> None:
        """A stop for the parent is a stop for every worker (each ends its run cleanly)."""
        stopped.append(signal.Signals(signum).name)
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + START_WAIT
    try:
        while gate.start_at() is None:
            if gate.count_ready() >= workers or time.monotonic() > deadline or \
                    not all(p.is_alive() for p in procs):
                gate.start(time.time() + 0.05)  # late or dead workers do not hold the others
            else:
                time.sleep(0.002)
        while len(outcomes) < workers:
            try:
                outcomes.append(results.get(timeout=0.25))
            except Exception:  # queue.Empty
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
            if progress is not None:
                c = counters[:]
                reads = c[0::FIELDS]
                progress(sum(reads) if pacer.mode == "fast" else max(reads), sum(c[1::FIELDS]),
                         sum(c[2::FIELDS]), sum(c[3::FIELDS]))
        for p in procs:
            p.join(10)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    merged = Outcome.merge(outcomes) if outcomes else Outcome(first.stats)
    for name, st in merged.stats.items():
        st.already = first.stats[name].already
        st.interrupted_before = first.stats[name].interrupted_before
    missing = workers - len(outcomes)
    if missing and stopped:  # stopped before they could handle it (still starting up)
        merged.stopping = merged.stopping or stopped[0]
    elif missing:
        codes = ", ".join(str(p.exitcode) for p in procs if p.exitcode)
        merged.failure = merged.failure or f"{missing} replay worker(s) died (exit {codes or '?'}); results written so far are kept"
    return merged


def replace_planner(planner: Planner) -> Planner:
    """A copy without the done-set (each worker reads the journals itself)."""
    p = Planner.__new__(Planner)
    p.__dict__.update(planner.__dict__)
    p.done = frozenset()
    return p
