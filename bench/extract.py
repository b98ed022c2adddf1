"""Benchmark `shadowtap extract` against tshark on real keep-alive captures (DESIGN.md target:
≥ 10× tshark in packets/s and exchanges/s, peak RSS flat as the capture grows).

Why it is built this way:

* The captures are real, not synthesised: wrk drives nginx inside a network namespace made by
  ``tests/netlab.py`` and tcpdump writes the pcap on the host side of the veth, so the files carry
  what production captures carry (GRO super-segments, invalid checksums, many exchanges per
  keep-alive connection). One raw capture is taken and each size is cut from it at an exact
  packet count (``editcap -r``); the tail connection is simply incomplete there. The cuts are
  kept in ``bench/out/`` (gitignored) and reused by size, because making them costs more than
  timing them.
* The peer runs in the same run on the same files, and the verdict is a ratio, so the numbers
  mean something on a busy or slow machine (this one has two cores and is shared).
* Wall time and peak RSS come from ``os.wait4`` on each child: exact, per process, and no
  dependency on GNU time. Timed runs send stdout to /dev/null, as the target is defined; the
  counts come from the shadowtap summary line and from one extra, untimed tshark run (which
  also warms the page cache so that neither tool is charged for disk reads).
* ``--profile`` runs the extraction in-process under cProfile exactly as ``cmd_extract`` drives
  it (including the JSON encoding that ``--jsonl`` pays for), so the hot spots it shows are the
  ones the CLI timing contains.

Run: ``.venv/bin/python bench/extract.py`` (root: it creates a namespace). Results also go to
``bench/out/extract.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import netlab  # noqa: E402  (needs the repo root on sys.path first)
from bench.timing import Run, kill_group, run_timed  # noqa: E402

OUT = REPO / "bench" / "out"
DEFAULT_SIZES = (1_000_000, 2_000_000)
TSHARK_FIELDS = ("http.request.method", "http.request.uri", "http.response.code")
SPEED_TARGET = 10.0  # shadowtap must be at least this many times faster than tshark
RSS_FLAT = 0.20  # peak RSS may grow at most this much from the smallest to the largest capture
_SUMMARY = re.compile(r"extracted (\d+) exchanges from (\d+) packets")


# --------------------------------------------------------------------------------------------
# Captures


@dataclass
class CaptureInfo:
    """How a benchmark capture was made; stored next to it so a reused file explains itself."""

    path: str
    packets: int
    bytes: int
    made: str
    raw_packets: int
    wrk: list[str]
    wrk_requests: int
    wrk_seconds: float
    tcpdump_dropped_kernel: int | None
    cut_with: str


def capture_path(packets: int) -> Path:
    """The file for a size: the name is the cache key."""
    return OUT / f"keepalive-{packets}.pcap"


def _meta_path(pcap: Path) -> Path:
    return pcap.with_suffix(".json")


def count_pcap_records(path: Path) -> int:
    """Whole records in a (possibly still growing) classic pcap file, by walking record headers.

    Used while tcpdump is writing, when capinfos would complain about the partial last record.
    """
    hdr = struct.Struct("<IIII")
    n = 0
    with open(path, "rb") as f:
        buf = f.read(24)
        if len(buf) < 24:
            return 0
        if buf[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            raise ValueError(f"{path}: not a little-endian pcap file")
        buf = b""
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                return n
            buf = buf + chunk if buf else chunk
            off, end = 0, len(buf)
            while off + 16 <= end:
                incl = hdr.unpack_from(buf, off)[2]
                if off + 16 + incl > end:
                    break
                off += 16 + incl
                n += 1
            buf = buf[off:]


def capinfos_packets(path: Path) -> int:
    """Packet count of a finished capture, as Wireshark's own tool reports it."""
    out = subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(path)],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    return int(out.strip().rsplit("\t", 1)[1])


def _wrk_requests(stdout: str) -> int:
    m = re.search(r"(\d+) requests in", stdout)
    return int(m.group(1)) if m else 0


