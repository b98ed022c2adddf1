"""The seeded scenario for `shadowtap analyze`, end to end, as Istio's mirroring task lays it out.

Three network namespaces, each with the app of tests/analyze/apps.py under gunicorn on :8000:

    v1        the primary: curl sends it the traffic (`Host: svc:8000`), tcpdump on its veth
    v2        the candidate (seeded regressions), where `shadowtap replay` sends the recording
    baseline  a second copy of v1, which gets the same replay (`--baseline`), for the noise

then `shadowtap extract PCAP -o REC` and `shadowtap replay REC --target http://V2:8000
--baseline http://BASELINE:8000 --pace fast --allow-writes`. The recording REC is what the
analyze tests read; `build()` checks it is complete (one result per exchange in each of
`results/shadow` and `results/baseline`, every server's access log has every request) before
handing it over, so a failing analyze test is about analyze.

Use it as a session fixture (``from tests.analyze.scenario import scenario``), or run it by
hand (as root) to see what it records and how long it takes:

    .venv/bin/python -m tests.analyze.scenario [--keep DIR]

Every process is started with a known PID and stopped by it (netlab); every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.netlab import …` needs the repository root
    sys.path.insert(0, str(REPO))

from tests import netlab  # noqa: E402
from tests.analyze import apps  # noqa: E402

PORT = 8000
HOST = f"svc:{PORT}"  # what the clients of v1 say
SHADOW_HOST = f"svc-shadow:{PORT}"  # what replay tells v2 and the baseline (Envoy's rule)
ROLES = ("v1", "v2", "baseline")

# Credentials some requests carry; no report may contain them.
SECRET_TOKEN = "abc.def.ghi"
SECRET_COOKIE = "c00kie-v4lue-7f3a"
SECRET_HEADERS = ("-H", f"Authorization: Bearer {SECRET_TOKEN}", "-H", f"Cookie: sid={SECRET_COOKIE}; theme=dark")

CLIENTS = 4  # concurrent curl processes, one keep-alive connection each (more only adds
# CPU contention to the primary's captured latency on a 2-core machine)
# Connections per replay target. At replay's default (10) on a 2-core machine running two
# gunicorns and the replayer, per-request latency is CPU-bound: p50 2-12 ms with p99 up to
# 30-120 ms on endpoints that do nothing, and whichever server is busier looks slower. With 2
# the same endpoints answer in 1-2 ms (max ~4 ms), so the latency gate sees v2's 150 ms sleep
# on SLOW and little else. v2's SLOW endpoint costs 24 x 150 ms / 2 = 1.8 s here.
REPLAY_CONCURRENCY = 2
SEED = 20240611


# --------------------------------------------------------------------------------------------
# Servers


def start_app(ns: netlab.NetNS, workdir: Path, role: str, port: int = PORT, *, threads: int = 16,
              wait: bool = True, timeout: float = 20.0) -> netlab.Server:
    """The app of apps.py in ``role`` under gunicorn in ``ns`` (like netlab.start_httpbin).

    One gthread worker (keep-alive, access log in order per connection), ``threads`` threads so
    v2's slow endpoint does not queue the rest, ``--no-control-socket`` so several gunicorns do
    not clobber one control socket. ``wait=False`` returns at once: call
    ``netlab.wait_gunicorn(server)`` later.
    """
    env = netlab.curl_env() | {apps.ROLE_ENV: role, "PYTHONDONTWRITEBYTECODE": "1"}
    return netlab.start_gunicorn(ns, Path(workdir) / f"app-{role}-{port}", "tests.analyze.apps:create()",
                                 port=port, threads=threads, timeout=timeout, env=env, pythonpath=REPO,
                                 wait=wait)


# --------------------------------------------------------------------------------------------
# The traffic


@dataclass(frozen=True)
class Planned:
    """One request curl sends to v1: the endpoint template it belongs to and curl's arguments."""

    endpoint: str
    method: str
    target: str
    args: tuple[str, ...] = ()  # extra curl arguments (headers, body)
    secret: bool = False
    expect: int = 200  # v1's status

    def segment(self, base_url: str) -> list[str]:
        method = [] if self.method in ("GET", "POST") else ["-X", self.method]
        return [*method, "-H", f"Host: {HOST}", *self.args, base_url + self.target]


