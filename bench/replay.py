"""Benchmark `shadowtap replay` against wrk, and its pacing against the captured schedule
(DESIGN.md targets: ≥ 0.6× wrk's requests/s to nginx at the same concurrency with every
response recorded and zero lost requests; send-time error p99 ≤ 2 ms at 1,000 req/s).

Why it is built this way:

* One nginx inside a network namespace made by ``tests/netlab.py`` serves every phase, so
  nginx's access log (written per request) is the ground truth for what reached the server.
  One worker process by default: on this two-core machine the other core is the client's,
  for wrk and for the replay alike (``--nginx-workers`` changes it).
* The throughput recording is real by default: wrk (``-c20``) drives nginx while tcpdump
  writes the pcap on the host side of the veth, and ``shadowtap extract -o`` turns it into a
  recording, as a user would make one. If that fails, or with ``--synthetic``, a recording
  made directly (``capture.recording.PartWriter``) of the same request heads is used; the
  report says which. The replay reads the first ``--requests`` exchanges (``--limit``), so
  every run sends the same number whatever wrk managed during the capture.
* The peer runs in the same run against the same nginx and the same URL (the recording's most
  common target): ``wrk -t2 -c20`` next to ``shadowtap replay --pace fast --concurrency 20``.
  wrk runs once before and once after the replay (wrk alone gave 68k to 110k req/s from one
  run to the next here), and the verdict is the replay's rate over the mean of the two. The
  replay's rate is over its wall-clock time as a child process (start-up, reading the
  recording and writing every result included), which is what "every response recorded"
  costs; the rate its own summary line prints (the send loop only) is reported beside it.
  Extra replay options (``--replay-arg=--workers --replay-arg=1``) go to this replay only.
* "Lost" is counted three ways: the recording's sendable exchanges (decided by replay's own
  planner with the CLI's defaults) against the results (each id exactly once, none with an
  error) and against the lines nginx logged during the replay.
* Pacing uses a synthetic recording (``--pace-requests`` GETs, ``t_req_start = t0 + i/rate``)
  with the request index in the query string, so each nginx log line ($msec, millisecond
  resolution, written when the response is done) can be set against its request's due time as
  a cross-check of the results' own ``t_send - t_due``. It runs once per send loop: ``--sender
  native`` (what ``replay`` uses for http:// targets: the verdict) and ``--sender asyncio`` (what
  https:// targets and ``mirror`` get: printed beside it).
* CPU seconds and peak RSS of a child come from ``os.wait4``: the CPU includes the replay's
  worker processes (if it starts any), the RSS is the largest single process's. On Linux a
  child's ru_maxrss starts at this script's own RSS when it forks (exec records the hiwater
  mark of the copied memory), so the script keeps itself small (nginx's log is counted in
  blocks, never held) and reports its RSS at each start as the floor.
* Replays target the captured primary itself (the same nginx), so they pass
  ``--allow-primary``: without it shadowtap refuses, as it should.

Run: ``.venv/bin/python bench/replay.py`` (root: it creates a namespace). Results also go to
``bench/out/replay.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import netlab  # noqa: E402  (needs the repo root on sys.path first)
from bench.timing import run_timed  # noqa: E402

OUT = REPO / "bench" / "out"
PORT = 80
RATIO_TARGET = 0.6  # replay req/s ÷ wrk req/s
LAG_P99_TARGET_MS = 2.0
# The CLI's per-target summary line (replay/cli.py print_summary), e.g.
#   shadow    http://10.0.0.7:80: 200000 sent, 200000 responses (200: 200000), errors: none;
#   lag p50 -, p99 -; 8.7 s, 22884 req/s
# Parsed piece by piece, and "sent" or "requests" both accepted, so that a reworded line
# loses one number, not all of them.
_TARGET_LINE = re.compile(r"^\s*(\S+)\s+(https?://\S+): (\d+) (?:sent|requests), (\d+) responses.*$", re.M)
_STATUSES = re.compile(r"responses \(([^)]*)\)")
_ERRORS = re.compile(r"errors: (.*?);")
_LAG = re.compile(r"lag p50 (-|[\d.]+ ms), p99 (-|[\d.]+ ms)")
_RATE = re.compile(r"([\d.]+) s, (\d+) req/s")
_READ = re.compile(r"replay: (\d+) exchanges read: (.*)")


# --------------------------------------------------------------------------------------------
# Child processes


def shadowtap() -> list[str]:
    return netlab.shadowtap_argv()


def _tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (nginx -v writes to stderr, wrk exits 1)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (res.stdout + res.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _wrk_numbers(stdout: str) -> tuple[int, float, float, int]:
    """(requests, seconds, Requests/sec, socket errors + non-2xx) from wrk's report."""
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", stdout)
    r = re.search(r"Requests/sec:\s+([\d.]+)", stdout)
    secs = 0.0
    if m:
        secs = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    errors = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", stdout)
    if e:
        errors += sum(int(x) for x in e.groups())
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
    if n:
        errors += int(n.group(1))
    return (int(m.group(1)) if m else 0), secs, (float(r.group(1)) if r else 0.0), errors


