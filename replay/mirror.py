"""`shadowtap mirror`: capture → extract → replay, continuously (GoReplay's raw input to an
HTTP output, Istio's mirroring without a mesh).

The capture agent runs as it does for `shadowtap capture` (pcap files into REC/pcap, the
same supervision and stop handling) in the main thread; its exchanges go into REC/exchanges
and, through a bounded queue, to a replay run on its own event loop in a second thread.
When the shadow cannot keep up, the queue fills and the newest exchanges are not mirrored:
they are counted (and still recorded), and the capture never waits for the shadow.
"""
from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from collections import Counter
from typing import Any, Callable, Iterator

from capture.agent import Agent, add_capture_arguments, options
from capture.errors import UserError
from capture.exchange import Exchange, body_bytes
from capture.extract import Extractor
from capture.pcapfile import Record
from capture.recording import ExchangeWriter, is_recording, private_dir, write_manifest
from capture.status import prepare_directory

from .cli import add_sending_options, exit_code, finish, planner_of, summarize, targets_of
from .plan import Captured, Planner, count_skip
from .results import Busy, lock_results
from .runner import Options, Run
from .schedule import Pacer



def register(sub: Any) -> None:
    p = sub.add_parser(
        "mirror",
        help="capture live traffic and mirror a sample of it to a shadow as it happens",
        description="Sniff IFACE like `shadowtap capture`, extract the HTTP exchanges as they "
        "complete, and send a sample of them to the targets with the -shadow Host, recording "
        "everything in REC. The capture never waits for the shadow: what it cannot take is counted.",
    )
    p.add_argument("-o", "--output", required=True, metavar="REC",
                   help="recording to write: pcap/, exchanges/, results/<name>/")
    add_capture_arguments(p)
    add_sending_options(p)
    p.add_argument("--queue", type=int, default=10_000, metavar="N",
                   help="exchanges waiting for the shadow at most (default 10000); beyond, they are not mirrored")
    p.set_defaults(func=cmd_mirror)


def captured(ex: Exchange) -> Captured:
    req = ex.request
    if req is None:
        return Captured(ex.id, ex.server, None, None, None, [], None, None, sorted(ex.flags))
    return Captured(ex.id, ex.server, req.method, req.target, req.version, req.headers, body_bytes(req),
                    req.t_start, sorted(ex.flags))


class MirrorStream:
    """The agent's exchange sink: records in, exchanges to the recording and the replayer.

    Runs on the agent's thread and never blocks it: the queue to the replayer is bounded and
    what does not fit is counted. Exchanges are written in small parts, at least every
    FLUSH_EVERY seconds, so a crash loses little of the recording."""

    FLUSH_EVERY = 5.0

    def __init__(self, ports: list[int], rec: Path, planner: Planner, size: int = 10_000) -> None:
        self.extractor = Extractor(ports)
        self.writer = ExchangeWriter(rec, rows_per_part=5_000)
        self.planner = planner
        self.queue: queue.Queue[Captured | None] = queue.Queue(max(1, size))
        self.count = 0
        self.dropped = 0  # sampled in, but the shadow was too far behind
        self.skips: Counter[str] = Counter()
        self.skipped_writes: Counter[str] = Counter()
        self.failure: str | None = None
        self.ended = threading.Event()
        self._flushed = time.monotonic()

    def feed(self, records: list[Record]) -> None:
        self._emit(self.extractor.feed(records))

    def flush(self) -> None:
        """Called by the agent's loop about ten times a second."""
        if time.monotonic() - self._flushed >= self.FLUSH_EVERY:
            self._flushed = time.monotonic()
            self._write(self.writer.parts.flush)

    def finish(self) -> None:
        """The capture ended: what it completes is recorded and offered to the replayer."""
        self._emit(self.extractor.finish())
        self._write(self.writer.close)
        self.ended.set()

    def _write(self, step: Callable[[], None]) -> None:
        try:
            step()
        except OSError as e:
            if self.failure is None:
                self.failure = f"writing exchanges: {e.strerror or e}"

    def _emit(self, exchanges: list[Exchange]) -> None:
        for ex in exchanges:
            if self.failure is None:
                self._write(lambda: self.writer.add(ex))
            self.count += 1
            c = captured(ex)
            skip = self.planner.admit(c)
            if skip is not None:
                count_skip(skip, self.skips, self.skipped_writes)
                continue
            try:
                self.queue.put_nowait(c)
            except queue.Full:
                self.dropped += 1

    def drop_warning(self) -> str:
        return (f"the shadow did not keep up: {self.dropped} exchanges were not mirrored "
                "(they are in the recording)")

    def source(self) -> Iterator[Captured]:
        """What the replayer reads: ends once the capture has ended and the queue is empty."""
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.ended.is_set():
                    return
                continue
            if item is None:
                return
            yield item


