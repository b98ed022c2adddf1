"""`shadowtap replay`: send a sample of captured requests to a shadow and record its answers."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from capture.cli import _size, version
from capture.cli import positive
from capture.errors import UserError
from capture.recording import count_exchanges, is_recording, write_manifest

from . import native
from .client import Target
from .plan import Planner
from .request import SAFE_METHODS, Edits, HostRule
from .results import Busy, lock_results
from .runner import Options, Outcome, Recorded, Run
from .workers import run_workers
from .sampling import Sampler
from .schedule import Pacer


def _percent(text: str) -> float:
    try:
        v = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0.0 <= v <= 100.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100: {text!r}")
    return v




_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_FRAMING = ("content-length", "transfer-encoding")


def _name(text: str) -> str:
    """A header name: an RFC 9110 token."""
    if not text or not set(text) <= _TCHAR:
        raise argparse.ArgumentTypeError(f"not a header name: {text!r}")
    return text


def _value(text: str, what: str = "header value") -> str:
    """Sent as latin-1, on one line: no control characters but tab (they would end the line,
    or start another header)."""
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(f"{what} has a control character: {text!r}")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{what} is not latin-1 (HTTP/1 headers are bytes): {text!r}") from None
    return text


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"want 'Name: value', not {text!r}")
    name = _name(name.strip())
    if name.lower() in _FRAMING:
        raise argparse.ArgumentTypeError(f"{name} is set by the replayer from the captured body")
    return name, _value(value.strip())


def _host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"not a host: {text!r}")
    return _value(text, "host")


def add_sending_options(p: argparse.ArgumentParser) -> None:
    """What replay and mirror share: where, what, how many, how safely."""
    p.add_argument("--target", action="append", default=[], metavar="URL", required=True,
                   help="where requests are sent, http://HOST:PORT (repeatable; NAME=URL names it)")
    p.add_argument("--name", default="shadow", help="results name of the first --target (default shadow)")
    p.add_argument("--baseline", metavar="URL",
                   help="also send the sample to a second copy of the primary (results/baseline), for analyze's noise")
    g = p.add_argument_group("sampling and selection")
    g.add_argument("--percent", type=_percent, default=100.0, metavar="P",
                   help="mirror P%% of requests (Istio's mirrorPercentage; default 100)")
    g.add_argument("--seed", default="0", help="sampling seed: the same seed picks the same requests (default 0)")
    g.add_argument("--sample-key", default="id", metavar="header:NAME",
                   help="sample by this request header (keeps a user's or trace's requests together); default: the exchange id")
    g.add_argument("--method", action="append", default=[], metavar="M", help="only these methods (repeatable)")
    g.add_argument("--include-path", action="append", default=[], metavar="RE", help="only targets matching RE")
    g.add_argument("--exclude-path", action="append", default=[], metavar="RE", help="never targets matching RE")
    g.add_argument("--allow-writes", action="store_true",
                   help=f"also send methods that change state (default: only {', '.join(sorted(SAFE_METHODS))})")
    g.add_argument("--allow-primary", action="store_true",
                   help="allow a --target that is the captured primary's own address")
    h = p.add_argument_group("what the shadow is told")
    hm = h.add_mutually_exclusive_group()
    hm.add_argument("--no-shadow-suffix", action="store_true",
                    help="send the captured Host unchanged (Envoy's disable_shadow_host_suffix_append)")
    hm.add_argument("--host-rewrite", type=_host, metavar="HOST", help="send this Host instead")
    h.add_argument("--set-header", action="append", default=[], type=_header, metavar="'K: V'",
                   help="set a header (replaces the captured one; repeatable)")
    h.add_argument("--drop-header", action="append", default=[], type=_name, metavar="K",
                   help="remove a header (repeatable)")
    s = p.add_argument_group("sending")
    s.add_argument("--concurrency", type=positive(int), default=10, metavar="N",
                   help="connections per target at most (default 10)")
    s.add_argument("--timeout", type=positive(float), default=10.0, metavar="S",
                   help="seconds for each request, connecting included (default 10); no retries")
    s.add_argument("--discard", action="store_true",
                   help="keep status and timing only, not headers and bodies (Istio's fire and forget)")
    s.add_argument("--max-body", type=_size, default=64 << 20, metavar="BYTES",
                   help="keep at most this much of each response body (default 64M); more is a too_large result")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="send a sample of captured requests to a shadow (v2) and record its answers",
        description="Re-send captured HTTP requests to one or more targets, with the Host rewritten as "
        "Envoy's mirroring does (httpbin:8000 -> httpbin-shadow:8000), on the captured schedule, and "
        "record every answer under REC/results/<name>/. A re-run resumes and never sends a request twice.",
    )
    p.add_argument("inputs", nargs="+", metavar="REC|PCAP",
                   help="a recording made by `shadowtap extract -o`, or capture files (extracted into -o REC first)")
    p.add_argument("-o", "--output", metavar="REC",
                   help="the recording to write results into (default: the input recording)")
    add_sending_options(p)
    pc = p.add_argument_group("pacing (an absolute schedule from the first request)")
    pc.add_argument("--pace", choices=("captured", "fast"), default="captured",
                    help="captured: as the requests came (default); fast: no waiting")
    pc.add_argument("--speed", type=positive(float), default=1.0, metavar="X",
                    help="with --pace captured: X times as fast")
    pc.add_argument("--rate", type=positive(float), metavar="R", help="a fixed R requests per second instead")
    pc.add_argument("--sender", choices=("auto", "native", "asyncio"), default="auto",
                    help="the send loop: native (C, http:// targets) or asyncio (https:// too); auto "
                    "picks native where it serves (default)")
    p.add_argument("--limit", type=positive(int), metavar="N", help="read at most N exchanges")
    p.add_argument("--workers", type=positive(int), metavar="N",
                   help="sending processes, sharing --concurrency (default: one per core, up to 4, for "
                   "--pace fast over 50,000 exchanges or more sent by the asyncio loop; else 1)")
    p.set_defaults(func=cmd_replay)


def targets_of(args: argparse.Namespace) -> list[Target]:
    out: list[Target] = []
    for i, spec in enumerate(args.target):
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:
            name, url = (args.name if i == 0 else f"{args.name}{i + 1}"), spec
        out.append(Target.parse(name, url))
    if args.baseline:
        out.append(Target.parse("baseline", args.baseline))
    names = [t.name for t in out]
    for n in names:
        if names.count(n) > 1:
            raise ValueError(f"two targets are named {n!r}: name them, like --target v2=http://…")
        if not n or n.startswith(".") or "/" in n:
            raise ValueError(f"{n!r} is not a usable target name")
    return out


def edits_of(args: argparse.Namespace) -> Edits:
    if args.host_rewrite:
        rule = HostRule("literal", args.host_rewrite)
    elif args.no_shadow_suffix:
        rule = HostRule("keep")
    else:
        rule = HostRule()
    return Edits(rule, tuple(args.set_header), frozenset(h.lower() for h in args.drop_header))


def sampler_of(args: argparse.Namespace) -> Sampler:
    key = args.sample_key
    if key == "id":
        return Sampler(args.percent, args.seed)
    kind, _, name = key.partition(":")
    if kind != "header" or not name:
        raise ValueError(f"--sample-key {key}: want id or header:NAME")
    return Sampler(args.percent, args.seed, name)


def planner_of(args: argparse.Namespace) -> Planner:
    import re

    for rx in [*args.include_path, *args.exclude_path]:
        try:
            re.compile(rx)
        except re.error as e:
            raise ValueError(f"bad path pattern {rx!r}: {e}") from None
    return Planner(edits_of(args), sampler_of(args), args.method, args.include_path, args.exclude_path,
                   args.allow_writes)


def _recording(args: argparse.Namespace) -> Path:
    """The recording to replay: the input, or the captures extracted into -o first."""
    paths = [Path(p) for p in args.inputs]
    if len(paths) == 1 and is_recording(paths[0]):
        rec = paths[0]
        if args.output and Path(args.output).resolve() != rec.resolve():
            raise UserError(f"results are written into the recording they replay: drop -o, or make it {rec}")
        return rec
    for p in paths:
        if p.is_dir():
            raise UserError(f"{p}: a directory, but not a recording (no exchanges/ in it)")
        if str(p) != "-" and not p.is_file():
            raise UserError(f"{p}: no such file")
    if not args.output:
        raise UserError("replaying capture files needs -o REC (the exchanges and results are written there)")
    rec = Path(args.output)
    from capture.cli import cmd_extract

    code = cmd_extract(argparse.Namespace(
        inputs=args.inputs, output=str(rec), jsonl=None, har=None, table=None, port=[], server=[],
        limit=args.limit, max_body=64 << 20, idle_timeout=300.0))
    if code:
        print("warning: some input could not be read; replaying what was extracted", file=sys.stderr)
    return rec


def check_primary(rec: Path, targets: list[Target], allow: bool) -> None:
    """Refuse, before anything is sent, a target that is the captured primary."""
    if allow:
        return
    import pyarrow.parquet as pq

    servers: set[str] = set()
    for part in (rec / "exchanges").glob("part-*.parquet"):
        servers.update(pq.read_table(part, columns=["server"]).column("server").unique().to_pylist())
    for t in targets:
        for ip, port in t.addresses():
            for s in servers:
                host, _, p = s.rpartition(":")
                if host.strip("[]") == ip and p == str(port):
                    raise UserError(f"--target {t.url} is the captured primary ({s}); "
                                    "shadowtap does not replay to production unless --allow-primary")


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        targets = targets_of(args)
        planner = planner_of(args)
        pacer = Pacer("fast" if args.pace == "fast" else "captured", args.speed, args.rate)
        for t in targets:
            t.addresses()
    except ValueError as e:
        raise UserError(str(e)) from None
    rec = _recording(args)
    check_primary(rec, targets, args.allow_primary)
    total = count_exchanges(rec)
    if args.limit is not None:
        total = min(total, args.limit)
    opts = Options(args.concurrency, args.timeout, args.max_body, args.discard, args.allow_primary,
                   sender=args.sender)
    if args.sender == "native" and not native.usable(targets, pacer.mode, live=False):
        raise UserError("--sender native sends to http:// targets only"
                        + ("" if native.available() else " (and this build has no native loop)"))
    # Worker processes take a second to start: worth it for a large recording sent fast by the
    # asyncio loop. Not for the native loop: one process keeps it fed, and a second one only
    # takes CPU from the target (half the rate on two cores).
    big = pacer.mode == "fast" and total >= 50_000 and not native.chosen(args.sender, targets, pacer.mode, False)
    workers = args.workers or (min(4, os.cpu_count() or 1) if big else 1)
    try:
        locks = lock_results(rec, [t.name for t in targets])
    except Busy as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{rec}: {e.strerror or e}") from None
    progress = Progress(total) if sys.stderr.isatty() else None
    started = time.time()
    try:
        if workers > 1 and opts.concurrency > 1:
            outcome = run_workers(rec, targets, planner, pacer, opts, args.limit, workers,
                                  progress.show if progress else None)
        else:
            run = Run(rec, targets, Recorded(rec, args.limit), planner, pacer, opts,
                      progress.update if progress else None)
            outcome = run.execute()
    except OSError as e:  # before the run could start: recovering an earlier run's results
        raise UserError(f"{rec}: {e.strerror or e}", code=1) from None
    finally:
        if progress is not None:
            progress.stop()
        for fd in locks:
            os.close(fd)
    finish(rec, outcome, summarize(outcome, args, pacer, started))
    return exit_code(outcome)


def finish(rec: Path, outcome: Outcome, report: dict[str, Any]) -> None:
    """The summary on stderr, and the manifest; a manifest that cannot be written is said."""
    try:
        write_manifest_section(rec, report)
    except OSError as e:
        outcome.failure = outcome.failure or f"{rec}/manifest.json: {e.strerror or e}"
    print_summary(outcome, rec)


def exit_code(o: Outcome) -> int:
    if o.refused is not None:
        raise UserError(f"exchange {o.refused[0]} was captured at {o.refused[1]}, which is a --target; "
                        "shadowtap does not replay to production unless --allow-primary")
    if o.failure:
        raise UserError(o.failure, code=1)
    if o.stopping:
        print(f"stopped ({o.stopping}) before the end; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def summarize(o: Outcome, args: argparse.Namespace, pacer: Pacer, started: float) -> dict[str, Any]:
    return {
        "tool": "shadowtap", "version": version(), "command": ["shadowtap", args.command, *sys.argv[2:]],
        "started": started, "seconds": round(o.elapsed, 3),
        "completed": o.stopping is None and o.failure is None,
        "options": {"percent": args.percent, "seed": args.seed, "sample_key": args.sample_key,
                    "pace": pacer.mode, "speed": pacer.speed, "rate": pacer.rate,
                    "concurrency": args.concurrency, "timeout": args.timeout, "discard": args.discard,
                    "host": edits_of(args).host.mode, "allow_writes": args.allow_writes},
        "read": o.read,
        "skipped": dict(o.skips),
        "skipped_writes": dict(o.skipped_writes),
        "targets": {name: st.summary() for name, st in o.stats.items()},
    }


def write_manifest_section(rec: Path, report: dict[str, Any]) -> None:
    import json

    try:
        prev = json.loads((rec / "manifest.json").read_text()).get("replay", {})
    except (OSError, ValueError):
        prev = {}
    targets = dict(prev.get("targets", {}))
    targets.update(report["targets"])
    write_manifest(rec, "replay", report | {"targets": targets})


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def print_summary(o: Outcome, rec: Path) -> None:
    out = sys.stderr
    sent_any = max((s.sent for s in o.stats.values()), default=0)
    parts = [f"{sent_any} sent"]
    for reason in ("sampled_out", "write", "done", "method", "path", "incomplete", "no_request", "upgrade", "http09"):
        n = o.skips.get(reason, 0)
        if not n:
            continue
        if reason == "write":
            by = ", ".join(f"{m} {c}" for m, c in o.skipped_writes.most_common())
            parts.append(f"{n} writes not sent ({by}; --allow-writes sends them)")
        elif reason == "done":
            parts.append(f"{n} already sent by an earlier run")
        else:
            parts.append(f"{n} {reason.replace('_', ' ')}")
    pending = o.read - sum(o.skips.values()) - sent_any
    if pending > 0 and (o.stopping or o.failure):
        parts.append(f"{pending} not sent (the run stopped first)")
    print(f"replay: {o.read} exchanges read: " + ", ".join(parts), file=out)
    for name, st in o.stats.items():
        errs = ", ".join(f"{k} {v}" for k, v in st.errors.most_common()) or "none"
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(st.statuses.items()))
        rate = st.sent / o.elapsed if o.elapsed > 0 else 0.0
        print(f"  {name:9} {st.target.url}: {st.sent} requests, {st.responses} responses ({codes or 'none'}), "
              f"errors: {errs}; lag p50 {_ms(st.lag_ms(0.5))}, p99 {_ms(st.lag_ms(0.99))}; "
              f"{o.elapsed:.1f} s, {rate:.0f} req/s", file=out)
        if st.interrupted_before:
            print(f"  {name:9} {st.interrupted_before} requests of an earlier, stopped run have no answer "
                  "(recorded as interrupted; not sent again)", file=out)
    if o.own_traffic:
        print(f"  {o.own_traffic} captured exchanges were our own requests to a target: ignored", file=out)
    print(f"results in {os.path.join(rec, 'results')}/", file=out)


class Progress:
    """A live line on a terminal: read, sent, responses, errors (and lag, in one process)."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        from rich.console import Console

        self.p = RichProgress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=True,
                              console=Console(stderr=True))  # stdout is for data
        self.task = self.p.add_task("replay", total=total or None, status="")
        self.p.start()

    def show(self, read: int, sent: int, responses: int, errors: int, lag: str = "") -> None:
        self.p.update(self.task, completed=read,
                      status=f"sent {sent}  responses {responses}  errors {errors}{lag}")

    def update(self, run: Run) -> None:
        f = run.feeder
        st = run.stats.values()
        self.show(f.read if f else 0, sum(s.sent for s in st), sum(s.responses for s in st),
                  sum(sum(s.errors.values()) for s in st), f"  lag {run.current_lag_ms():.1f} ms")

    def stop(self) -> None:
        self.p.stop()