def make_raw_capture(raw: Path, need: int, args: argparse.Namespace) -> tuple[int, list[str], int, float, int | None]:
    """Capture at least ``need`` packets of wrk → nginx keep-alive traffic into ``raw``.

    wrk runs in rounds of bounded duration (its -d) until the file holds enough packets or the
    overall time budget is spent; each round's duration is sized from the rate seen so far, so
    normally one round suffices. Returns (packets, wrk argv of the last round, requests,
    seconds of load, kernel drops).
    """
    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=OUT))
    try:
        with netlab.netns("bench") as ns:
            server = netlab.start_nginx(ns, work, worker_processes=args.nginx_workers)
            url = server.url(args.path)
            requests, load_s, argv = 0, 0.0, []
            # Not immediate mode and a large buffer: throughput matters more than latency here.
            with netlab.tcpdump(ns.host_if, raw, f"tcp port {server.port}",
                                immediate=False, buffer_kib=131072) as cap:
                rate = 120_000.0  # packets/s guess for round one: 60k req/s × (request + response)
                have = 0
                deadline = time.monotonic() + args.capture_budget
                while have < need:
                    left = deadline - time.monotonic()
                    if left < 2:
                        raise RuntimeError(f"capture budget of {args.capture_budget}s spent with "
                                           f"{have} of {need} packets; raise --capture-budget")
                    dur = int(min(left, max(2.0, (need - have) / rate * 1.1 + 1)))
                    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{args.wrk_connections}", f"-d{dur}s",
                            "--timeout", "2s", url]
                    print(f"  wrk round: {' '.join(argv)}", file=sys.stderr)
                    t0 = time.monotonic()
                    res = subprocess.run(argv, check=True, capture_output=True, text=True,
                                         timeout=dur + 30, env=netlab.curl_env())
                    took = time.monotonic() - t0
                    load_s += took
                    requests += _wrk_requests(res.stdout)
                    time.sleep(1.5)  # libpcap hands packets over in blocks when not immediate
                    before, have = have, count_pcap_records(raw)
                    rate = max(1000.0, (have - before) / took)
                    print(f"  {have} packets captured ({rate:,.0f} packets/s)", file=sys.stderr)
            stats = cap.stats
            server.stop()
        return count_pcap_records(raw), argv, requests, load_s, stats.dropped_kernel if stats else None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_captures(sizes: Sequence[int], args: argparse.Namespace) -> dict[int, CaptureInfo]:
    """Reuse the captures already in bench/out; make the missing ones from one raw capture.

    A capture counts as present only with its metadata file, which is written after the pcap
    is complete and renamed into place, so an interrupted run is never mistaken for a cache hit.
    """
    OUT.mkdir(parents=True, exist_ok=True)
    infos: dict[int, CaptureInfo] = {}
    missing = []
    for n in sizes:
        pcap, meta = capture_path(n), _meta_path(capture_path(n))
        if not args.remake and pcap.exists() and meta.exists():
            info = CaptureInfo(**json.loads(meta.read_text()))
            if info.packets == n and pcap.stat().st_size == info.bytes:
                print(f"reusing {pcap.relative_to(REPO)} ({n:,} packets)", file=sys.stderr)
                infos[n] = info
                continue
        missing.append(n)
    if not missing:
        return infos
    need = int(max(missing) * 1.02) + 1000  # margin: the last round's final packets may lag
    raw = OUT / f"raw-{os.getpid()}.pcap"
    print(f"capturing ≥ {need:,} packets for {', '.join(f'{n:,}' for n in missing)}", file=sys.stderr)
    try:
        raw_packets, argv, requests, load_s, dropped = make_raw_capture(raw, need, args)
        if dropped:
            print(f"  warning: tcpdump reports {dropped} packets dropped by the kernel; the "
                  "captures have gaps", file=sys.stderr)
        for n in missing:
            pcap = capture_path(n)
            tmp = pcap.with_name(pcap.name + ".part")
            subprocess.run(["editcap", "-F", "pcap", "-r", str(raw), str(tmp), f"1-{n}"],
                           check=True, capture_output=True, timeout=600)
            got = capinfos_packets(tmp)
            if got != n:
                raise RuntimeError(f"cut of {raw} to {n} packets has {got}")
            os.replace(tmp, pcap)
            info = CaptureInfo(
                path=str(pcap.relative_to(REPO)), packets=n, bytes=pcap.stat().st_size,
                made=time.strftime("%Y-%m-%dT%H:%M:%S%z"), raw_packets=raw_packets, wrk=argv,
                wrk_requests=requests, wrk_seconds=round(load_s, 2),
                tcpdump_dropped_kernel=dropped, cut_with=f"editcap -F pcap -r RAW OUT 1-{n}",
            )
            meta_tmp = _meta_path(pcap).with_suffix(".json.part")
            meta_tmp.write_text(json.dumps(asdict(info), indent=2) + "\n")
            os.replace(meta_tmp, _meta_path(pcap))
            infos[n] = info
    finally:
        raw.unlink(missing_ok=True)
    return infos