def hex_id(rng: random.Random) -> str:
    """16 hex digits with at least one letter and one digit (so it looks like an id)."""
    while True:
        h = f"{rng.getrandbits(64):016x}"
        if re.search(r"[a-f]", h) and re.search(r"\d", h):
            return h


def plan(seed: int = SEED) -> list[Planned]:
    """366 requests over the 12 endpoints, several ids each, in a shuffled order. SECRET_HEADERS
    go with every GET /products and GET /headers (which echoes them in its body), a third of
    GET /users/{id} and half of GET /session (which sets the cookie back); the POSTs carry
    JSON bodies."""
    rng = random.Random(seed)
    p: list[Planned] = []

    def add(endpoint: str, target: str, times: int = 1, **kw: Any) -> None:
        method = endpoint.split()[0]
        p.extend(Planned(endpoint, method, target, **kw) for _ in range(times))

    for uid in range(1, 21):
        add("GET /users/{id}", f"/users/{uid}", 2)
        add("GET /users/{id}", f"/users/{uid}", 1, args=SECRET_HEADERS, secret=True)
    for _ in range(10):
        add("GET /orders/{id}", f"/orders/{uuid.UUID(int=rng.getrandbits(128), version=4)}", 4)
    items = [hex_id(rng) for _ in range(12)]
    while sum(apps.v2_breaks_item(i) for i in items) < 3:  # at least 3 broken ids
        items[rng.randrange(len(items))] = hex_id(rng)
    for i in items:
        add("GET /items/{id}", f"/items/{i}", 4)
    for page in range(1, 6):  # all with credentials: every example of GET /products carries them
        add("GET /products", f"/products?page={page}", 6, args=SECRET_HEADERS, secret=True)
    for q in ("red+shoes", "lamp", "desk", "blue%20mug", "pen", "book", "chair", "green"):
        add("GET /search", f"/search?q={q}", 3)
    add("GET /time", "/time", 20)
    add("GET /session", "/session", 10)
    add("GET /session", "/session", 10, args=SECRET_HEADERS, secret=True)
    add("GET /headers", "/headers", 30, args=SECRET_HEADERS, secret=True)  # echoed in the body
    for doc in range(1, 11):
        add("GET /text/{id}", f"/text/{doc}", 3)
    for code in (200, 201, 404, 418):
        add("GET /status/{id}", f"/status/{code}", 6, expect=code)
    add("GET /health", "/health", 20)
    for n in range(20):
        body = json.dumps({"n": n, "tags": ["x", "y"][: 1 + n % 2], "note": f"echo {n}"})
        add("POST /echo", "/echo", 1, args=("-H", "Content-Type: application/json", "--data-binary", body))
    rng.shuffle(p)
    return p


def send(base_url: str, requests: Sequence[Planned], clients: int = CLIENTS) -> list[dict[str, Any]]:
    """Send ``requests`` with ``clients`` concurrent curl processes (each one keep-alive
    connection, its share in order); returns curl's per-transfer reports in plan order."""
    shares = [list(range(k, len(requests), clients)) for k in range(clients)]
    out: list[dict[str, Any] | None] = [None] * len(requests)
    errors: list[BaseException] = []

    def run(idx: list[int]) -> None:
        try:
            reports = netlab.curl([requests[i].segment(base_url) for i in idx], timeout=30.0)
            if len(reports) != len(idx):
                raise AssertionError(f"curl reported {len(reports)} transfers of {len(idx)}")
            for i, r in zip(idx, reports):
                out[i] = r
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,), name=f"client-{k}") for k, s in enumerate(shares) if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60.0)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads) or any(r is None for r in out):
        raise AssertionError("a client did not finish")
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The commands, as users run them