# --------------------------------------------------------------------------------------------
# nginx's access log


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def settle_log(path: Path, quiet: float = 0.3, bound: float = 5.0) -> int:
    """The log's size once it has stopped growing for ``quiet`` seconds (bounded): nginx writes
    a line when a response is done, which can be a moment after the client has it."""
    deadline = time.monotonic() + bound
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = log_size(path)
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return last


def log_lines(path: Path, start: int, end: int) -> list[list[str]]:
    """The tab-separated fields of the lines written between byte offsets ``start`` and ``end``
    (for the pacing phase's 10,000 lines; see ``log_counts`` for big ranges)."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return [line.split("\t") for line in data.decode("latin-1").splitlines() if line]


def log_counts(path: Path, start: int, end: int) -> tuple[int, Counter[str]]:
    """(lines, lines by status) between two byte offsets, read in blocks: a wrk run logs a
    million lines, and holding them as lists of fields would take a gigabyte, which every child
    started afterwards would then report as its own peak RSS (a forked child's ru_maxrss starts
    at its parent's)."""
    lines, statuses = 0, Counter[str]()
    rest = b""
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            block = f.read(min(left, 1 << 22))
            if not block:
                break
            left -= len(block)
            *whole, rest = (rest + block).split(b"\n")
            lines += len(whole)
            for line in whole:
                fields = line.split(b"\t", _F_STATUS + 1)
                if len(fields) > _F_STATUS:
                    statuses[fields[_F_STATUS].decode("latin-1")] += 1
    return lines, statuses


_F_MSEC = netlab.NGINX_LOG_FIELDS.index("msec")
_F_URI = netlab.NGINX_LOG_FIELDS.index("request_uri")
_F_STATUS = netlab.NGINX_LOG_FIELDS.index("status")


# --------------------------------------------------------------------------------------------
# Recordings


@dataclass
class Recording:
    """How the throughput recording was made and what it holds."""

    path: str
    made: str  # "capture" (wrk → nginx, tcpdump, shadowtap extract) or "synthetic"
    why: str  # why this kind (the flag, or the capture's failure)
    exchanges: int
    bytes: int  # on disk, exchanges/ + manifest.json
    targets: dict[str, int]  # request target → count (the most common first)
    request_head: str = ""  # the first exchange's request line and headers
    pcap_bytes: int | None = None
    pcap_packets: int | None = None
    tcpdump_dropped_kernel: int | None = None
    wrk_argv: list[list[str]] = field(default_factory=list)
    wrk_requests: int = 0
    wrk_seconds: float = 0.0
    tcpdump_argv: list[str] = field(default_factory=list)
    extract_argv: list[str] = field(default_factory=list)
    extract_seconds: float | None = None
    extract_summary: str = ""
    build_seconds: float | None = None  # synthetic: time to write the parts


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def target_counts(rec: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    c: Counter[str] = Counter()
    for part in sorted((rec / "exchanges").glob("part-*.parquet")):
        for t in pq.read_table(part, columns=["target"]).column("target").to_pylist():
            c[t if t is not None else "(no request)"] += 1
    return dict(c.most_common())


def capture_recording(ns: netlab.NetNS, server: netlab.Server, work: Path, args: argparse.Namespace) -> Recording:
    """wrk → nginx with tcpdump on the veth until wrk has made ``--requests`` (plus a margin)
    requests, then ``shadowtap extract PCAP -o REC``."""
    pcap, rec = work / "throughput.pcap", work / "rec-capture"
    need = int(args.requests * 1.02) + 1000  # the first and last requests of a connection may be partial
    url = server.url(args.path)
    info = Recording(str(rec), "capture", "default (real capture)", 0, 0, {})
    with netlab.tcpdump(ns.host_if, pcap, f"tcp port {server.port}", immediate=False,
                        buffer_kib=131072) as cap:
        info.tcpdump_argv = [str(a) for a in cap.proc.args]  # type: ignore[union-attr]
        rate = 65_000.0  # req/s guess for round one (wrk → nginx with tcpdump listening: 60-75k here)
        deadline = time.monotonic() + args.capture_budget
        while info.wrk_requests < need:
            left = deadline - time.monotonic()
            if left < 2:
                raise RuntimeError(f"capture budget of {args.capture_budget}s spent with "
                                   f"{info.wrk_requests} of {need} requests")
            dur = int(min(left, max(2.0, math.ceil((need - info.wrk_requests) / rate * 1.1))))
            argv = ["wrk", "-t2", f"-c{args.concurrency}", f"-d{dur}s", "--timeout", "2s", url]
            info.wrk_argv.append(argv)
            print(f"  capture: {' '.join(argv)} (tcpdump on {ns.host_if})", file=sys.stderr)
            t0 = time.monotonic()
            res = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=dur + 30,
                                 env=netlab.curl_env())
            took = time.monotonic() - t0
            n, _, rps, _ = _wrk_numbers(res.stdout)
            info.wrk_requests += n
            info.wrk_seconds += took
            rate = max(1000.0, rps)
            print(f"  capture: {info.wrk_requests:,} requests so far ({rps:,.0f} req/s)", file=sys.stderr)
    stats = cap.stats
    info.tcpdump_dropped_kernel = stats.dropped_kernel if stats else None
    info.pcap_packets = stats.captured if stats else None
    info.pcap_bytes = pcap.stat().st_size
    argv = [*shadowtap(), "extract", str(pcap), "-o", str(rec)]
    info.extract_argv = argv
    print(f"  extract: {' '.join(argv)}", file=sys.stderr)
    run = run_timed(argv, args.timeout, cwd=REPO)
    info.extract_seconds = round(run.seconds, 2)
    info.extract_summary = next((ln for ln in run.stderr.splitlines() if ln.startswith("extracted ")), "")
    print(f"  extract: {info.extract_summary} in {run.seconds:.1f} s", file=sys.stderr)
    if not args.keep:
        pcap.unlink(missing_ok=True)  # the recording is what the rest needs
    from capture.recording import count_exchanges

    info.exchanges = count_exchanges(rec)
    if info.exchanges < args.requests:
        raise RuntimeError(f"the capture gave {info.exchanges} exchanges, fewer than --requests {args.requests}")
    info.bytes = dir_bytes(rec)
    info.targets = target_counts(rec)
    hs, target = wrk_heads(rec)
    info.request_head = _head(target, hs)
    return info


def _head(target: str, headers: list[tuple[str, str]]) -> str:
    return " | ".join([f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)])