# --------------------------------------------------------------------------------------------
# Measuring a child process


def measure(argv: Sequence[str], timeout: float) -> Run:
    """Run ``argv`` with stdout to /dev/null; wall time and ``ru_maxrss`` via ``os.wait4``
    (``timing.run_timed``: a watchdog kills the child's group after ``timeout`` seconds, so no
    run can hang the benchmark). A non-zero exit raises with the tail of its stderr."""
    return run_timed(argv, timeout, keep_stdout=False)


def shadowtap_argv(pcap: Path) -> list[str]:
    exe = Path(sys.executable).parent / "shadowtap"
    return [str(exe) if exe.exists() else "shadowtap", "extract", str(pcap), "--jsonl", os.devnull]


def tshark_argv(pcap: Path) -> list[str]:
    argv = ["tshark", "-r", str(pcap), "-Y", "http", "-T", "fields"]
    for f in TSHARK_FIELDS:
        argv += ["-e", f]
    return argv


def tshark_counts(pcap: Path, timeout: float) -> tuple[int, int, int]:
    """(lines, lines with a request method, lines with a response code) from one tshark run.

    tshark prints one line per *frame* matching ``http``, so these are frame counts (DESIGN.md
    field notes: it undercounts pipelining); without pipelining they equal message counts.
    """
    lines = reqs = resps = 0
    proc = subprocess.Popen(tshark_argv(pcap), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    timer = threading.Timer(timeout, lambda: kill_group(proc.pid))
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines += 1
            method, _, rest = line.partition(b"\t")
            if method:
                reqs += 1
            if rest.rstrip(b"\n").rpartition(b"\t")[2]:
                resps += 1
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted while reading: stop it by its PID
            kill_group(proc.pid)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"tshark counting run on {pcap} exited {proc.returncode}")
    return lines, reqs, resps


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class ToolResult:
    """Best-of-N timing of one tool on one capture, with its own counts."""

    tool: str
    packets: int
    exchanges: int  # exchanges in the file (shadowtap's count; the unit of exchanges/s)
    seconds: float  # best of the runs
    runs: list[float]
    max_rss_mib: float  # highest peak over the runs
    packets_per_s: float
    exchanges_per_s: float
    counts: dict[str, int]


def bench_size(pcap: Path, packets: int, args: argparse.Namespace) -> tuple[ToolResult, ToolResult]:
    """Time both tools on one capture; runs alternate so drift on a shared machine hits both."""
    print(f"{pcap.name}: counting tshark's output (untimed; also warms the page cache)", file=sys.stderr)
    t_lines, t_req, t_resp = tshark_counts(pcap, args.timeout)
    st_runs: list[Run] = []
    ts_runs: list[Run] = []
    for i in range(args.repeat):
        run = measure(shadowtap_argv(pcap), args.timeout)
        st_runs.append(run)
        print(f"  run {i + 1}/{args.repeat} shadowtap {run.seconds:7.2f} s {run.max_rss_mib:7.1f} MiB",
              file=sys.stderr)
        run = measure(tshark_argv(pcap), args.timeout)
        ts_runs.append(run)
        print(f"  run {i + 1}/{args.repeat} tshark    {run.seconds:7.2f} s {run.max_rss_mib:7.1f} MiB",
              file=sys.stderr)
    m = _SUMMARY.search(st_runs[-1].stderr)
    if m is None:
        raise RuntimeError(f"no summary line from shadowtap: {st_runs[-1].stderr[-500:]!r}")
    exchanges, st_packets = int(m.group(1)), int(m.group(2))
    if st_packets != packets:
        print(f"  warning: shadowtap read {st_packets} packets, capinfos says {packets}", file=sys.stderr)

    def result(tool: str, runs: list[Run], counts: dict[str, int]) -> ToolResult:
        best = min(r.seconds for r in runs)
        return ToolResult(tool, packets, exchanges, round(best, 3), [round(r.seconds, 3) for r in runs],
                          round(max(r.max_rss_mib for r in runs), 1), packets / best, exchanges / best, counts)

    return (result("shadowtap", st_runs, {"exchanges": exchanges, "packets": st_packets}),
            result("tshark", ts_runs, {"lines": t_lines, "request_lines": t_req, "response_lines": t_resp}))


