"""`shadowtap replay` against real servers: httpbin v1/v2 under gunicorn and nginx in a network
namespace, tcpdump on the veth for the reference scenario, the installed command run as users
run it (exit codes, stderr, the recording it writes).

The servers' access logs are the ground truth for what reached them. One namespace serves the
module: nginx on :80 (fast, logged with `$msec`), httpbin v1 on :8000 (the captured primary),
v2 on :8001 (the shadow) and a third httpbin on :8002 that only the timeout test keeps busy.
Logs are shared by the tests, so each test reads only the lines written after its mark.
Every server is stopped by PID (netlab), every wait is bounded. Needs root.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.netlab import …` needs the repository root
    sys.path.insert(0, str(REPO))

from capture.recording import EXCHANGE_SCHEMA, PartWriter, read_exchanges  # noqa: E402
from replay.results import read_results  # noqa: E402
from tests import netlab  # noqa: E402

HOST = ["-H", "Host: httpbin:8000"]
POSTED = {"release": "v2", "n": 7, "tags": ["a", "b"]}
SYN_SERVER = "192.0.2.1:80"  # TEST-NET-1: the synthetic recordings' primary, never a target here
T0 = 1_700_000_000.0


# ------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str
    wall: float


def replay(*args: object, timeout: float = 60.0) -> Done:
    """`shadowtap replay ARGS`, as a user runs it (not a terminal: no progress line)."""
    argv = [*netlab.shadowtap_argv(), "replay", *(str(a) for a in args)]
    t = time.monotonic()
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=netlab.curl_env())
    return Done(p.returncode, p.stdout, p.stderr, time.monotonic() - t)


def replay_until_journaled(args: Sequence[object], journal: Path, err: Path) -> subprocess.Popen[bytes]:
    """`shadowtap replay ARGS` in its own session (stderr to `err`), once it has journaled a send."""
    with open(err, "wb") as f:
        proc = subprocess.Popen([*netlab.shadowtap_argv(), "replay", *map(str, args)], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                start_new_session=True, env=netlab.curl_env())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (journal.exists() and journal.stat().st_size > 0):
        if proc.poll() is not None:
            raise AssertionError(err.read_text())
        time.sleep(0.02)
    return proc


def extract(pcap: Path, rec: Path) -> Path:
    p = subprocess.run([*netlab.shadowtap_argv(), "extract", str(pcap), "-o", str(rec)], cwd=REPO,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return rec


def make_rec(rec: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A synthetic recording: one exchange per row. A row gives `target` and optionally
    `method`, `headers` (list of pairs), `body`, `t` (capture time) and `server`."""
    full = []
    for i, r in enumerate(rows):
        body = r.get("body")
        t = r.get("t", T0 + i * 0.001)
        headers = r.get("headers") or [("Host", "shop.example"), ("User-Agent", "synthetic/1")]
        full.append({
            "id": f"syn{i:06d}-0", "conn": f"syn{i:06d}", "index": 0,
            "client": f"192.0.2.10:{10000 + i % 50000}", "server": r.get("server", SYN_SERVER),
            "method": r.get("method", "GET"), "target": r["target"], "version": "HTTP/1.1",
            "req_headers": [{"name": k, "value": v} for k, v in headers],
            "req_body": body, "req_body_len": len(body or b""),
            "status": 200, "reason": "OK", "resp_version": "HTTP/1.1", "resp_headers": [],
            "resp_body": b"", "resp_body_len": 0,
            "t_req_start": t, "t_req_end": t, "t_resp_start": t + 0.0005, "t_resp_end": t + 0.0005,
            "interim": [], "flags": [], "error": None,
        })
    w = PartWriter(rec / "exchanges", EXCHANGE_SCHEMA, rows_per_part=4000)  # several parts
    for row in full:
        w.add(row)
    w.flush()
    return full


def gets(rec: Path, targets: Sequence[str], **extra: Any) -> list[dict[str, Any]]:
    return make_rec(rec, [{"target": t, **extra} for t in targets])


def mark(server: netlab.Server) -> int:
    return len(server.records()) if server.access_log.exists() else 0