def wrk_heads(rec: Path) -> tuple[list[tuple[str, str]], str]:
    """The header list and target of the first exchange of a recording (to copy wrk's heads)."""
    from capture.recording import read_exchanges

    for row in read_exchanges(rec, ["req_headers", "target"], batch_size=16):
        return [(h["name"], h["value"]) for h in row["req_headers"] or []], row["target"]
    raise RuntimeError(f"{rec} holds no exchanges")


def synthetic_id(i: int, conns: int) -> str:
    """Exchange ``i`` of a synthetic recording: extract's form, CONN-INDEX."""
    return f"syn{i % conns:03d}-{i // conns}"


def synthetic_index(exchange_id: str, conns: int) -> int | None:
    """The inverse of ``synthetic_id`` (None for any other id)."""
    conn, _, k = exchange_id.partition("-")
    if not (conn.startswith("syn") and conn[3:].isdigit() and k.isdigit()):
        return None
    return int(k) * conns + int(conn[3:])


def synthetic_recording(rec: Path, n: int, server: str, host: str, targets: Sequence[str], rate: float,
                        headers: list[tuple[str, str]] | None = None, conns: int = 20) -> float:
    """Write a recording of ``n`` GETs directly: request ``i`` targets ``targets[i]`` (cycled) and
    starts at ``t0 + i / rate``; ``conns`` keep-alive connections take turns. Returns seconds."""
    from capture.recording import EXCHANGE_SCHEMA, PartWriter, private_dir, write_manifest

    t = time.perf_counter()
    private_dir(rec)
    pw = PartWriter(rec / "exchanges", EXCHANGE_SCHEMA, rows_per_part=50_000)
    hs = headers if headers is not None else [("Host", host)]
    t0 = 1_700_000_000.0
    client_host = "10.199.0.1"
    for i in range(n):
        c = i % conns
        ts = t0 + i / rate
        pw.add({
            "id": synthetic_id(i, conns), "conn": f"syn{c:03d}", "index": i // conns,
            "client": f"{client_host}:{40000 + c}", "server": server,
            "method": "GET", "target": targets[i % len(targets)], "version": "HTTP/1.1",
            "req_headers": [{"name": k, "value": v} for k, v in hs], "req_body": None, "req_body_len": 0,
            "status": 200, "reason": "OK", "resp_version": "HTTP/1.1", "resp_headers": [],
            "resp_body": None, "resp_body_len": 0,
            "t_req_start": ts, "t_req_end": ts, "t_resp_start": ts + 0.0001, "t_resp_end": ts + 0.0001,
            "interim": [], "flags": [], "error": None,
        })
    pw.flush()
    write_manifest(rec, "extract", {"tool": "bench/replay.py", "synthetic": True, "written": n,
                                    "rate": rate, "server": server})
    return time.perf_counter() - t


def make_synthetic(ns: netlab.NetNS, server: netlab.Server, work: Path, args: argparse.Namespace,
                   why: str, like: Path | None) -> Recording:
    rec = work / "rec-synthetic"
    shutil.rmtree(rec, ignore_errors=True)
    host, headers = f"{server.host}:{server.port}", None  # wrk's head: GET PATH, Host: IP:PORT
    target = args.path
    source = "wrk's request head"
    if like is not None and (like / "exchanges").is_dir():  # copy the captured heads exactly
        with contextlib.suppress(Exception):
            headers, target = wrk_heads(like)
            source = "the request head of the partial capture"
    secs = synthetic_recording(rec, args.requests, f"{server.host}:{server.port}", host, [target],
                               rate=50_000.0, headers=headers, conns=args.concurrency)
    from capture.recording import count_exchanges

    info = Recording(str(rec), "synthetic", f"{why}; {source}, written directly", count_exchanges(rec),
                     dir_bytes(rec), target_counts(rec), _head(target, headers or [("Host", host)]),
                     build_seconds=round(secs, 2))
    print(f"  synthetic: {info.exchanges:,} GET {target} (headers {headers or [('Host', host)]}) "
          f"in {secs:.1f} s", file=sys.stderr)
    return info