def startup(timeout: float) -> Run:
    """shadowtap on a capture with no packets: the fixed cost (interpreter, imports) that every
    run pays, so RSS growth can also be judged above this floor and not only in total."""
    empty = OUT / "empty.pcap"
    empty.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    return measure(shadowtap_argv(empty), timeout)


@dataclass
class Verdict:
    """The two DESIGN.md targets, evaluated on one run's numbers."""

    speed_ratio_by_size: dict[str, float]  # tshark seconds / shadowtap seconds
    speed_target: float
    speed_ok: bool
    rss_smallest_mib: float
    rss_largest_mib: float
    rss_growth: float  # largest / smallest - 1
    rss_flat_limit: float
    rss_ok: bool
    startup_seconds: float  # shadowtap on an empty capture: interpreter and imports
    startup_rss_mib: float
    rss_above_startup_mib: dict[str, float]


def verdicts(results: dict[int, tuple[ToolResult, ToolResult]], base: Run) -> Verdict:
    """Speed: every size at least SPEED_TARGET× tshark. Memory: peak RSS of the largest capture
    within RSS_FLAT of the smallest (needs two sizes to say anything)."""
    ratios = {n: ts.seconds / st.seconds for n, (st, ts) in results.items()}
    sizes = sorted(results)
    rss_small, rss_large = results[sizes[0]][0].max_rss_mib, results[sizes[-1]][0].max_rss_mib
    growth = rss_large / rss_small - 1.0
    return Verdict(
        speed_ratio_by_size={str(n): round(r, 2) for n, r in ratios.items()},
        speed_target=SPEED_TARGET,
        speed_ok=all(r >= SPEED_TARGET for r in ratios.values()),
        rss_smallest_mib=rss_small,
        rss_largest_mib=rss_large,
        rss_growth=round(growth, 3),
        rss_flat_limit=RSS_FLAT,
        rss_ok=len(sizes) > 1 and growth <= RSS_FLAT,
        startup_seconds=round(base.seconds, 3),
        startup_rss_mib=round(base.max_rss_mib, 1),
        rss_above_startup_mib={str(n): round(results[n][0].max_rss_mib - base.max_rss_mib, 1) for n in sizes},
    )


def print_table(results: dict[int, tuple[ToolResult, ToolResult]], v: Verdict) -> None:
    head = (f"{'packets':>10}  {'tool':<9} {'seconds':>8} {'packets/s':>10} {'exch/s':>9} "
            f"{'peak RSS MiB':>12}  {'shadowtap/tshark':>16}  counts")
    print(head)
    print("-" * (len(head) + 30))
    for n in sorted(results):
        st, ts = results[n]
        ratio = ts.seconds / st.seconds
        for r in (st, ts):
            counts = " ".join(f"{k}={val}" for k, val in r.counts.items())
            rtxt = f"{ratio:15.2f}×" if r is st else ""
            print(f"{n:>10,}  {r.tool:<9} {r.seconds:>8.2f} {r.packets_per_s:>10,.0f} "
                  f"{r.exchanges_per_s:>9,.0f} {r.max_rss_mib:>12.1f}  {rtxt:>16}  {counts}")
    print("(seconds: best of the timed runs; exch/s: the file's exchanges, as counted by shadowtap, "
          "over each tool's time;\n shadowtap/tshark: speed ratio = tshark seconds / shadowtap seconds)")
    print()
    ratios = ", ".join(f"{int(k):,} packets {val}×" for k, val in v.speed_ratio_by_size.items())
    print(f"[{'PASS' if v.speed_ok else 'FAIL'}] speed ≥ {v.speed_target:g}× tshark: {ratios}")
    print(f"[{'PASS' if v.rss_ok else 'FAIL'}] peak RSS flat within {v.rss_flat_limit:.0%}: "
          f"{v.rss_smallest_mib} MiB → {v.rss_largest_mib} MiB ({v.rss_growth:+.1%})")
    above = ", ".join(f"{int(k):,} packets {val} MiB" for k, val in v.rss_above_startup_mib.items())
    print(f"       start-up alone (empty capture): {v.startup_seconds} s, {v.startup_rss_mib} MiB; "
          f"above start-up: {above}")