def logged_since(server: netlab.Server, at: int, expect: int | None = None,
                 timeout: float = 3.0) -> list[netlab.LogRecord]:
    """Log lines after `at`, once the log has `expect` of them or stopped growing (a server
    logs a request just after answering it: the client can be done a moment earlier)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        recs = server.records()[at:] if server.access_log.exists() else []
        now = time.monotonic()
        if expect is not None and len(recs) >= expect:
            time.sleep(0.1)  # and nothing more than that
            return server.records()[at:]
        if len(recs) != last:
            last, since = len(recs), now
        elif now - since >= (0.5 if expect is None else 1.0):
            return recs
        if now > deadline:
            return recs
        time.sleep(0.05)


def ids_once(results: list[dict[str, Any]], want: set[str]) -> None:
    """Exactly one result per request sent: no duplicate, none missing, none extra."""
    c = Counter(r["id"] for r in results)
    dup = {k: v for k, v in c.items() if v > 1}
    assert not dup, f"ids with several results: {list(dup.items())[:5]}"
    assert set(c) == want, (f"missing {sorted(want - set(c))[:5]}, "
                            f"extra {sorted(set(c) - want)[:5]}")


def stderr_error_line(d: Done) -> str:
    lines = [ln for ln in d.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in d.stderr, d.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), d.stderr
    return lines[0]


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


class TinyServer:
    """A misbehaving server on 127.0.0.1, in a thread: reads a request head, then either
    resets the connection (SO_LINGER {1, 0}) or answers `NOT HTTP` and closes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"tiny-{mode}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(2.0)
                buf = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in buf and len(buf) < 65536:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                if b"\r\n\r\n" not in buf:
                    continue
                self.requests += 1
                with contextlib.suppress(OSError):
                    if self.mode == "reset":
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        c.sendall(b"NOT HTTP\r\n\r\n")
                        c.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def tiny_server(mode: str) -> Iterator[TinyServer]:
    s = TinyServer(mode)
    try:
        yield s
    finally:
        s.close()


# ------------------------------------------------------------------------------------------
# The lab (one per module) and the reference capture


@dataclass
class Lab:
    ns: netlab.NetNS
    nginx: netlab.Server
    v1: netlab.Server
    v2: netlab.Server
    slow: netlab.Server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    wd = tmp_path_factory.mktemp("servers")
    with netlab.netns("replay") as ns:
        started: list[netlab.Server] = []
        try:
            started.append(netlab.start_nginx(ns, wd))
            for port, threads in ((8000, 4), (8001, 4), (8002, 8)):
                started.append(netlab.start_httpbin(ns, wd, port=port, threads=threads))
            yield Lab(ns, *started)
        finally:
            for s in reversed(started):
                s.stop()


@dataclass
class Seed:
    pcap: Path
    curl: list[dict[str, Any]]