def shadowtap(*args: object, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`shadowtap ARGS` (the venv's command), proxies unset, not on a terminal."""
    return subprocess.run([*netlab.shadowtap_argv(), *(str(a) for a in args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=netlab.curl_env())


def _ok(p: subprocess.CompletedProcess[str], what: str) -> None:
    if p.returncode != 0:
        raise AssertionError(f"{what} exited {p.returncode}:\n{p.stderr[-3000:]}")


# --------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Scenario:
    workdir: Path
    rec: Path  # the recording: exchanges/, results/shadow (v2), results/baseline
    pcap: Path
    namespaces: dict[str, netlab.NetNS]
    servers: dict[str, netlab.Server]  # by role: "v1", "v2", "baseline"
    planned: list[Planned]  # what curl sent to v1, in plan order
    endpoint_of: dict[str, str] = field(default_factory=dict)  # exchange id -> endpoint template
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    replay_stderr: str = ""
    extract_stderr: str = ""

    def url(self, role: str) -> str:
        return self.servers[role].base_url

    def exchanges(self) -> list[dict[str, Any]]:
        from capture.recording import read_exchanges
        return list(read_exchanges(self.rec))

    def results(self, target: str) -> list[dict[str, Any]]:
        from replay.results import read_results
        return read_results(self.rec, target)


def _lat_ms(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(1000 * s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 2) if s else float("nan")


def latency_table(sc: Scenario) -> dict[str, dict[str, dict[str, float]]]:
    """Per endpoint, p50/p99 in ms as the capture saw v1 (request start to response end) and
    as replay saw v2 and the baseline (send to end): a look at the noise the latency gate meets."""
    ex = {e["id"]: e for e in sc.exchanges()}
    lat: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in ex.values():
        lat[sc.endpoint_of[e["id"]]]["primary"].append(e["t_resp_end"] - e["t_req_start"])
    for name in ("shadow", "baseline"):
        for r in sc.results(name):
            if r["t_end"] is not None and r["t_send"] is not None:
                lat[sc.endpoint_of[r["id"]]][name].append(r["t_end"] - r["t_send"])
    return {ep: {who: {"p50": _lat_ms(v, 0.5), "p99": _lat_ms(v, 0.99), "n": len(v)} for who, v in d.items()}
            for ep, d in sorted(lat.items())}


def check_recording(sc: Scenario) -> None:
    """The harness's own guarantees, so analyze tests start from a complete recording."""
    planned = sc.planned
    ex = sc.exchanges()
    want = Counter((p.method, p.target) for p in planned)
    got = Counter((e["method"], e["target"]) for e in ex)
    if got != want:
        raise AssertionError(f"extract found {len(ex)} exchanges for {len(planned)} requests: "
                             f"missing {list((want - got).items())[:5]}, extra {list((got - want).items())[:5]}")
    flagged = [(e["target"], e["flags"]) for e in ex if e["flags"] or e["error"]]
    if flagged:
        raise AssertionError(f"flagged exchanges: {flagged[:5]}")
    expect = {(p.method, p.target): p.expect for p in planned}
    wrong = [(e["target"], e["status"]) for e in ex if e["status"] != expect[(e["method"], e["target"])]]
    if wrong:
        raise AssertionError(f"v1 answered unexpectedly: {wrong[:5]}")
    ids = {e["id"] for e in ex}
    for name in ("shadow", "baseline"):
        res = sc.results(name)
        c = Counter(r["id"] for r in res)
        dup = [k for k, v in c.items() if v > 1]
        if dup or set(c) != ids:
            raise AssertionError(f"results/{name}: {len(res)} results for {len(ids)} exchanges; duplicated "
                                 f"{dup[:5]}, missing {sorted(ids - set(c))[:5]}, extra {sorted(set(c) - ids)[:5]}")
        errs = [(r["id"], r["error"], r["error_detail"]) for r in res if r["error"]]
        if errs:
            raise AssertionError(f"results/{name}: errors {errs[:5]}")
        hosts = Counter(r["host"] for r in res)
        if set(hosts) != {SHADOW_HOST}:
            raise AssertionError(f"results/{name}: Host sent {dict(hosts)}, expected {SHADOW_HOST}")
    for role in ROLES:
        n = _logged(sc.servers[role], len(planned))
        if n != len(planned):
            raise AssertionError(f"{role}'s access log has {n} requests, {len(planned)} were sent")


def _logged(server: netlab.Server, expect: int, timeout: float = 3.0) -> int:
    """Lines in the access log, once it has ``expect`` (gunicorn logs just after answering)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = len(server.records()) if server.access_log.exists() else 0
        if n >= expect:
            break
        time.sleep(0.05)
    return n


@contextlib.contextmanager
def build(workdir: Path) -> Iterator[Scenario]:
    """Start the three apps, capture curl → v1, extract, replay to v2 and the baseline, check
    the recording; yield the Scenario with the servers still running; stop everything after."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 2)
        return now

    with contextlib.ExitStack() as stack:
        namespaces = {role: stack.enter_context(netlab.netns(f"an{role[:4]}")) for role in ROLES}
        servers: dict[str, netlab.Server] = {}
        # Stops run before the namespaces' teardown (ExitStack is LIFO); teardown kills by PID too.
        def stop_servers() -> None:
            for s in reversed(list(servers.values())):
                s.stop()
        stack.callback(stop_servers)
        for role in ROLES:
            servers[role] = start_app(namespaces[role], workdir, role, wait=False)
        for role in ROLES:
            netlab.wait_gunicorn(servers[role])
        t = lap("start", t0)

        planned = plan()
        pcap = workdir / "v1.pcap"
        v1, ns1 = servers["v1"], namespaces["v1"]
        with netlab.tcpdump(ns1.host_if, pcap, f"tcp port {PORT}", lab=ns1) as cap:
            reports = send(v1.base_url, planned)
        if cap.stats is None or cap.stats.dropped_kernel:
            raise AssertionError(f"tcpdump dropped packets: {cap.stats}")
        bad = [(p.target, r["status"]) for p, r in zip(planned, reports) if r["status"] != p.expect]
        if bad:
            raise AssertionError(f"v1 answered curl unexpectedly: {bad[:5]}")
        t = lap("traffic+capture", t)

        rec = workdir / "rec"
        p = shadowtap("extract", pcap, "-o", rec)
        _ok(p, "shadowtap extract")
        extract_stderr = p.stderr
        t = lap("extract", t)

        p = shadowtap("replay", rec, "--target", servers["v2"].base_url, "--baseline",
                      servers["baseline"].base_url, "--pace", "fast", "--allow-writes",
                      "--concurrency", str(REPLAY_CONCURRENCY))
        _ok(p, "shadowtap replay")
        t = lap("replay", t)

        by_target = {(q.method, q.target): q.endpoint for q in planned}
        sc = Scenario(workdir, rec, pcap, namespaces, servers, planned, timings=timings,
                      replay_stderr=p.stderr, extract_stderr=extract_stderr)
        from capture.recording import read_exchanges
        sc.endpoint_of = {e["id"]: by_target[(e["method"], e["target"])]
                          for e in read_exchanges(rec, columns=["id", "method", "target"])}
        check_recording(sc)
        lap("check", t)
        timings["total"] = round(time.monotonic() - t0, 2)
        yield sc


# --------------------------------------------------------------------------------------------
# pytest


try:
    import pytest
except ImportError:  # pragma: no cover - plain `python -m` use without pytest installed
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
        """The seeded scenario, built once per test session (about 10-20 s; needs root)."""
        with build(tmp_path_factory.mktemp("analyze-scenario")) as sc:
            yield sc


# --------------------------------------------------------------------------------------------
# By hand


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="build in DIR and keep it (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    with contextlib.ExitStack() as stack:
        wd = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shadowtap-analyze-")))
        with build(wd) as sc:
            print(f"recording: {sc.rec}  ({len(sc.planned)} requests, {len(set(sc.endpoint_of.values()))} endpoints)")
            print("timings (s):", json.dumps(sc.timings))
            print("extract:", sc.extract_stderr.strip())
            print("replay:", sc.replay_stderr.strip())
            print("latency ms (primary from the capture; shadow/baseline from replay):")
            for ep, d in latency_table(sc).items():
                print(f"  {ep:20s} " + "  ".join(f"{w}: p50 {v['p50']:7.2f} p99 {v['p99']:7.2f} (n={v['n']})"
                                                for w, v in d.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