def cmd_mirror(args: argparse.Namespace) -> int:
    if not args.port:
        raise UserError("mirror needs --port: the service's port tells requests from responses")
    try:
        targets = targets_of(args)
        planner = planner_of(args)
        for t in targets:
            t.addresses()
    except ValueError as e:
        raise UserError(str(e)) from None
    rec = Path(args.output)
    if is_recording(rec) and any((rec / "exchanges").glob("part-*.parquet")):
        raise UserError(f"{rec} already holds a recording; mirror writes a new one (name another -o)")
    private_dir(rec)
    args.dir = str(rec / "pcap")
    args.exchanges = True
    copts = options(args)
    prepare_directory(copts.directory, copts.user)
    try:
        locks = lock_results(rec, [t.name for t in targets])
    except Busy as e:
        raise UserError(str(e)) from None
    stream = MirrorStream(copts.ports, rec, planner, args.queue)
    ropts = Options(args.concurrency, args.timeout, args.max_body, args.discard, args.allow_primary, live=True)
    run = Run(rec, targets, stream.source(), planner, Pacer("live"), ropts)
    agent = Agent(copts, ["shadowtap", "mirror", *sys.argv[2:]], stream=stream)
    errors: list[BaseException] = []

    def replay() -> None:
        try:
            run.execute()
        except BaseException as e:  # reported after the capture stops
            errors.append(e)
        finally:  # a replayer that ended on its own (a failure) ends the capture too
            agent.request_stop("replay ended")

    thread = threading.Thread(target=replay, name="mirror-replay", daemon=True)
    started = time.time()
    thread.start()
    try:
        code = agent.run()
    finally:
        stream.ended.set()  # also when the agent failed before finish()
        # What the capture completed last is still sent, for a while; a signal now (or the
        # grace running out) stops the replayer, and a second one cuts its wait for answers.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _f: run.stop_threadsafe(signal.Signals(signum).name))
        thread.join(args.timeout + 5.0)
        if thread.is_alive():
            run.stop_threadsafe("capture stopped")
            thread.join(args.timeout + 5.0)
        for fd in locks:
            os.close(fd)
    outcome = run.outcome()
    if errors and outcome.failure is None:
        outcome.failure = f"replay failed: {errors[0]}"
    outcome.failure = outcome.failure or stream.failure
    outcome.read = stream.count
    outcome.skips.update(stream.skips)
    outcome.skipped_writes.update(stream.skipped_writes)
    left = stream.queue.qsize()
    report = summarize(outcome, args, run.pacer, started) | {
        "exchanges": stream.count, "mirrored_dropped": stream.dropped, "not_sent_at_stop": left,
        "own_traffic_ignored": outcome.own_traffic}
    finish(rec, outcome, report)
    try:
        write_manifest(rec, "extract", {"live": True, "ports": copts.ports, "written": stream.count,
                                        "counts": stream.extractor.counts()})
    except OSError as e:
        outcome.failure = outcome.failure or f"{rec}/manifest.json: {e.strerror or e}"
    if stream.dropped:
        print(f"  {stream.dropped} of {stream.count} exchanges were not mirrored: the shadow did not keep up",
              file=sys.stderr)
    if outcome.stopping == "replay ended":
        outcome.stopping = None
    return exit_code(outcome) or code