# --------------------------------------------------------------------------------------------
# Profile


def profile(pcap: Path, top: int) -> tuple[float, int, str]:
    """Extract ``pcap`` in-process under cProfile the way ``cmd_extract`` does, JSON included.

    Returns (wall seconds under the profiler, exchanges, the top-``top`` table by tottime). The
    raw profile is saved as bench/out/extract.prof for pstats or snakeviz.
    """
    from capture.extract import Extractor, InputReport, read_capture

    ex = Extractor()
    rep = InputReport(str(pcap))
    dumps = json.dumps
    written = 0
    prof = cProfile.Profile()
    with open(os.devnull, "w", buffering=1 << 20) as sink:
        write = sink.write
        t0 = time.perf_counter()
        prof.enable()
        for recs in read_capture(str(pcap), rep):
            for e in ex.feed(recs):
                write(dumps(e.summary()) + "\n")
                written += 1
        for e in ex.finish():
            write(dumps(e.summary()) + "\n")
            written += 1
        prof.disable()
        seconds = time.perf_counter() - t0
    prof.dump_stats(OUT / "extract.prof")
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return seconds, written, text.getvalue()


class _NullSink:
    """A reassembler sink that drops everything: isolates the cost of TCP reassembly."""

    def data(self, d: int, payload: bytes, ts: float, ack: int) -> None:
        pass

    def gap(self, d: int, nbytes: int, ts: float, cause: str) -> None:
        pass

    def eof(self, d: int, ts: float) -> None:
        pass

    def flag(self, d: int, name: str) -> None:
        pass

    def close(self, ts: float) -> None:
        pass


def stages(pcap: Path) -> list[tuple[str, float]]:
    """Wall seconds of cumulative pipeline prefixes, each a separate pass without a profiler.

    cProfile charges every Python call a fixed overhead, which inflates call-heavy layers
    (decode, segment) relative to C-heavy ones; the differences between these passes say what
    each layer really costs per packet.
    """
    from capture.extract import Extractor, InputReport, read_capture
    from capture.layers import decode
    from capture.tcp import Reassembler

    path = str(pcap)
    dumps = json.dumps

    def read_only() -> None:
        for _ in read_capture(path, InputReport(path)):
            pass

    def plus_decode() -> None:
        for recs in read_capture(path, InputReport(path)):
            for _, lt, data, orig in recs:
                decode(lt, data, orig)

    def plus_tcp() -> None:
        reasm = Reassembler(lambda conn: _NullSink())
        segment = reasm.segment
        for recs in read_capture(path, InputReport(path)):
            for ts, lt, data, orig in recs:
                seg = decode(lt, data, orig)
                if type(seg) is not str:
                    segment(ts, seg)  # type: ignore[arg-type]
        reasm.flush()

    def plus_http() -> None:
        ex = Extractor()
        for recs in read_capture(path, InputReport(path)):
            ex.feed(recs)
        ex.finish()

    def plus_json() -> None:
        ex = Extractor()
        with open(os.devnull, "w", buffering=1 << 20) as sink:
            write = sink.write
            for recs in read_capture(path, InputReport(path)):
                for e in ex.feed(recs):
                    write(dumps(e.summary()) + "\n")
            for e in ex.finish():
                write(dumps(e.summary()) + "\n")

    passes = [("read pcap records (pcapfile)", read_only), ("+ decode link/IP/TCP (layers)", plus_decode),
              ("+ TCP reassembly, null sink (tcp)", plus_tcp),
              ("+ HTTP parse and pairing (http1, pairing)", plus_http), ("+ summary() and json.dumps", plus_json)]
    out = []
    for name, fn in passes:
        t0 = time.perf_counter()
        fn()
        out.append((name, time.perf_counter() - t0))
        print(f"  {name}: {out[-1][1]:.1f} s", file=sys.stderr)
    return out