# --------------------------------------------------------------------------------------------
# What should have been sent, and what was


def sendable_ids(rec: Path, limit: int | None) -> tuple[int, list[str], Counter[str]]:
    """(exchanges read, ids replay's planner sends with the CLI defaults, skips by reason), over
    the first ``limit`` exchanges in the order replay reads them."""
    from replay.plan import Planner, Skip
    from replay.request import Edits
    from replay.runner import Recorded
    from replay.sampling import Sampler

    planner = Planner(Edits(), Sampler(100.0, "0"))
    ids: list[str] = []
    skips: Counter[str] = Counter()
    read = 0
    for c in Recorded(rec, limit):  # replay's own reader
        read += 1
        d = planner.decide(c)
        if isinstance(d, Skip):
            skips[d.reason] += 1
        else:
            ids.append(d.id)
    return read, ids, skips


def read_result_columns(rec: Path, name: str, columns: list[str]) -> dict[str, list[Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from replay.results import target_dir

    parts = sorted(target_dir(rec, name).glob("part-*.parquet"))
    if not parts:
        return {c: [] for c in columns}
    table = pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])
    return {c: table.column(c).to_pylist() for c in columns}


@dataclass
class Accounting:
    """Every sendable exchange against the results and nginx's log."""

    read: int
    sendable: int
    skipped: dict[str, int]
    results: int
    unique_ids: int
    duplicate_ids: int  # result rows beyond the first for an id
    not_sendable: int  # result ids the planner would not send
    without_result: int  # sendable ids with no result row
    with_error: int
    errors: dict[str, int]
    error_examples: list[str]
    statuses: dict[str, int]
    nginx_logged: int  # access-log lines written during the replay
    nginx_statuses: dict[str, int]
    lost: int  # sendable requests without a clean recorded response (no result, or an error)
    nginx_missing: int  # sendable - nginx_logged (negative: nginx saw more)


def account(rec: Path, name: str, read: int, ids: list[str], skips: Counter[str],
            logged: tuple[int, Counter[str]]) -> tuple[Accounting, dict[str, list[Any]]]:
    cols = read_result_columns(rec, name, ["id", "status", "error", "error_detail", "t_due", "t_send"])
    rid = cols["id"]
    counts = Counter(rid)
    want = set(ids)
    errors = Counter(e for e in cols["error"] if e is not None)
    examples = sorted({f"{e}: {d}" for e, d in zip(cols["error"], cols["error_detail"]) if e is not None})[:5]
    errored_ids = {i for i, e in zip(rid, cols["error"]) if e is not None}
    no_result = want - counts.keys()
    acc = Accounting(
        read=read, sendable=len(ids), skipped=dict(skips), results=len(rid), unique_ids=len(counts),
        duplicate_ids=sum(c - 1 for c in counts.values() if c > 1),
        not_sendable=len(counts.keys() - want), without_result=len(no_result),
        with_error=sum(errors.values()), errors=dict(errors), error_examples=examples,
        statuses={str(k): v for k, v in sorted(Counter(cols["status"]).items(), key=lambda kv: str(kv[0]))},
        nginx_logged=logged[0],
        nginx_statuses=dict(logged[1]),
        lost=len(no_result) + len(errored_ids & want),
        nginx_missing=len(ids) - logged[0],
    )
    return acc, cols


def parse_summary(stderr: str) -> dict[str, Any]:
    """The numbers of the CLI's summary lines (the first target's)."""
    out: dict[str, Any] = {}
    m = _READ.search(stderr)
    if m:
        out["read"] = int(m.group(1))
        out["read_line"] = m.group(0)
    m = _TARGET_LINE.search(stderr)
    if m is None:
        return out
    line = m.group(0).strip()
    out.update(name=m.group(1), url=m.group(2).rstrip(":"), sent=int(m.group(3)), responses=int(m.group(4)),
               line=line)
    for rx, keys in ((_STATUSES, ("statuses",)), (_ERRORS, ("errors",)), (_LAG, ("lag_p50", "lag_p99"))):
        g = rx.search(line)
        if g:
            out.update(zip(keys, g.groups()))
    g = _RATE.search(line)
    if g:
        out["seconds"], out["req_per_s"] = float(g.group(1)), int(g.group(2))
    return out


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p99, max and min (nearest rank), as the replay computes its lag."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None}
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"n": len(s), "p50": round(q(0.5), 3), "p99": round(q(0.99), 3), "max": round(s[-1], 3),
            "min": round(s[0], 3)}


# --------------------------------------------------------------------------------------------
# Phases


