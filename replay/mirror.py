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
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from capture.agent import Agent, add_capture_arguments, options
from capture.errors import UserError
from capture.exchange import Exchange, body_bytes
from capture.extract import Extractor
from capture.pcapfile import Record
from capture.recording import ExchangeWriter, private_dir, write_manifest
from capture.status import prepare_directory

from .cli import add_sending_options, exit_code, planner_of, print_summary, summarize, targets_of, write_manifest_section
from .plan import Captured
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
    """The agent's exchange sink: records in, exchanges to the recording and the replayer."""

    def __init__(self, ports: list[int], rec: Path, size: int = 10_000) -> None:
        self.extractor = Extractor(ports)
        self.writer = ExchangeWriter(rec)
        self.queue: queue.Queue[Captured | None] = queue.Queue(max(1, size))
        self.count = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def feed(self, records: list[Record]) -> None:
        self._emit(self.extractor.feed(records))

    def flush(self) -> None:
        """Called by the agent's loop: nothing is buffered here."""

    def finish(self) -> None:
        self._emit(self.extractor.finish(), wait=2.0)
        self.writer.close()
        self.queue.put(None)

    def _emit(self, exchanges: list[Exchange], wait: float = 0.0) -> None:
        for ex in exchanges:
            self.writer.add(ex)
            self.count += 1
            try:
                if wait:
                    self.queue.put(captured(ex), timeout=wait)
                else:
                    self.queue.put_nowait(captured(ex))
            except queue.Full:
                self.dropped += 1

    def drop_warning(self) -> str:
        return (f"the shadow did not keep up: {self.dropped} exchanges were not mirrored "
                "(they are in the recording)")

    def source(self) -> Iterator[Captured]:
        while True:
            item = self.queue.get()
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
    private_dir(rec)
    args.dir = str(rec / "pcap")
    args.exchanges = True
    copts = options(args)
    prepare_directory(copts.directory, copts.user)
    stream = MirrorStream(copts.ports, rec, args.queue)
    ropts = Options(args.concurrency, args.timeout, args.max_body, args.discard, args.allow_primary, live=True)
    run = Run(rec, targets, stream.source(), planner, Pacer("live"), ropts)
    errors: list[BaseException] = []

    def replay() -> None:
        try:
            run.execute()
        except BaseException as e:  # reported after the capture stops
            errors.append(e)

    thread = threading.Thread(target=replay, name="mirror-replay", daemon=True)
    started = time.time()
    thread.start()
    agent = Agent(copts, ["shadowtap", "mirror", *sys.argv[2:]], stream=stream)
    try:
        code = agent.run()
    finally:
        try:  # the agent failed before finish(): end the replay too (a second None is harmless)
            stream.queue.put(None, timeout=5.0)
        except queue.Full:
            if run.feeder is not None:
                run.feeder.stop.set()
        thread.join(args.timeout + 30.0)
    outcome = run.outcome()
    if errors and outcome.failure is None:
        outcome.failure = f"replay failed: {errors[0]}"
    report = summarize(outcome, args, run.pacer, started) | {
        "mirrored_dropped": stream.dropped, "exchanges": stream.count}
    write_manifest_section(rec, report)
    write_manifest(rec, "extract", {"live": True, "ports": copts.ports, "written": stream.count,
                                    "counts": stream.extractor.counts()})
    print_summary(outcome, rec)
    if stream.dropped:
        print(f"  {stream.dropped} of {stream.count} exchanges were not mirrored: the shadow did not keep up",
              file=sys.stderr)
    return exit_code(outcome) or code