def print_stages(rows: list[tuple[str, float]], packets: int) -> None:
    print(f"{'pipeline prefix (no profiler)':<44} {'cum s':>7} {'step s':>7} {'step µs/pkt':>11} {'share':>6}")
    prev = 0.0
    total = rows[-1][1]
    for name, cum in rows:
        step = cum - prev
        print(f"{name:<44} {cum:>7.2f} {step:>7.2f} {step / packets * 1e6:>11.2f} {step / total:>6.0%}")
        prev = cum


# --------------------------------------------------------------------------------------------


def _tool_version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--packets", type=int, action="append", metavar="N",
                   help="capture size in packets (repeatable; default 1000000 and 2000000)")
    p.add_argument("--repeat", type=int, default=3, metavar="K",
                   help="timed runs per tool and size; the best is reported (default 3: this machine is shared and noisy)")
    p.add_argument("--profile", action="store_true",
                   help="also profile shadowtap in-process (cProfile) on the smallest capture")
    p.add_argument("--profile-only", action="store_true", help="profile, skip the timed comparison")
    p.add_argument("--top", type=int, default=25, help="functions shown by --profile (default 25)")
    p.add_argument("--remake", action="store_true", help="make new captures even if cached")
    p.add_argument("--path", default="/small.txt", help="what wrk fetches (default /small.txt, 137 B)")
    p.add_argument("--wrk-connections", type=int, default=4, help="wrk -c (default 4)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (default 1)")
    p.add_argument("--capture-budget", type=float, default=240.0, metavar="S",
                   help="most seconds of wrk load to reach the largest size (default 240)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="kill any single tool run after this many seconds (default 1800)")
    args = p.parse_args(argv)
    args.packets = sorted(set(args.packets or DEFAULT_SIZES))
    if min(args.packets) < 1 or args.repeat < 1:
        p.error("--packets and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep the table in order with stderr progress
    if os.geteuid() != 0:
        print("error: needs root (it creates a network namespace for the capture)", file=sys.stderr)
        return 2
    for tool in ("wrk", "nginx", "tcpdump", "tshark", "editcap", "capinfos"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (make apt)", file=sys.stderr)
            return 2
    started = time.perf_counter()
    infos = ensure_captures(args.packets, args)
    capture_s = time.perf_counter() - started
    machine: dict[str, object] = {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "tshark": _tool_version(["tshark", "--version"]), "loadavg_start": os.getloadavg(),
    }
    report: dict[str, object] = {
        "machine": machine,
        "options": {k: v for k, v in vars(args).items()},
        "captures": {str(n): asdict(i) for n, i in infos.items()},
        "capture_seconds": round(capture_s, 1),
    }
    if not args.profile_only:
        base = startup(args.timeout)
        results = {n: bench_size(REPO / infos[n].path, n, args) for n in args.packets}
        verdict = verdicts(results, base)
        print()
        print_table(results, verdict)
        report["results"] = {str(n): [asdict(r) for r in pair] for n, pair in results.items()}
        report["verdict"] = asdict(verdict)
        report["repeat"] = args.repeat
    if args.profile or args.profile_only:
        n = args.packets[0]
        print(f"\nprofiling in-process extraction of {infos[n].path} ...", file=sys.stderr)
        seconds, written, table = profile(REPO / infos[n].path, args.top)
        print(f"\ncProfile: {written} exchanges from {n:,} packets in {seconds:.1f} s under the profiler "
              f"(saved to {(OUT / 'extract.prof').relative_to(REPO)})")
        print(table)
        print("per-layer cost, from separate passes without the profiler:", file=sys.stderr)
        rows = stages(REPO / infos[n].path)
        print_stages(rows, n)
        report["profile"] = {"packets": n, "seconds_under_profiler": round(seconds, 2), "exchanges": written,
                             "stages_cumulative_seconds": {k: round(v, 2) for k, v in rows}}
    total = time.perf_counter() - started
    report["total_seconds"] = round(total, 1)
    machine["loadavg_end"] = os.getloadavg()
    # A profile-only run must not overwrite the last comparison's results.
    dest = OUT / ("extract-profile.json" if args.profile_only else "extract.json")
    dest.write_text(json.dumps(report, indent=2) + "\n")
    print(f"whole run {total:.0f} s (captures {capture_s:.0f} s); results in {dest.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