def replay_argv(rec: Path, url: str, name: str, pace: str, args: argparse.Namespace,
                limit: int | None, extra: Sequence[str] = ()) -> list[str]:
    argv = [*shadowtap(), "replay", str(rec), "--target", url, "--name", name, "--pace", pace,
            "--concurrency", str(args.concurrency), "--timeout", f"{args.request_timeout:g}", "--allow-primary"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv + list(extra)


def throughput(ns: netlab.NetNS, server: netlab.Server, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    t_rec = time.monotonic()
    rec_info: Recording
    if args.synthetic:
        rec_info = make_synthetic(ns, server, work, args, "--synthetic", None)
    else:
        try:
            rec_info = capture_recording(ns, server, work, args)
        except Exception as e:  # a real capture is preferred, not required: say why, go on
            print(f"  warning: real capture failed ({e}); falling back to a synthetic recording",
                  file=sys.stderr)
            rec_info = make_synthetic(ns, server, work, args, f"fallback: {e}"[:500], work / "rec-capture")
    rec_seconds = time.monotonic() - t_rec
    rec = Path(rec_info.path)
    print(f"  recording: {rec_info.made}, {rec_info.exchanges:,} exchanges, {rec_info.bytes / 1e6:.1f} MB "
          f"({rec_seconds:.0f} s to make)", file=sys.stderr)

    read, ids, skips = sendable_ids(rec, args.requests)
    top_target = next(iter(rec_info.targets))
    base = f"http://{server.host}:{server.port}"

    # The peer, before and after the replay: drift on a shared machine shows as their spread.
    wrk = ["wrk", "-t2", f"-c{args.concurrency}", f"-d{args.duration}s", "--timeout", "2s", base + top_target]
    wrk_runs = [run_wrk(wrk, server, args, "before")]

    # The replay, timed as a child; nginx's log before and after it.
    log0 = settle_log(server.access_log)
    argv = replay_argv(rec, base, "fast", "fast", args, args.requests, args.replay_arg)
    print(f"  replay: {' '.join(argv)}", file=sys.stderr)
    load0 = os.getloadavg()
    run = run_timed(argv, args.timeout, ok=None, cwd=REPO)
    log1 = settle_log(server.access_log)
    logged = log_counts(server.access_log, log0, log1)
    summary = parse_summary(run.stderr)
    print(f"  replay: exit {run.returncode}, {run.seconds:.2f} s wall, {run.cpu_s:.2f} s CPU; "
          f"{summary.get('line', run.stderr[-300:])}", file=sys.stderr)
    acc, _ = account(rec, "fast", read, ids, skips, logged)
    print(f"  replay: {acc.results:,} results for {acc.sendable:,} sendable; nginx logged {acc.nginx_logged:,}",
          file=sys.stderr)

    wrk_runs.append(run_wrk(wrk, server, args, "after"))
    w_rps = sum(w["req_per_s"] for w in wrk_runs) / len(wrk_runs)

    sent = summary.get("sent", acc.results)
    wall_rps = sent / run.seconds if run.seconds > 0 else 0.0
    return {
        "recording": asdict(rec_info),
        "recording_seconds": round(rec_seconds, 1),
        "wrk_target": top_target,
        "target_share": round(rec_info.targets[top_target] / max(1, rec_info.exchanges), 4),
        "replay": {
            "argv": argv, "returncode": run.returncode, "wall_seconds": round(run.seconds, 3),
            "cpu_seconds": round(run.cpu_s, 2), "max_rss_mib": round(run.max_rss_mib, 1),
            "bench_rss_at_start_mib": round(run.parent_rss_mib, 1), "sent": sent,
            "req_per_s_wall": round(wall_rps, 1), "summary": summary,
            "loadavg_before": load0, "stderr_tail": run.stderr[-1500:],
        },
        "wrk": wrk_runs,
        "wrk_req_per_s_mean": round(w_rps, 1),
        "wrk_spread": round((max(w["req_per_s"] for w in wrk_runs) / min(w["req_per_s"] for w in wrk_runs) - 1), 3)
        if all(w["req_per_s"] for w in wrk_runs) else None,
        "ratio_wall": round(wall_rps / w_rps, 3) if w_rps else None,
        "ratio_summary": round(summary["req_per_s"] / w_rps, 3) if w_rps and "req_per_s" in summary else None,
        "accounting": asdict(acc),
    }


def run_wrk(wrk: list[str], server: netlab.Server, args: argparse.Namespace, when: str) -> dict[str, Any]:
    print(f"  peer ({when} the replay): {' '.join(wrk)}", file=sys.stderr)
    w0 = settle_log(server.access_log)
    load = os.getloadavg()
    wrun = run_timed(wrk, args.duration + 60, cwd=REPO, env=netlab.curl_env())
    w1 = settle_log(server.access_log)
    w_req, w_secs, w_rps, w_err = _wrk_numbers(wrun.stdout)
    w_logged = log_counts(server.access_log, w0, w1)[0]
    print(f"  peer: {w_req:,} requests in {w_secs:.2f} s, {w_rps:,.0f} req/s (nginx logged {w_logged:,})",
          file=sys.stderr)
    return {"when": when, "argv": wrk, "requests": w_req, "seconds": w_secs, "req_per_s": w_rps, "errors": w_err,
            "nginx_logged": w_logged, "cpu_seconds": round(wrun.cpu_s, 2), "loadavg_before": load,
            "stdout": wrun.stdout}


SENDERS = ("native", "asyncio")  # replay's two send loops: C (http://, the default) and asyncio (https://, mirror)


def pacing(server: netlab.Server, work: Path, args: argparse.Namespace, sender: str) -> dict[str, Any]:
    rec = work / "rec-pacing"
    n, rate = args.pace_requests, args.pace_rate
    secs = 0.0
    if not rec.exists():  # one recording; each loop's results under their own name
        targets = [f"{args.path}?i={i}" for i in range(n)]
        secs = synthetic_recording(rec, n, f"{server.host}:{server.port}", f"{server.host}:{server.port}",
                                   targets, rate=rate, conns=args.concurrency)
        print(f"  pacing: synthetic recording of {n:,} GETs at {rate:g} req/s captured ({secs:.1f} s to write)",
              file=sys.stderr)
    read, ids, skips = sendable_ids(rec, None)
    log0 = settle_log(server.access_log)
    name = f"paced-{sender}"
    argv = replay_argv(rec, server.base_url, name, "captured", args, None, ["--sender", sender])
    print(f"  pacing: {' '.join(argv)}", file=sys.stderr)
    run = run_timed(argv, args.timeout, ok=None, cwd=REPO)
    log1 = settle_log(server.access_log)
    logged = log_lines(server.access_log, log0, log1)
    summary = parse_summary(run.stderr)
    print(f"  pacing: exit {run.returncode}, {run.seconds:.2f} s wall; {summary.get('line', run.stderr[-300:])}", file=sys.stderr)
    acc, cols = account(rec, name, read, ids, skips, (len(logged), Counter(f[_F_STATUS] for f in logged)))

    # The results' own send-time error.
    lag_ms = [(s - d) * 1000.0 for s, d in zip(cols["t_send"], cols["t_due"]) if s is not None and d is not None]
    late = quantiles(lag_ms)
    late["over_target"] = sum(1 for v in lag_ms if v > LAG_P99_TARGET_MS)
    # Cross-check: nginx's $msec (ms resolution, taken when the response is done) vs the due time.
    due_by_index: dict[int, float] = {}
    for rid, d in zip(cols["id"], cols["t_due"]):
        i = synthetic_index(rid, args.concurrency)
        if d is not None and i is not None:
            due_by_index[i] = d
    ng: list[float] = []
    for f in logged:
        uri = f[_F_URI]
        _, _, q = uri.partition("?i=")
        if q.isdigit() and int(q) in due_by_index:
            ng.append((float(f[_F_MSEC]) - due_by_index[int(q)]) * 1000.0)
    ngq = quantiles(ng)
    ngq["over_target"] = sum(1 for v in ng if v > LAG_P99_TARGET_MS)
    sched_s = (n - 1) / rate
    span = (max(cols["t_send"]) - min(cols["t_send"])) if cols["t_send"] and all(
        s is not None for s in cols["t_send"]) else None
    return {
        "sender": sender, "requests": n, "rate": rate, "schedule_seconds": sched_s, "recording_seconds": round(secs, 2),
        "argv": argv, "returncode": run.returncode, "wall_seconds": round(run.seconds, 3),
        "cpu_seconds": round(run.cpu_s, 2), "send_span_seconds": None if span is None else round(span, 3),
        "send_error_ms": late, "nginx_msec_error_ms": ngq, "nginx_matched": len(ng),
        "summary": summary, "accounting": asdict(acc), "stderr_tail": run.stderr[-1500:],
    }


# --------------------------------------------------------------------------------------------
# Verdicts and output


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


def verdicts(tp: dict[str, Any], pcs: dict[str, dict[str, Any]]) -> list[Verdict]:
    acc = tp["accounting"]
    ratio = tp["ratio_wall"] or 0.0
    out = [Verdict(f"replay ≥ {RATIO_TARGET:g}× wrk req/s", ratio >= RATIO_TARGET,
                   f"{ratio:.2f}× ({tp['replay']['req_per_s_wall']:,.0f} vs {tp['wrk_req_per_s_mean']:,.0f} req/s; "
                   f"the summary line's own rate gives {tp['ratio_summary']}×)")]
    clean = (acc["lost"] == 0 and acc["duplicate_ids"] == 0 and acc["not_sendable"] == 0
             and acc["nginx_missing"] == 0 and acc["sendable"] > 0 and tp["replay"]["returncode"] == 0)
    out.append(Verdict("zero lost requests", clean,
                       f"{acc['lost']:,} lost of {acc['sendable']:,} sendable ({acc['without_result']:,} without a "
                       f"result, {acc['with_error']:,} with an error), {acc['duplicate_ids']} duplicate ids, "
                       f"nginx logged {acc['nginx_logged']:,}; replay exit {tp['replay']['returncode']}"))
    for sender, pc in pcs.items():
        if sender != SENDERS[0]:
            continue  # (the asyncio loop's numbers are printed: https:// and mirror use it)
        p99 = pc["send_error_ms"]["p99"]
        pacc = pc["accounting"]
        out.append(Verdict(f"pacing send-time error p99 ≤ {LAG_P99_TARGET_MS:g} ms ({sender} loop)", p99 is not None
                           and p99 <= LAG_P99_TARGET_MS and pacc["lost"] == 0 and pc["returncode"] == 0,
                           f"p99 {p99} ms at {pc['rate']:g} req/s; {pc['send_error_ms']['over_target']} of "
                           f"{pacc['sendable']:,} over {LAG_P99_TARGET_MS:g} ms; {pacc['lost']} lost"))
    return out


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def print_table(tp: dict[str, Any], pcs: dict[str, dict[str, Any]], vs: list[Verdict]) -> None:
    r = tp["recording"]
    if r["made"] == "capture":
        how = ("real capture: " + " + ".join(" ".join(a[:-1]) for a in r["wrk_argv"])
               + f" against nginx, tcpdump on the veth, then shadowtap extract PCAP -o REC ({r['extract_seconds']} s)")
    else:
        how = f"synthetic ({r['why']}, {r['build_seconds']} s)"
    print(f"recording: {how}")
    extra = ""
    if r["made"] == "capture":
        extra = (f"; pcap {r['pcap_bytes'] / 1e6:.0f} MB, {r['pcap_packets'] or 0:,} packets, tcpdump kernel drops "
                 f"{r['tcpdump_dropped_kernel']}")
    print(f"           {r['exchanges']:,} exchanges, {r['bytes'] / 1e6:.1f} MB on disk{extra}")
    print("           targets: " + ", ".join(f"{t} {n:,}" for t, n in list(r["targets"].items())[:3])
          + (" …" if len(r["targets"]) > 3 else "") + f"; the replay reads the first {tp['accounting']['read']:,}")
    print(f"           request head: {r['request_head']}")
    print()
    rp, acc = tp["replay"], tp["accounting"]
    head = f"{'tool':<26} {'requests':>10} {'seconds':>8} {'req/s':>9} {'CPU s':>6} {'RSS MiB':>8} {'vs wrk':>7}"
    print(head)
    print("-" * len(head))
    print(f"{'shadowtap replay':<26} {rp['sent']:>10,} {rp['wall_seconds']:>8.2f} {rp['req_per_s_wall']:>9,.0f} "
          f"{rp['cpu_seconds']:>6.1f} {rp['max_rss_mib']:>8.1f} {tp['ratio_wall'] or 0:>6.2f}×")
    s = rp["summary"]
    if "req_per_s" in s:
        print(f"{'  its own summary line':<26} {s['sent']:>10,} {s['seconds']:>8.2f} {s['req_per_s']:>9,} "
              f"{'':>6} {'':>8} {tp['ratio_summary'] or 0:>6.2f}×")
    for w in tp["wrk"]:
        print(f"{'wrk, ' + w['when'] + ' the replay':<26} {w['requests']:>10,} {w['seconds']:>8.2f} "
              f"{w['req_per_s']:>9,.0f} {w['cpu_seconds']:>6.1f} {'':>8}"
              + (f"  {w['errors']} errors" if w["errors"] else ""))
    print(f"{'wrk, mean':<26} {'':>10} {'':>8} {tp['wrk_req_per_s_mean']:>9,.0f} {'':>6} {'':>8} {'1.00×':>7}")
    print(f"(same nginx and URL ({tp['wrk_target']}, {tp['target_share']:.0%} of the recording), "
          f"{args_c(rp['argv'])} connections; replay: wall clock of the process, start-up and every result "
          f"written included,\n CPU of the process and its workers, RSS of the largest (this script held "
          f"{rp['bench_rss_at_start_mib']:.0f} MiB when it started it: the floor); wrk spread "
          f"{(tp['wrk_spread'] or 0):.0%})")
    print()
    rows = [
        ("exchanges read (--limit)", acc["read"]),
        ("sendable (replay's planner, CLI defaults)", acc["sendable"]),
        ("result rows", acc["results"]),
        ("distinct result ids", acc["unique_ids"]),
        ("duplicate result rows", acc["duplicate_ids"]),
        ("results for ids not sendable", acc["not_sendable"]),
        ("sendable without a result", acc["without_result"]),
        ("results with an error", acc["with_error"]),
        ("nginx log lines during the replay", acc["nginx_logged"]),
        ("lost (no result or an error)", acc["lost"]),
    ]
    print("accounting of the throughput replay")
    for name, v in rows:
        print(f"  {name:<44} {v:>10,}")
    if acc["errors"]:
        print(f"  errors by kind: {acc['errors']}")
    for ex in acc["error_examples"]:
        print(f"    e.g. {ex}")
    if rp["returncode"] != 0:
        print(f"  the replay exited {rp['returncode']}: " + rp["stderr_tail"].strip().splitlines()[-1][:300])
    print()
    for pc in pcs.values():
        print_pacing(pc)
    for v in vs:
        print(f"[{'PASS' if v.ok else 'FAIL'}] {v.name}: {v.detail}")


def print_pacing(pc: dict[str, Any]) -> None:
    se, ng = pc["send_error_ms"], pc["nginx_msec_error_ms"]
    print(f"pacing, the {pc['sender']} loop: {pc['requests']:,} GETs on a {pc['rate']:g} req/s captured schedule "
          f"({pc['schedule_seconds']:.1f} s), --pace captured --concurrency {args_c(pc['argv'])}; "
          f"sends spanned {pc['send_span_seconds']} s, the process {pc['wall_seconds']} s")
    print(f"  {'send-time error, ms':<36} {'p50':>8} {'p99':>8} {'max':>8} {'min':>8} "
          f"{'> ' + format(LAG_P99_TARGET_MS, 'g') + ' ms':>7} {'n':>7}")
    for label, q in (("results: t_send - t_due", se), ("nginx $msec - t_due (cross-check)", ng)):
        print(f"  {label:<36} {_ms(q['p50']):>8} {_ms(q['p99']):>8} {_ms(q['max']):>8} {_ms(q['min']):>8} "
              f"{q.get('over_target', 0):>7,} {q['n']:>7,}")
    print("  ($msec is truncated to the millisecond and taken when the response is done: it reads the send "
          "up to 1 ms early, plus the response time;\n   at 1,000 req/s every due time has the same "
          "sub-millisecond phase, so most of its values are the same number)")
    pa_ = pc["accounting"]
    print(f"  accounting: {pa_['sendable']:,} sendable, {pa_['unique_ids']:,} results, {pa_['lost']} lost, "
          f"nginx logged {pa_['nginx_logged']:,}; the CLI's own lag: p50 {pc['summary'].get('lag_p50')}, "
          f"p99 {pc['summary'].get('lag_p99')}")
    print()


def args_c(argv: list[str]) -> str:
    return argv[argv.index("--concurrency") + 1] if "--concurrency" in argv else "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=200_000, metavar="N",
                   help="requests replayed in the throughput phase (default 200000)")
    p.add_argument("--duration", type=int, default=10, metavar="S", help="wrk -d for the peer (default 10)")
    p.add_argument("--synthetic", action="store_true",
                   help="make the throughput recording directly instead of capturing wrk → nginx")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (recordings, results, nginx logs; bench/out/replay-work-*)")
    p.add_argument("--concurrency", type=int, default=20,
                   help="replay --concurrency and wrk -c, also the capture's wrk -c (default 20)")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes (default 1)")
    p.add_argument("--path", default="/small.txt", help="what wrk fetches (default /small.txt, 137 B)")
    p.add_argument("--pace-requests", type=int, default=10_000, metavar="N",
                   help="requests in the pacing recording (default 10000)")
    p.add_argument("--pace-rate", type=float, default=1000.0, metavar="R",
                   help="captured schedule of the pacing recording, req/s (default 1000)")
    p.add_argument("--replay-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the throughput replay (repeatable, e.g. --replay-arg=--workers "
                        "--replay-arg=1); the pacing replay runs with the CLI's defaults")
    p.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                   help="replay --timeout (default 10)")
    p.add_argument("--capture-budget", type=float, default=60.0, metavar="S",
                   help="most seconds of wrk load to make the recording (default 60)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="kill any single child run after this many seconds (default 600)")
    args = p.parse_args(argv)
    if min(args.requests, args.duration, args.concurrency, args.nginx_workers, args.pace_requests) < 1:
        p.error("--requests, --duration, --concurrency, --nginx-workers and --pace-requests must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep the table in order with stderr progress
    if os.geteuid() != 0:
        print("error: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    need = ["wrk", "nginx"] + ([] if args.synthetic else ["tcpdump"])
    for tool in need:
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (make apt)", file=sys.stderr)
            return 2
    try:  # the accounting uses replay's planner and the recording reader: fail now, not later
        import capture.recording  # noqa: F401
        import replay.plan  # noqa: F401
    except ImportError as e:
        print(f"error: cannot import shadowtap from {REPO}: {e}", file=sys.stderr)
        return 2
    started, load0 = time.monotonic(), os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="replay-work-", dir=OUT))
    try:
        with netlab.netns("rply") as ns:
            server = netlab.start_nginx(ns, work, port=PORT, worker_processes=args.nginx_workers)
            print(f"nginx ({args.nginx_workers} worker{'s' if args.nginx_workers > 1 else ''}) at "
                  f"{server.base_url} in {ns.name}", file=sys.stderr)
            print("throughput:", file=sys.stderr)
            tp = throughput(ns, server, work, args)
            pcs = {}
            for sender in SENDERS:
                print(f"pacing ({sender} loop):", file=sys.stderr)
                pcs[sender] = pacing(server, work, args, sender)
            server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    vs = verdicts(tp, pcs)
    print()
    print_table(tp, pcs, vs)
    total = time.monotonic() - started
    report = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "nginx": _tool_version(["nginx", "-v"]), "wrk": _tool_version(["wrk", "--version"]),
            "shadowtap": _tool_version([*shadowtap(), "--version"]),
            "uvloop": _module_version("uvloop"), "pyarrow": _module_version("pyarrow"),
        },
        "options": vars(args),
        "throughput": tp,
        "pacing": pcs,
        "verdicts": [asdict(v) for v in vs],
        "targets_met": all(v.ok for v in vs),
        "total_seconds": round(total, 1),
    }
    dest = OUT / "replay.json"
    tmp = dest.with_suffix(".json.part")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, dest)
    print(f"whole run {total:.0f} s; results in {dest.relative_to(REPO)}"
          + (f"; work dir kept in {work.relative_to(REPO)}" if args.keep else ""))
    return 0 if report["targets_met"] else 1


def _module_version(name: str) -> str | None:
    """The version of a module in the interpreter that runs shadowtap (the venv's)."""
    try:
        res = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.__version__)"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