@pytest.fixture(scope="module")
def seed(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """The reference scenario's capture: curl → v1 with `Host: httpbin:8000`, tcpdump on the veth."""
    pcap = tmp_path_factory.mktemp("seed") / "v1.pcap"
    u = lab.v1.url
    at = mark(lab.v1)
    with netlab.tcpdump(lab.ns.host_if, pcap, f"tcp port {lab.v1.port}", lab=lab.ns) as cap:
        reports = netlab.curl([
            [*HOST, u("/headers")],
            [*HOST, u("/get?x=1")],
            [*HOST, u("/status/418")],
            [*HOST, "-I", u("/get")],
            [*HOST, u("/bytes/2000")],
            [*HOST, "-H", "Content-Type: application/json", "--data-binary", json.dumps(POSTED), u("/post")],
        ])
    assert cap.stats is not None and cap.stats.dropped_kernel == 0, cap.stats
    assert [r["status"] for r in reports] == [200, 200, 418, 200, 200, 200], reports
    assert len(logged_since(lab.v1, at, expect=6)) == 6
    return Seed(pcap, reports)


# ------------------------------------------------------------------------------------------
# 1. The reference scenario


# The asyncio loop (paced) and the native one (--pace fast) must record the same.
LOOPS = {"asyncio": ["--sender", "asyncio"], "native": ["--pace", "fast", "--sender", "native"]}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop", LOOPS)
def test_seed_scenario_v1_capture_replayed_to_v2(lab: Lab, seed: Seed, tmp_path: Path, loop: str) -> None:
    rec = tmp_path / "rec"
    at = mark(lab.v2)
    d = replay(seed.pcap, "-o", rec, "--target", lab.v2.base_url, *LOOPS[loop])
    assert d.code == 0, d.stderr
    exchanges = {e["id"]: e for e in read_exchanges(rec)}
    assert len(exchanges) == 6
    assert sorted(e["status"] for e in exchanges.values()) == [200, 200, 200, 200, 200, 418]
    safe = {i: e for i, e in exchanges.items() if e["method"] in ("GET", "HEAD")}
    assert len(safe) == 5

    log = logged_since(lab.v2, at, expect=5)
    assert sorted((r.method, r.target) for r in log) == sorted((e["method"], e["target"]) for e in safe.values())
    assert not [r for r in log if r.method == "POST"]

    results = read_results(rec, "shadow")
    ids_once(results, set(safe))
    for r in results:
        assert r["error"] is None, r
        assert r["status"] == exchanges[r["id"]]["status"], (exchanges[r["id"]]["target"], r["status"])
    (hdr,) = [r for r in results if exchanges[r["id"]]["target"] == "/headers"]
    echoed = json.loads(hdr["body"])["headers"]
    assert echoed["Host"] == "httpbin-shadow:8000"
    assert hdr["host"] == "httpbin-shadow:8000"
    assert all(r["host"] == "httpbin-shadow:8000" for r in results)
    (head,) = [r for r in results if exchanges[r["id"]]["method"] == "HEAD"]
    assert head["body_len"] == 0 and not head["body"]
    (b2000,) = [r for r in results if exchanges[r["id"]]["target"] == "/bytes/2000"]
    assert b2000["body_len"] == 2000 and len(b2000["body"]) == 2000

    assert re.search(r"\b1 writes? not sent \(POST 1\b", d.stderr), d.stderr
    sent_log = (rec / "results" / "shadow" / "_sent.log").read_text().split()
    assert sorted(sent_log) == sorted(safe)
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["replay"]["targets"]["shadow"]["sent"] == 5
    assert manifest["replay"]["skipped_writes"] == {"POST": 1}

    # With --allow-writes, into a new results name: the POST reaches v2 too.
    at = mark(lab.v2)
    d = replay(rec, "--target", lab.v2.base_url, "--name", "withwrites", "--allow-writes")
    assert d.code == 0, d.stderr
    log = logged_since(lab.v2, at, expect=6)
    assert sorted((r.method, r.target) for r in log) == sorted((e["method"], e["target"]) for e in exchanges.values())
    assert [(r.method, r.target) for r in log if r.method == "POST"] == [("POST", "/post")]
    results = read_results(rec, "withwrites")
    ids_once(results, set(exchanges))
    (post,) = [r for r in results if exchanges[r["id"]]["method"] == "POST"]
    assert post["error"] is None and post["status"] == 200, post
    answer = json.loads(post["body"])
    assert answer["json"] == POSTED
    assert answer["headers"]["Host"] == "httpbin-shadow:8000"
    assert read_results(rec, "shadow") and len(read_results(rec, "shadow")) == 5  # untouched


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop", LOOPS)
def test_baseline_and_several_targets_get_the_same_sample(lab: Lab, seed: Seed, tmp_path: Path, loop: str) -> None:
    """--baseline (a second copy of the primary, for analyze's noise) and a second named
    target receive exactly the requests the shadow does, each recorded under its own name."""
    rec = extract(seed.pcap, tmp_path / "rec")
    at = {s.port: mark(s) for s in (lab.v2, lab.slow, lab.nginx)}
    d = replay(rec, "--target", lab.v2.base_url, "--target", f"other={lab.nginx.base_url}",
               "--baseline", lab.slow.base_url, "--percent", "60", "--seed", "b", *LOOPS[loop])
    assert d.code == 0, d.stderr
    ids = {name: sorted(r["id"] for r in read_results(rec, name)) for name in ("shadow", "other", "baseline")}
    assert ids["shadow"] and ids["shadow"] == ids["other"] == ids["baseline"], ids
    n = len(ids["shadow"])
    assert len(logged_since(lab.v2, at[lab.v2.port], expect=n)) == n
    assert len(logged_since(lab.slow, at[lab.slow.port], expect=n)) == n
    assert len(logged_since(lab.nginx, at[lab.nginx.port], expect=n)) == n
    base = {r["id"]: r for r in read_results(rec, "baseline")}
    assert {r["host"] for r in base.values()} == {"httpbin-shadow:8000"}  # the same request everywhere
    targets = json.loads((rec / "manifest.json").read_text())["replay"]["targets"]
    assert set(targets) == {"shadow", "other", "baseline"} and all(t["sent"] == n for t in targets.values())


@pytest.mark.timeout(120)
def test_fast_replay_planned_in_c_sends_what_python_plans(lab: Lab, tmp_path: Path) -> None:
    """From a recording, --pace fast to the native loop is planned by planner.c, a batch at a
    time; a batch it cannot take (here one holding a header beyond Latin-1, which the edits
    drop) is planned in Python. Either way nginx must see, and the results must record,
    exactly what the asyncio loop (planned in Python, row by row) sends."""
    rng = random.Random(11)
    rows = []
    for i in range(9_000):
        headers = [("Host", rng.choice(["shop.example", "shop.example:8080", "[::1]:80"])), ("X-Request-Id", f"u{i % 700}")]
        if rng.random() < 0.2:
            headers.append(("Cookie", "s=1"))
        if 5_000 <= i < 5_010:  # in the second 4,096-row batch only
            headers.append(("X-Drop", "\u2603"))
        rows.append({"target": f"/small.txt?row={i}", "headers": headers,
                     "method": rng.choice(["GET", "GET", "GET", "HEAD", "POST", "OPTIONS"])})
    rec = tmp_path / "rec"
    make_rec(rec, rows)
    args = ["--pace", "fast", "--percent", "40", "--seed", "c", "--sample-key", "header:x-request-id",
            "--drop-header", "x-drop", "--drop-header", "cookie", "--set-header", "X-Shadow: 1", "--allow-writes"]
    seen = {}
    for name, sender in (("native", "native"), ("asyncio", "asyncio")):
        at = mark(lab.nginx)
        d = replay(rec, "--target", lab.nginx.base_url, "--name", name, "--sender", sender, *args)
        assert d.code == 0, d.stderr
        results = read_results(rec, name)
        log = logged_since(lab.nginx, at, expect=len(results))
        summary = [line for line in d.stderr.splitlines() if "exchanges read" in line]
        seen[name] = (sorted((r["id"], r["host"], r["status"], r["error"]) for r in results),
                      sorted((x.method, x.target) for x in log), summary)
    assert seen["native"] == seen["asyncio"]
    ids = seen["native"][0]
    assert 3_000 < len(ids) < 4_200, len(ids)  # 40 % of 9,000, by 700 request ids
    assert {h for _, h, _, _ in ids} == {"shop.example-shadow", "shop.example-shadow:8080", "[::1]-shadow:80"}
    sent = {t.rpartition("=")[2] for _, t in seen["native"][1]}
    assert sent & {str(i) for i in range(5_000, 5_010)}  # some of the batch Python planned were sent


# ------------------------------------------------------------------------------------------
# 2. What the shadow is told, as the real server echoes it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", LOOPS)  # from a recording, --pace fast plans in C (planner.c)
@pytest.mark.parametrize("name,args,want_host,check", [
    ("keep", ["--no-shadow-suffix"], "httpbin:8000", None),
    ("literal", ["--host-rewrite", "foo.example"], "foo.example", None),
    ("edits", ["--set-header", "X-Shadow: 1", "--drop-header", "User-Agent"], "httpbin-shadow:8000", "edits"),
])
def test_host_rules_through_httpbin(lab: Lab, seed: Seed, tmp_path: Path, name: str, args: list[str],
                                    want_host: str, check: str | None, loop: str) -> None:
    rec = extract(seed.pcap, tmp_path / "rec")
    at = mark(lab.v2)
    d = replay(rec, "--target", lab.v2.base_url, "--name", name, "--include-path", "^/headers$", *args,
               *LOOPS[loop])
    assert d.code == 0, d.stderr
    log = logged_since(lab.v2, at, expect=1)
    assert [(r.method, r.target) for r in log] == [("GET", "/headers")]
    (r,) = read_results(rec, name)
    assert r["status"] == 200 and r["error"] is None, r
    echoed = json.loads(r["body"])["headers"]
    assert echoed["Host"] == want_host
    assert r["host"] == want_host
    if check == "edits":
        assert echoed.get("X-Shadow") == "1", echoed
        assert "User-Agent" not in echoed, echoed
    else:
        assert echoed.get("User-Agent", "").startswith("curl/"), echoed
        assert "X-Shadow" not in echoed


# ------------------------------------------------------------------------------------------
# 3. Sampling


def _small_targets(tag: str, n: int) -> list[str]:
    return [f"/small.txt?{tag}={i}" for i in range(n)]


@pytest.mark.timeout(120)
def test_percent_sampling_is_deterministic_end_to_end(lab: Lab, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rows = gets(rec, _small_targets("samp", 10_000))
    target_of = {r["id"]: r["target"] for r in rows}
    url = lab.nginx.base_url
    picked: dict[str, set[str]] = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        at = mark(lab.nginx)
        d = replay(rec, "--target", url, "--name", name, "--percent", "10", "--seed", seed,
                   "--pace", "fast", "--concurrency", "20")
        assert d.code == 0, d.stderr
        results = read_results(rec, name)
        ids = {r["id"] for r in results}
        log = logged_since(lab.nginx, at, expect=len(results))
        assert 900 <= len(log) <= 1100, len(log)
        assert len(log) == len(results), (len(log), len(results))
        ids_once(results, ids)
        assert all(r["status"] == 200 and r["error"] is None for r in results)
        assert Counter(x.target for x in log) == Counter(target_of[i] for i in ids)
        assert re.search(rf"\b{10_000 - len(ids)} sampled out\b", d.stderr), d.stderr
        picked[name] = ids
    assert picked["a"] == picked["b"]
    assert picked["a"] != picked["c"]
    assert len(picked["a"] & picked["c"]) < 300  # independent samples overlap ~10 %


@pytest.mark.timeout(90)
def test_sample_key_header_keeps_a_users_requests_together(lab: Lab, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    users, per = 200, 50
    rows = make_rec(rec, [
        {"target": f"/small.txt?user={i % users}&i={i}",
         "headers": [("Host", "shop.example"), ("X-User", f"user{i % users}")]}
        for i in range(users * per)
    ])
    user_of = {r["id"]: r["req_headers"][1]["value"] for r in rows}
    at = mark(lab.nginx)
    d = replay(rec, "--target", lab.nginx.base_url, "--percent", "10", "--sample-key", "header:x-user",
               "--pace", "fast", "--concurrency", "20")
    assert d.code == 0, d.stderr
    results = read_results(rec, "shadow")
    ids_once(results, {r["id"] for r in results})
    log = logged_since(lab.nginx, at, expect=len(results))
    assert len(log) == len(results)
    per_user = Counter(user_of[r["id"]] for r in results)
    assert set(per_user.values()) == {per}, per_user  # all in or all out
    assert 5 <= len(per_user) <= 40, len(per_user)  # ~20 of 200 users


# ------------------------------------------------------------------------------------------
# 4. Pacing, measured by nginx's clock


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sender", ["native", "asyncio"])  # the C loop's timer, asyncio's timers
def test_pacing_matches_schedule_at_nginx(lab: Lab, tmp_path: Path, sender: str) -> None:
    n = 300
    gaps = [0.020] * (n - 1)
    for i, g in ((40, 0.150), (41, 0.003), (42, 0.003), (100, 0.001), (101, 0.001), (170, 0.300), (250, 0.045)):
        gaps[i] = g
    times = [T0]
    for g in gaps:
        times.append(times[-1] + g)
    rec = tmp_path / "rec"
    rows = make_rec(rec, [{"target": f"/small.txt?pace={i}", "t": t} for i, t in enumerate(times)])
    index = {r["id"]: i for i, r in enumerate(rows)}
    modes = {
        "captured": ([], [t - T0 for t in times]),
        "speed2": (["--speed", "2"], [(t - T0) / 2 for t in times]),
        "rate100": (["--rate", "100"], [i / 100 for i in range(n)]),
    }
    report: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    for name, (args, offsets) in modes.items():
        at = mark(lab.nginx)
        d = replay(rec, "--target", lab.nginx.base_url, "--name", name, "--sender", sender, *args)
        assert d.code == 0, d.stderr
        log = logged_since(lab.nginx, at, expect=n)
        assert len(log) == n, (name, len(log))
        msec = {int(x.target.rpartition("=")[2]): x.msec for x in log}
        assert sorted(msec) == list(range(n)), name
        results = read_results(rec, name)
        ids_once(results, set(index))
        due = {index[r["id"]]: r["t_due"] for r in results}
        # The schedule itself: due times are the offsets from the first request, exactly.
        sched_err = max(abs((due[i] - due[0]) - offsets[i]) for i in range(n))
        # At the server: arrival (msec, 1 ms resolution) relative to the first request's.
        err_ms = [1000 * ((msec[i] - msec[0]) - offsets[i]) for i in range(n)]  # type: ignore[operator]
        lag = {index[r["id"]]: 1000 * (r["t_send"] - r["t_due"]) for r in results}
        abs_lag = [abs(v) for v in lag.values()]
        rest = [1000 * ((msec[i] - msec[1]) - (offsets[i] - offsets[1])) for i in range(1, n)]  # type: ignore[operator]
        report[name] = {"server_err_max_ms": round(max(map(abs, err_ms)), 2),
                        "server_err_max_ms_from_req1": round(max(map(abs, rest)), 2),
                        "first_lag_ms": round(lag[0], 3), "send_err_p50_ms": round(pct(abs_lag, 0.5), 3),
                        "send_err_p99_ms": round(pct(abs_lag, 0.99), 3), "send_err_max_ms": round(max(abs_lag), 3),
                        "earliest_ms": round(min(lag.values()), 3), "sched_err_s": sched_err}
        if sched_err > 1e-6:
            failures.append(f"{name}: due times are not the schedule (max error {sched_err} s)")
        # nginx stamps $msec when it logs, so a request sent on time can still be logged late
        # when the suite holds both cores (one was, 7 ms, in a CI run whose sends were all
        # within 1.8 ms). A schedule that drifts or is kept by accumulated sleeps moves most
        # of them; so: the median within 2 ms, 98 % within 5 ms, none beyond 30 ms.
        abs_err = [abs(e) for e in err_ms]
        report[name]["server_err_p50_ms"] = round(pct(abs_err, 0.5), 2)
        report[name]["server_err_p98_ms"] = round(pct(abs_err, 0.98), 2)
        if pct(abs_err, 0.5) > 2.0 or pct(abs_err, 0.98) > 5.0 or max(abs_err) > 30.0:
            worst = max(range(n), key=lambda i: abs(err_ms[i]))
            failures.append(f"{name}: requests reached nginx off schedule: median {pct(abs_err, 0.5):.1f} ms, "
                            f"p98 {pct(abs_err, 0.98):.1f} ms, worst request {worst} {err_ms[worst]:+.1f} ms "
                            f"(relative to request 0, itself sent {lag[0]:.1f} ms after its due time)")
        # The 2 ms p99 target is bench/replay.py's to measure on a quiet machine; here, sharing
        # two cores with the rest of the suite, a schedule that drifts or starts late fails.
        if pct(abs_lag, 0.99) > 5.0:
            failures.append(f"{name}: |t_send - t_due| p99 {pct(abs_lag, 0.99):.3f} ms > 5 ms")
    print("pacing:", json.dumps(report))
    assert not failures, f"{failures}; measurements: {report}"


# ------------------------------------------------------------------------------------------
# 5. Errors are results, one per request


@pytest.mark.timeout(60)
def test_refused_port(lab: Lab, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rows = gets(rec, _small_targets("refused", 50))
    d = replay(rec, "--target", f"http://{lab.ns.ns_ip}:9", "--pace", "fast")
    assert d.code == 0, d.stderr
    assert d.wall < 5.0, d.wall
    results = read_results(rec, "shadow")
    ids_once(results, {r["id"] for r in rows})
    assert Counter(r["error"] for r in results) == {"refused": 50}
    assert all(r["status"] is None for r in results)
    assert "refused 50" in d.stderr, d.stderr


@pytest.mark.timeout(60)
def test_timeout_is_bounded(lab: Lab, tmp_path: Path) -> None:
    n, conc, timeout = 4, 2, 1.0
    rec = tmp_path / "rec"
    rows = gets(rec, [f"/delay/3?i={i}" for i in range(n)])
    d = replay(rec, "--target", lab.slow.base_url, "--timeout", timeout, "--concurrency", conc, "--pace", "fast")
    assert d.code == 0, d.stderr
    results = read_results(rec, "shadow")
    ids_once(results, {r["id"] for r in rows})
    assert Counter(r["error"] for r in results) == {"timeout": n}, [(r["error"], r["error_detail"]) for r in results]
    for r in results:
        assert 0.9 * timeout <= r["t_end"] - r["t_send"] <= timeout + 0.3, r
    bound = 1.0 + timeout * math.ceil(n / conc) + 1.0  # 1 s slack: interpreter start, reading REC
    assert d.wall < bound, (d.wall, bound)
    seconds = json.loads((rec / "manifest.json").read_text())["replay"]["seconds"]
    assert seconds < timeout * math.ceil(n / conc) + 0.5, seconds


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode,kind", [("reset", "reset"), ("garbage", "protocol")])
def test_misbehaving_server(tmp_path: Path, mode: str, kind: str) -> None:
    n = 20
    rec = tmp_path / "rec"
    rows = gets(rec, [f"/x?i={i}" for i in range(n)])
    with tiny_server(mode) as srv:
        d = replay(rec, "--target", f"http://127.0.0.1:{srv.port}", "--pace", "fast", "--concurrency", "4",
                   "--timeout", "5")
        requests = srv.requests
    assert d.code == 0, d.stderr
    results = read_results(rec, "shadow")
    ids_once(results, {r["id"] for r in rows})
    assert Counter(r["error"] for r in results) == {kind: n}, \
        Counter((r["error"], r["error_detail"]) for r in results)
    assert requests == n  # no retries: each request reached the server once
    assert d.wall < 10, d.wall


@pytest.mark.timeout(60)
def test_max_body_is_too_large_with_the_head_kept(lab: Lab, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rows = gets(rec, [f"/bytes/2000?seed={i}" for i in range(3)], headers=[("Host", "httpbin:8000")])
    d = replay(rec, "--target", lab.v2.base_url, "--max-body", "100", "--pace", "fast")
    assert d.code == 0, d.stderr
    results = read_results(rec, "shadow")
    ids_once(results, {r["id"] for r in rows})
    for r in results:
        assert r["error"] == "too_large", r
        assert r["status"] == 200
        assert r["body"] is not None and len(r["body"]) == 100
        assert r["body_len"] == 2000


# ------------------------------------------------------------------------------------------
# 6. Resume after SIGKILL: never sent twice, every id answered or marked interrupted


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop", ["asyncio", "native_paced", "native"])
def test_resume_after_sigkill(lab: Lab, tmp_path: Path, loop: str) -> None:
    """Paced at 400 req/s to nginx (either loop), and fast (the native loop) to an httpbin
    that takes 20 ms per answer: each is killed mid-run and resumed."""
    n = 2000
    rec = tmp_path / "rec"
    if loop != "native":
        server = lab.nginx
        rows = gets(rec, _small_targets("resume", n))
        args = [rec, "--target", server.base_url, "--rate", "400", "--sender", loop.partition("_")[0]]
    else:
        server = lab.slow
        rows = gets(rec, [f"/delay/0.02?resume={i}" for i in range(n)])
        args = [rec, "--target", server.base_url, "--pace", "fast", "--concurrency", "4", "--sender", "native"]
    target_of = {r["id"]: r["target"] for r in rows}
    at = mark(server)
    journal = rec / "results" / "shadow" / "_sent.log"
    proc = replay_until_journaled(args, journal, tmp_path / "first.err")
    try:
        time.sleep(2.0)
        assert proc.poll() is None, "the first run ended before it was killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    journaled = set(journal.read_text().split())
    assert 200 < len(journaled) < n, len(journaled)

    d = replay(*args)
    assert d.code == 0, d.stderr
    assert "interrupted" in d.stderr, d.stderr
    log = logged_since(server, at, expect=n)
    dup = [t for t, c in Counter(x.target for x in log).items() if c > 1]
    assert not dup, f"sent twice: {dup[:5]}"
    logged = {x.target for x in log}
    assert logged <= set(target_of.values())

    results = read_results(rec, "shadow")
    ids_once(results, set(target_of))
    assert len(results) == n
    interrupted = {r["id"] for r in results if r["error"] == "interrupted"}
    assert interrupted <= journaled
    assert len(interrupted) + len(logged) >= n
    # What nginx never saw was journaled by the killed run and is recorded as interrupted.
    never = {i for i, t in target_of.items() if t not in logged}
    assert never <= interrupted, sorted(never - interrupted)[:5]
    answered = [r for r in results if r["error"] != "interrupted"]
    assert all(r["error"] is None and r["status"] == 200 for r in answered)
    assert {target_of[r["id"]] for r in answered} <= logged
    resumed = json.loads((rec / "manifest.json").read_text())["replay"]["targets"]["shadow"]["resumed"]
    assert resumed == {"already_sent": len(journaled), "interrupted": len(interrupted)}, resumed

    # A third run finds everything done: nothing is sent, nothing is added.
    at = mark(server)
    d = replay(*args)
    assert d.code == 0, d.stderr
    assert re.search(rf"\b{n} already sent by an earlier run\b", d.stderr), d.stderr
    assert logged_since(server, at) == []
    assert len(read_results(rec, "shadow")) == n


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sender", ["native", "asyncio"])
def test_sigint_stops_sending_and_a_rerun_finishes(lab: Lab, tmp_path: Path, sender: str) -> None:
    """SIGINT in a paced run: nothing more is sent (the native loop holds jobs ahead of their
    time: they are dropped, never journaled), what was sent is answered and recorded, exit 1;
    the same command again sends the rest, none twice."""
    n = 1500
    rec = tmp_path / "rec"
    rows = gets(rec, _small_targets("sigint", n))
    target_of = {r["id"]: r["target"] for r in rows}
    args = [rec, "--target", lab.nginx.base_url, "--rate", "300", "--sender", sender]
    at = mark(lab.nginx)
    journal = rec / "results" / "shadow" / "_sent.log"
    proc = replay_until_journaled(args, journal, tmp_path / "first.err")
    try:
        time.sleep(1.5)
        t_signal = time.time()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = (tmp_path / "first.err").read_text()
    assert code == 1, stderr
    assert "again to resume" in stderr, stderr
    journaled = journal.read_text().split()
    assert 200 < len(journaled) < 1000, len(journaled)  # ~1.5-2 s at 300 req/s
    time.sleep(0.3)
    first = logged_since(lab.nginx, at)
    assert len(first) == len(journaled)  # every journaled request reached nginx, and no other
    # (3.3 ms apart at 300 req/s; 100 ms leaves a loaded machine time to hear the signal,
    # where the 250 ms the native loop holds ahead would put some 30 requests past it)
    late = [x.msec for x in first if x.msec > t_signal + 0.1]
    assert not late, f"{len(late)} requests reached nginx after the signal"
    results = read_results(rec, "shadow")
    assert sorted(r["id"] for r in results) == sorted(journaled)
    assert all(r["error"] is None and r["status"] == 200 for r in results)

    d = replay(*args, "--pace", "fast")
    assert d.code == 0, d.stderr
    log = logged_since(lab.nginx, at, expect=n)
    assert sorted(x.target for x in log) == sorted(target_of.values())  # each exactly once
    ids_once(read_results(rec, "shadow"), set(target_of))


# ------------------------------------------------------------------------------------------
# 7. The captured primary is not a target unless allowed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", LOOPS)
def test_refuses_the_captured_primary(lab: Lab, seed: Seed, tmp_path: Path, loop: str) -> None:
    rec = extract(seed.pcap, tmp_path / "rec")
    at = mark(lab.v1)
    d = replay(rec, "--target", lab.v1.base_url, *LOOPS[loop])
    assert d.code == 2, d.stderr
    line = stderr_error_line(d)
    assert "--allow-primary" in line, line
    time.sleep(0.3)
    assert mark(lab.v1) == at, "a request reached the primary"
    assert read_results(rec, "shadow") == []

    d = replay(rec, "--target", lab.v1.base_url, "--allow-primary", *LOOPS[loop])
    assert d.code == 0, d.stderr
    log = logged_since(lab.v1, at, expect=5)
    assert sorted(r.method for r in log) == ["GET", "GET", "GET", "GET", "HEAD"]
    assert len(read_results(rec, "shadow")) == 5


# ------------------------------------------------------------------------------------------
# 8. Bad input: exit 2, one line, no traceback


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["missing", "not_a_recording", "percent", "ftp", "native_https"])
def test_bad_input(tmp_path: Path, case: str) -> None:
    rec = tmp_path / "rec"
    gets(rec, ["/a"])
    target = ["--target", "http://127.0.0.1:9"]
    if case == "missing":
        args = [tmp_path / "nope", *target]
    elif case == "not_a_recording":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "x.txt").write_text("x")
        args = [tmp_path / "plain", *target]
    elif case == "percent":
        args = [rec, *target, "--percent", "150"]
    elif case == "native_https":  # the native loop speaks plain http
        args = [rec, "--target", "https://127.0.0.1:9", "--sender", "native"]
    else:
        args = [rec, "--target", "ftp://x"]
    d = replay(*args, timeout=30)
    assert d.code == 2, (d.code, d.stderr)
    assert "Traceback" not in d.stderr, d.stderr
    if case == "percent":  # argparse's usage error: usage lines, then one error line
        errors = [ln for ln in d.stderr.splitlines() if "error:" in ln]
        assert len(errors) == 1 and "--percent" in errors[0], d.stderr
    else:
        line = stderr_error_line(d)
        assert {"missing": "nope", "not_a_recording": "not a recording", "ftp": "ftp://x",
                "native_https": "http:// targets only"}[case] in line, line
    assert not (rec / "results").exists() or not any((rec / "results").rglob("part-*.parquet"))


@pytest.mark.timeout(60)
def test_progress_on_a_terminal(lab: Lab, tmp_path: Path) -> None:
    """On a terminal the run shows a live line (sent, responses, errors, lag) and still ends
    with the same summary; the line is gone when it ends."""
    import pty

    rec = tmp_path / "rec"
    gets(rec, [f"/small.txt?tty={i}" for i in range(300)])
    master, slave = pty.openpty()
    argv = [*netlab.shadowtap_argv(), "replay", str(rec), "--target", lab.nginx.base_url, "--rate", "300"]
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(10) == 0
    text = out.decode(errors="replace")
    assert "sent " in text and "responses " in text and "lag " in text, text[-2000:]
    assert "300 requests, 300 responses" in text
