"""Benchmark `shadowtap analyze` against DeepDiff on the same pairs of answers (DESIGN.md target:
≥ 10× DeepDiff's pairs/s on httpbin-like JSON with 10 % of the pairs differing, same findings).

Why it is built this way:

* The recording is synthetic and seeded: N exchanges (default 200,000) of httpbin-like JSON
  answers (``/get``, ``/headers``, ``/json``, ``POST /anything/orders``, ``/users/{id}``,
  ``/users/{id}/orders``: nested objects, lists, strings, numbers, booleans), written with
  ``capture.recording.PartWriter`` and ``replay.results.ResultParts`` exactly as ``extract``
  and ``replay`` write them. The shadow's answer is the primary's, byte for byte, except in
  a seeded random 10 % of the pairs, where one or two things change in the body: a value, a
  missing field, a type (number → string or float, boolean → string, string → null) or a list
  (an element changed, added, removed, or two swapped). The generator keeps the list of the
  pairs it changed (the ground truth) and checks each change is real (canonical JSON differs).
  ``Date`` differs on every pair (the shadow answered later; analyze ignores it by default)
  and ``Content-Length`` with the body; the Host echoed in bodies is the same on both sides
  (the replay kept the captured Host), so no mirroring artifact muddies the comparison with
  DeepDiff. ``--reformat`` serialises every shadow body differently (compact, keys unsorted):
  the same JSON in other bytes, which takes analyze off its equal-bytes fast path.
  Recordings are cached in ``bench/out/`` by their parameters (gitignored); ``--fresh`` remakes.
* analyze is timed as a child process (wall, CPU and peak RSS from ``os.wait4``), start-up,
  reading the recording and writing the three reports included:
  ``shadowtap analyze REC --baseline none --json F --markdown F --html F``. If
  ``analyze.report_html`` cannot be imported (checked at run time), the CLI would fail when it
  writes the reports, so the headline becomes the in-process driver instead (below) and the
  table says so.
* The in-process driver (a child: ``bench/analyze.py --_driver …``) runs the CLI's own
  ``cmd_analyze`` from the CLI's own parser, with ``analyze.cli.Analyzer`` wrapped only to
  keep a handle on it afterwards; its ``pair_paths`` give, per pair, the paths that differed,
  so the findings are compared pair by pair, not only as counts. Without ``report_html`` it
  writes report.json and summary.md only.
* DeepDiff runs in this process afterwards (so this script is small when it starts the
  children: a child's ru_maxrss starts at its parent's RSS), on the same bytes read back from
  the recording's Parquet parts: ``json.loads`` of both bodies (timed apart), then
  ``DeepDiff(primary, shadow)`` with its defaults, timed per pair. On every pair if that fits
  ``--deepdiff-budget`` seconds (estimated from the first 1,000 pairs of a seeded random
  order), else on a seeded random subset of at least 20,000 pairs, whose rate stands for all
  (the table says so). The ratio is analyze's pairs/s (whole CLI process, wall clock) over
  DeepDiff's (DeepDiff calls only, decoding not charged to it): the strict reading.
* Findings: (1) counts: report.json's ``replayed - identical`` must equal the number of pairs
  DeepDiff finds different (on every pair), or, on a subset, the ground truth's count while
  DeepDiff agrees with the ground truth on the subset; (2) ids: the driver's pairs with
  differing paths must be exactly the ground truth's, and exactly DeepDiff's on the pairs
  DeepDiff saw. Every pair must be compared (replayed = N, no errors).
* ``--profile`` (or ``auto``: when analyze misses the target) samples the driver run with py-spy
  (``record --format raw``; an extra run when the driver is the headline, so its timing stays
  clean) and prints the top self-time functions and the share of DeepDiff, of reading the
  recording, of pandas, of writing the reports; from DeepDiff's share it derives the ceiling the
  ratio has while analyze explains each differing pair with DeepDiff.
  ``BENCH_ANALYZE_NO_HTML=1`` makes the script behave as if ``analyze.report_html`` were missing.

Run: ``.venv/bin/python bench/analyze.py`` (about 2–3 minutes at the default N on this
two-core machine, once the recording is cached). Results also go to ``bench/out/analyze.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# This file is bench/analyze.py and bench/capture.py exists: with bench/ on sys.path (it is the
# script's directory) they would shadow the packages `analyze` and `capture`. The repo root only.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (REPO, REPO / "bench")]

from bench.timing import Run, run_timed  # noqa: E402  (needs the repo root on sys.path first)

OUT = REPO / "bench" / "out"
DEFAULT_N = 200_000
DIFF_RATE = 0.10
SPEED_TARGET = 10.0  # analyze pairs/s ÷ DeepDiff pairs/s
MIN_SUBSET = 20_000  # DeepDiff on fewer pairs than this is not a measurement
PILOT = 1_000
GEN_VERSION = 1  # bump when the generator changes: cached recordings are keyed on it
HOST = "httpbin:8000"
TARGET = "shadow"
NO_HTML_ENV = "BENCH_ANALYZE_NO_HTML"  # set: behave as if analyze.report_html did not exist (to test that path)


# --------------------------------------------------------------------------------------------
# The synthetic recording

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
          "uniform", "victor", "whiskey", "xray", "yankee", "zulu")
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Donald",
          "Edsger", "Radia", "John", "Katherine", "Tim", "Guido")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen",
         "Knuth", "Dijkstra", "Perlman", "McCarthy", "Johnson", "Berners-Lee", "van Rossum")
_CITIES = ("Lisbon", "Oslo", "Kyoto", "Austin", "Nairobi", "Lima", "Perth", "Zagreb", "Quito", "Dakar")
_AGENTS = ("curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1", "okhttp/4.12.0",
           "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0")
_ROLES = ("user", "admin", "editor", "viewer", "billing", "support")
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
# Leaves the generator never changes: the Host/client echoes (a change there is a mirroring
# artifact by analyze's rules, not a regression) and values analyze reads as volatile by nature.
_FROZEN = frozenset(("origin", "url", "Host", "created", "data", "X-Request-Id"))
_SLIDESHOW = {"slideshow": {"author": "Yours Truly", "date": "date of publication", "slides": [
    {"title": "Wake up to WonderWidgets!", "type": "all"},
    {"items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"],
     "title": "Overview", "type": "all"}], "title": "Sample Slide Show"}}
# Endpoint mix: (weight, name)
_MIX = ((25, "get"), (10, "headers"), (5, "json"), (15, "anything"), (30, "user"), (15, "orders"))


def _dump(doc: Any) -> bytes:
    """httpbin's (Flask's pretty jsonify): sorted keys, two-space indent, a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _dump_other(doc: Any) -> bytes:
    """The same JSON in other bytes: compact, keys in insertion order (--reformat)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _echo_headers(rng: random.Random, agent: str, rid: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Accept": "*/*" if rng.random() < 0.7 else "application/json", "Accept-Encoding": "gzip, deflate",
         "Host": HOST, "User-Agent": agent, "X-Request-Id": rid}
    if extra:
        h.update(extra)
    return h


def _order(rng: random.Random, oid: int) -> dict[str, Any]:
    qty = rng.randint(1, 5)
    price = round(rng.uniform(1, 300), 2)
    return {"id": oid, "sku": f"SKU-{rng.randint(1000, 9999)}", "qty": qty, "price": price,
            "total": round(qty * price, 2), "status": rng.choice(_STATUSES),
            "created": f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T{rng.randint(10, 23)}:{rng.randint(10, 59)}:00Z"}


def _user(rng: random.Random, uid: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "id": uid, "username": f"{first.lower()}{uid}", "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower().replace(' ', '')}@example.com",
        "active": rng.random() < 0.85, "score": round(rng.uniform(0, 100), 2), "visits": rng.randint(0, 5000),
        "roles": rng.sample(_ROLES, rng.randint(1, 3)),
        "address": {"street": f"{rng.randint(1, 999)} {rng.choice(_WORDS).title()} St",
                    "city": rng.choice(_CITIES), "zip": f"{rng.randint(10000, 99999)}",
                    "geo": {"lat": round(rng.uniform(-90, 90), 5), "lng": round(rng.uniform(-180, 180), 5)}},
        "preferences": {"theme": rng.choice(("dark", "light", "auto")), "language": rng.choice(("en", "pt", "ja", "fr")),
                        "notifications": {"email": rng.random() < 0.5, "sms": rng.random() < 0.2, "push": rng.random() < 0.6}},
        "tags": rng.sample(_WORDS, rng.randint(0, 4)),
        "created": f"20{rng.randint(15, 23)}-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T08:00:00Z",
        "orders": [_order(rng, uid * 100 + k) for k in range(rng.randint(0, 3))],
    }


def make_pair(rng: random.Random, i: int, client_ip: str) -> tuple[str, str, list[tuple[str, str]], bytes | None, Any]:
    """One request and the primary's JSON answer: (method, target, request headers, request body, doc)."""
    agent = rng.choice(_AGENTS)
    rid = f"req-{i:08d}"
    base = [("Host", HOST), ("User-Agent", agent), ("Accept", "*/*"), ("X-Request-Id", rid)]
    kind = rng.choices([k for _, k in _MIX], weights=[w for w, _ in _MIX])[0]
    if kind == "get":
        args = {"page": str(rng.randint(1, 50)), "q": rng.choice(_WORDS)}
        if rng.random() < 0.3:
            args["sort"] = rng.choice(("asc", "desc"))
        query = "&".join(f"{k}={v}" for k, v in args.items())
        doc: dict[str, Any] = {"args": args, "headers": _echo_headers(rng, agent, rid), "origin": client_ip,
               "url": f"http://{HOST}/get?{query}"}
        return "GET", f"/get?{query}", base, None, doc
    if kind == "headers":
        return "GET", "/headers", base, None, {"headers": _echo_headers(rng, agent, rid)}
    if kind == "json":
        return "GET", "/json", base, None, json.loads(json.dumps(_SLIDESHOW))
    if kind == "anything":
        payload = {"customer": rng.randint(1, 10_000), "items": [
            {"sku": f"SKU-{rng.randint(1000, 9999)}", "qty": rng.randint(1, 4)} for _ in range(rng.randint(1, 4))],
            "coupon": rng.choice((None, "SPRING10", "VIP")), "gift": rng.random() < 0.1}
        body = json.dumps(payload).encode()
        extra = {"Content-Length": str(len(body)), "Content-Type": "application/json"}
        doc = {"args": {}, "data": body.decode(), "files": {}, "form": {},
               "headers": _echo_headers(rng, agent, rid, extra), "json": payload, "method": "POST",
               "origin": client_ip, "url": f"http://{HOST}/anything/orders"}
        return "POST", "/anything/orders", base + [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(body)))], body, doc
    uid = rng.randint(1, 50_000)
    if kind == "user":
        return "GET", f"/users/{uid}", base, None, _user(rng, uid)
    orders = [_order(rng, uid * 100 + k) for k in range(rng.randint(1, 6))]
    doc = {"user_id": uid, "page": 1, "per_page": 20, "count": len(orders), "orders": orders,
           "total": round(sum(o["total"] for o in orders), 2)}
    return "GET", f"/users/{uid}/orders", base, None, doc


def _containers(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every dict and list in ``doc`` with its path."""
    out = [(path, doc)] if isinstance(doc, (dict, list)) else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k not in _FROZEN:
                out.extend(_containers(v, f"{path}.{k}"))
    elif isinstance(doc, list):
        for j, v in enumerate(doc):
            out.extend(_containers(v, f"{path}[{j}]"))
    return out


def _leaves(doc: Any) -> list[tuple[str, Any, Any]]:
    """(path, container, key) of every scalar the generator may change."""
    out = []
    for path, c in _containers(doc):
        items = c.items() if isinstance(c, dict) else enumerate(c)
        for k, v in items:
            if not isinstance(v, (dict, list)) and k not in _FROZEN:
                out.append((f"{path}.{k}" if isinstance(c, dict) else f"{path}[{k}]", c, k))
    return out


def _other_value(rng: random.Random, v: Any) -> Any:
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + rng.choice((-3, -1, 1, 2, 7))
    if isinstance(v, float):
        return round(v + rng.choice((-1.5, -0.01, 0.01, 0.25, 10.0)), 5)
    if isinstance(v, str):
        return rng.choice((v + "-v2", v.upper() if v.upper() != v else v.lower() + "x", rng.choice(_WORDS) + "!"))
    return "was-null"


def _other_type(rng: random.Random, v: Any) -> Any:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return float(v) if rng.random() < 0.5 else str(v)
    if isinstance(v, float):
        return str(v)
    if isinstance(v, str):
        return None
    return 0


def mutate(rng: random.Random, doc: Any) -> str:
    """Change ``doc`` in place in one way; a description of what changed."""
    kinds = ["value", "missing", "type", "list"]
    kind = rng.choices(kinds, weights=(40, 20, 20, 20))[0]
    if kind == "list":
        lists = [(p, c) for p, c in _containers(doc) if isinstance(c, list)]
        if lists:
            path, lst = rng.choice(lists)
            ops = ["append", "change"] + (["remove"] if lst else []) + (["swap"] if len(lst) > 1 else [])
            op = rng.choice(ops) if lst else "append"
            if op == "append":
                lst.append(json.loads(json.dumps(lst[-1])) if lst and rng.random() < 0.5 else rng.choice(_WORDS))
            elif op == "remove":
                lst.pop(rng.randrange(len(lst)))
            elif op == "swap":
                a, b = rng.sample(range(len(lst)), 2)
                lst[a], lst[b] = lst[b], lst[a]
            else:
                j = rng.randrange(len(lst))
                if isinstance(lst[j], (dict, list)):
                    inner = _leaves(lst[j])
                    if inner:
                        p, c, k = rng.choice(inner)
                        c[k] = _other_value(rng, c[k])
                    else:
                        lst[j] = "changed"
                else:
                    lst[j] = _other_value(rng, lst[j])
            return f"list {op} at {path or '<root>'}"
        kind = "value"
    if kind == "missing":
        dicts = [(p, c) for p, c in _containers(doc) if isinstance(c, dict)
                 and any(k not in _FROZEN for k in c)]
        if dicts:
            path, d = rng.choice(dicts)
            k = rng.choice([k for k in d if k not in _FROZEN])
            del d[k]
            return f"missing {path}.{k}"
        kind = "value"
    leaves = _leaves(doc)
    if not leaves:  # nothing to change in place: add a field
        if isinstance(doc, dict):
            doc["added"] = True
        return "added .added"
    path, c, k = rng.choice(leaves)
    if kind == "type":
        c[k] = _other_type(rng, c[k])
        return f"type {path}"
    c[k] = _other_value(rng, c[k])
    return f"value {path}"


def _http_date(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


def _resp_headers(date: str, body: bytes) -> list[tuple[str, str]]:
    return [("Server", "gunicorn"), ("Date", date), ("Connection", "keep-alive"),
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")]


def recording_dir(n: int, seed: int, rate: float, reformat: bool) -> Path:
    return OUT / f"analyze-rec-n{n}-s{seed}-d{rate:g}{'-reformat' if reformat else ''}-g{GEN_VERSION}"


def make_recording(rec: Path, n: int, seed: int, rate: float, reformat: bool) -> dict[str, Any]:
    """Write the recording (runs in a child: see ensure_recording). Returns its meta."""
    from capture.recording import EXCHANGE_SCHEMA, PartWriter, private_dir
    from replay.results import Result, ResultParts

    t_start = time.perf_counter()
    if rec.exists():
        shutil.rmtree(rec)
    private_dir(rec)
    rng = random.Random(seed)
    changed_at = set(random.Random(seed + 1).sample(range(n), round(n * rate)))
    mrng = random.Random(seed + 2)
    exchanges = PartWriter(rec / "exchanges", EXCHANGE_SCHEMA, rows_per_part=50_000)
    results = ResultParts(rec / "results" / TARGET)
    pending: list[Result] = []
    truth: dict[str, list[str]] = {}
    kinds: Counter[str] = Counter()
    endpoints: Counter[str] = Counter()
    body_bytes = 0
    t0 = 1_717_000_000.0
    conns = 64
    for i in range(n):
        conn = f"{i % conns:04x}c"
        eid = f"{conn}-{i // conns}"
        client_ip = f"10.0.{(i % conns) // 250}.{(i % conns) % 250 + 2}"
        method, target, req_headers, req_body, doc = make_pair(rng, i, client_ip)
        endpoints[f"{method} {target.split('?')[0] if not target.startswith('/users/') else '/users/…'}"] += 1
        body = _dump(doc)
        if i in changed_at:
            before = _canonical(doc)
            what = [mutate(mrng, doc)]
            if mrng.random() < 0.3:
                what.append(mutate(mrng, doc))
            while _canonical(doc) == before:  # a swap of equal elements, an undone change …
                what.append(mutate(mrng, doc))
            truth[eid] = what
            kinds.update(w.split(" ", 1)[0] for w in what)
            other = _dump_other(doc) if reformat else _dump(doc)
        else:
            other = _dump_other(doc) if reformat else body
        body_bytes += len(body) + len(other)
        t_req = t0 + i * 0.0005
        lat_p, lat_s = rng.uniform(0.001, 0.008), rng.uniform(0.001, 0.008)
        t_send = t_req + 3600.0  # replayed an hour later: another Date
        exchanges.add({
            "id": eid, "conn": conn, "index": i // conns, "client": f"{client_ip}:{40000 + i % conns}",
            "server": "10.0.9.1:8000", "method": method, "target": target, "version": "HTTP/1.1",
            "req_headers": [{"name": k, "value": v} for k, v in req_headers], "req_body": req_body,
            "req_body_len": len(req_body or b""), "status": 200, "reason": "OK", "resp_version": "HTTP/1.1",
            "resp_headers": [{"name": k, "value": v} for k, v in _resp_headers(_http_date(t_req), body)],
            "resp_body": body, "resp_body_len": len(body), "t_req_start": t_req, "t_req_end": t_req + 0.0001,
            "t_resp_start": t_req + lat_p * 0.8, "t_resp_end": t_req + lat_p, "interim": [], "flags": [],
            "error": None,
        }, len(body) + len(req_body or b""))
        pending.append(Result(
            id=eid, target=TARGET, host=HOST, t_due=t_send, t_send=t_send, t_first_byte=t_send + lat_s * 0.8,
            t_end=t_send + lat_s, status=200, reason="OK", version="HTTP/1.1",
            headers=_resp_headers(_http_date(t_send), other), body=other, body_len=len(other)))
        if len(pending) >= 50_000:
            results.write(pending)
            pending = []
    exchanges.flush()
    results.write(pending)
    truth_path = rec / "bench-truth.json"
    truth_path.write_text(json.dumps(truth) + "\n")
    meta = {
        "generator_version": GEN_VERSION, "pairs": n, "seed": seed, "diff_rate": rate, "reformat": reformat,
        "different": len(truth), "change_kinds": dict(kinds.most_common()), "endpoints": dict(endpoints.most_common()),
        "body_bytes": body_bytes, "disk_bytes": sum(p.stat().st_size for p in rec.rglob("*.parquet")),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (rec / "bench-meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # last: marks it complete
    return meta


def ensure_recording(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The cached recording for these parameters, or a new one made in a child process (so this
    process stays small for the timed children). Returns (dir, meta, reused)."""
    rec = recording_dir(args.pairs, args.seed, args.diff_rate, args.reformat)
    meta_path = rec / "bench-meta.json"
    if meta_path.exists() and not args.fresh:
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(meta_path.read_text())
            if meta.get("generator_version") == GEN_VERSION and meta.get("pairs") == args.pairs:
                return rec, meta, True
    argv = [sys.executable, str(Path(__file__).resolve()), "--_make", str(rec), "--pairs", str(args.pairs),
            "--seed", str(args.seed), "--diff-rate", str(args.diff_rate)] + (["--reformat"] if args.reformat else [])
    print(f"  making the recording ({args.pairs:,} pairs): {rec.relative_to(REPO)}", file=sys.stderr)
    run = run_timed(argv, args.timeout, cwd=REPO)
    return rec, json.loads(meta_path.read_text()), False


# --------------------------------------------------------------------------------------------
# Child processes


def shadowtap() -> list[str]:
    script = Path(sys.executable).parent / "shadowtap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "capture.cli"]


def html_available() -> tuple[bool, str]:
    """Whether `analyze.report_html` imports in the interpreter that runs shadowtap (run time)."""
    if os.environ.get(NO_HTML_ENV):
        return False, f"{NO_HTML_ENV} is set"
    res = subprocess.run([sys.executable, "-c", "import analyze.report_html"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    if res.returncode == 0:
        return True, "imports"
    last = (res.stderr.strip().splitlines() or ["?"])[-1]
    return False, last[:200]


def report_paths(work: Path, tag: str) -> list[str]:
    return ["--json", str(work / f"{tag}-report.json"), "--markdown", str(work / f"{tag}-summary.md"),
            "--html", str(work / f"{tag}-index.html")]


def analyze_argv(rec: Path, work: Path) -> list[str]:
    return [*shadowtap(), "analyze", str(rec), "--target", TARGET, "--baseline", "none", *report_paths(work, "cli")]


def driver_argv(rec: Path, work: Path, tag: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--_driver", str(rec), "--_ids", str(work / f"{tag}-ids.json"),
            "--", "analyze", str(rec), "--target", TARGET, "--baseline", "none", *report_paths(work, tag)]


def driver_main(cli_argv: list[str], ids_out: Path) -> int:
    """The in-process analysis (a child): the CLI's own parser and cmd_analyze, with the
    Analyzer kept for its per-pair paths. Without report_html, the HTML is not written."""
    import analyze.cli as cli
    from capture.cli import build_parser
    from capture.errors import UserError

    held: list[Any] = []

    class KeptAnalyzer(cli.Analyzer):  # type: ignore[misc,valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            held.append(self)

    cli.Analyzer = KeptAnalyzer  # type: ignore[misc]  # cmd_analyze looks the name up at call time
    if os.environ.get(NO_HTML_ENV):
        sys.modules["analyze.report_html"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import analyze.report_html  # noqa: F401
        html = True
    except ImportError:
        html = False
        from capture.recording import write_private

        def _write(paths: dict[str, Path], report: dict[str, Any]) -> None:  # cli._write minus the HTML
            texts = {"json": json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
                     "markdown": cli.render_markdown(report)}
            for kind, text in texts.items():
                paths[kind].parent.mkdir(parents=True, exist_ok=True)
                write_private(paths[kind], text.encode())

        cli._write = _write
    args = build_parser().parse_args(cli_argv)
    t0 = time.perf_counter()
    try:
        rc = int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        rc = e.code
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"returncode": rc, "seconds_in_cmd": round(seconds, 3), "html_written": html}
    if held:
        a = held[-1]
        out["compared"] = len(a.pair_paths)
        out["different_ids"] = sorted(i for i, (_, paths) in a.pair_paths.items() if paths)
        out["paths_per_pair"] = dict(Counter(len(p) for _, p in a.pair_paths.values() if p))
    ids_out.write_text(json.dumps(out) + "\n")
    return rc


def timed_analysis(kind: str, argv: list[str], report: Path, ids: Path | None, pairs: int,
                   args: argparse.Namespace) -> dict[str, Any]:
    print(f"  {kind}: {' '.join(argv)}", file=sys.stderr)
    runs = [run_timed(argv, args.timeout, ok=(0, 1), cwd=REPO) for _ in range(args.repeat)]  # 1: the verdict failed
    return summarize(kind, runs, report, ids, pairs)


def summarize(kind: str, runs: list[Run], report: Path, ids: Path | None, pairs: int,
              profiled: bool = False) -> dict[str, Any]:
    best = min(runs, key=lambda r: r.seconds)
    tail = [line for line in best.stderr.strip().splitlines() if line.startswith("analyze:")]
    usage = "under py-spy" if profiled else f"{best.cpu_s:.2f} s CPU, peak RSS {best.max_rss_mib:.0f} MiB"
    print(f"  {kind}: exit {best.returncode}, {best.seconds:.2f} s wall, {usage}"
          + (f" (best of {len(runs)} runs)" if len(runs) > 1 else "") + (f"; {tail[0]}" if tail else ""), file=sys.stderr)
    rep = json.loads(report.read_text())
    out: dict[str, Any] = {
        "argv": runs[0].argv, "returncode": best.returncode, "wall_seconds": round(best.seconds, 3),
        "cpu_seconds": round(best.cpu_s, 3), "max_rss_mib": round(best.max_rss_mib, 1),
        "parent_rss_mib": round(best.parent_rss_mib, 1), "pairs_per_s": round(pairs / best.seconds, 1),
        "all_wall_seconds": [round(r.seconds, 3) for r in runs], "profiled": profiled, "totals": rep["totals"],
        "verdict": rep.get("verdict"), "endpoints": [e["endpoint"] for e in rep["endpoints"]],
    }
    if profiled:  # py-spy's rusage: its own, plus the driver's only if py-spy happened to reap it
        out["cpu_seconds"] = out["max_rss_mib"] = None
    if ids is not None:
        extra = json.loads(ids.read_text())
        out["seconds_in_cmd"] = extra["seconds_in_cmd"]
        out["html_written"] = extra["html_written"]
        out["compared"] = extra.get("compared")
        out["paths_per_pair"] = extra.get("paths_per_pair")
        out["_different_ids"] = extra.get("different_ids", [])
    return out


# --------------------------------------------------------------------------------------------
# The peer: DeepDiff


def deepdiff_phase(rec: Path, args: argparse.Namespace) -> dict[str, Any]:
    import deepdiff
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deepdiff import DeepDiff

    def table(paths: list[Path], cols: list[str]) -> pa.Table:
        return pa.concat_tables([pq.read_table(p, columns=cols) for p in paths])

    ex = table(sorted((rec / "exchanges").glob("part-*.parquet")), ["id", "resp_body"])
    rs = table(sorted((rec / "results" / TARGET).glob("part-*.parquet")), ["id", "body"])
    r_index = {i: k for k, i in enumerate(rs.column("id").to_pylist())}
    ex_ids = ex.column("id").to_pylist()
    n = len(ex_ids)
    order = list(range(n))
    random.Random(args.seed + 3).shuffle(order)

    decode_s = diff_s = 0.0
    found: list[str] = []
    done = 0

    def run(positions: list[int]) -> None:
        nonlocal decode_s, diff_s, done
        p_bodies = ex.column("resp_body").take(pa.array(positions)).to_pylist()
        s_bodies = rs.column("body").take(pa.array([r_index[ex_ids[k]] for k in positions])).to_pylist()
        loads, clock = json.loads, time.perf_counter
        for k, pb, sb in zip(positions, p_bodies, s_bodies):
            t0 = clock()
            a, b = loads(pb), loads(sb)
            t1 = clock()
            dd = DeepDiff(a, b)
            t2 = clock()
            decode_s += t1 - t0
            diff_s += t2 - t1
            if dd:
                found.append(ex_ids[k])
        done += len(positions)

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    pilot = min(PILOT, n, args.deepdiff_pairs or n)
    run(order[:pilot])
    per_pair = diff_s / max(done, 1)
    if args.deepdiff_pairs:
        want = min(args.deepdiff_pairs, n)
    elif per_pair * n <= args.deepdiff_budget:
        want = n
    else:
        want = min(n, max(MIN_SUBSET, int(args.deepdiff_budget / per_pair) // 1000 * 1000))
    print(f"  DeepDiff {deepdiff.__version__}: pilot {pilot:,} pairs at {per_pair * 1e3:.3f} ms/pair "
          f"(all {n:,} would take ~{per_pair * n:.0f} s); timing {'all' if want == n else 'a random subset of'} "
          f"{want:,} pairs", file=sys.stderr)
    step = 20_000
    for at in range(pilot, want, step):
        run(order[at:min(want, at + step)])
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    subset = set(ex_ids[k] for k in order[:want])
    print(f"  DeepDiff: {done:,} pairs, {diff_s:.2f} s in DeepDiff ({done / diff_s:,.0f} pairs/s), "
          f"{decode_s:.2f} s in json.loads; {len(found):,} differ", file=sys.stderr)
    return {
        "version": deepdiff.__version__, "call": "DeepDiff(json.loads(primary), json.loads(shadow))",
        "pairs": done, "of": n, "subset": done < n, "extrapolated": done < n,
        "deepdiff_seconds": round(diff_s, 3), "decode_seconds": round(decode_s, 3),
        "loop_wall_seconds": round(wall, 3), "loop_cpu_seconds": round(cpu, 3),
        "pairs_per_s": round(done / diff_s, 1), "pairs_per_s_with_decode": round(done / (diff_s + decode_s), 1),
        "estimated_seconds_all": round(n * diff_s / done, 1),
        "different": len(found), "_different_ids": found, "_subset_ids": subset,
    }


# --------------------------------------------------------------------------------------------
# Profile


def profile(argv: list[str], work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], Run]:
    """``argv`` under py-spy: self time (leaf frames) and total time per function, and the share
    of the samples in a few places (DeepDiff, reading the recording, pandas, writing reports)."""
    spy = Path(sys.executable).parent / "py-spy"
    exe = str(spy) if spy.exists() else shutil.which("py-spy")
    if not exe:
        raise FileNotFoundError("py-spy not found (pip install py-spy)")
    raw = work / "profile.txt"
    cmd = [exe, "record", "--format", "raw", "--nolineno", "-r", "200", "-o", str(raw), "--", *argv]
    print(f"  profile: {' '.join(cmd[:cmd.index('--')])} -- (the driver)", file=sys.stderr)
    run = run_timed(cmd, args.timeout, ok=(0, 1), cwd=REPO)
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [_short(f) for f in stack.split(";")]
            stacks.append(([f for f in frames if not f.startswith("process ")], int(count)))
    samples = sum(c for _, c in stacks) or 1
    self_t: Counter[str] = Counter()
    total_t: Counter[str] = Counter()
    for frames, c in stacks:
        if frames:
            self_t[frames[-1]] += c
        for f in set(frames):
            total_t[f] += c

    def top(counter: Counter[str], k: int) -> list[dict[str, Any]]:
        return [{"function": f, "samples": c, "share": round(c / samples, 4)} for f, c in counter.most_common(k)]

    def share(test: Any) -> float:
        return round(sum(c for frames, c in stacks if any(test(f) for f in frames)) / samples, 4)

    ours = Counter({f: c for f, c in total_t.items() if f.endswith(".py)") and f.split(" (")[-1].startswith(("analyze/", "capture/", "replay/"))})
    places = {
        "DeepDiff (explaining differing pairs)": share(lambda f: "(deepdiff/" in f),
        "reading the recording (read_exchanges, read_results)": share(lambda f: f.startswith(("read_exchanges (", "read_results ("))),
        "pandas (report aggregation)": share(lambda f: "(pandas/" in f),
        "writing the reports (_write)": share(lambda f: f.startswith("_write (")),
        "imports": share(lambda f: f.startswith("_find_and_load (")),
    }
    return ({"wall_seconds": round(run.seconds, 2), "samples": samples, "self_top": top(self_t, 10),
             "total_top_shadowtap": top(ours, 12), "places": places}, run)


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py)`` → ``func (pkg/mod.py)``."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    where = where.rstrip(")")
    for marker in ("site-packages/", str(REPO) + "/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


# --------------------------------------------------------------------------------------------
# Verdicts and output


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


def findings(meta: dict[str, Any], truth: set[str], head: dict[str, Any], drv: dict[str, Any],
             dd: dict[str, Any]) -> dict[str, Any]:
    t = head["totals"]
    n = meta["pairs"]
    not_identical = t["replayed"] - t["identical"]
    subset: set[str] = dd["_subset_ids"]
    dd_ids = set(dd["_different_ids"])
    an_ids = set(drv["_different_ids"])
    an_in_subset = an_ids & subset
    truth_in_subset = truth & subset
    out = {
        "pairs": n, "replayed": t["replayed"], "errors": t["errors"], "truth_different": len(truth),
        "analyze_not_identical": not_identical,
        "analyze_outcomes": {k: t[k] for k in ("identical", "different", "noise", "artifacts")},
        "deepdiff_pairs": dd["pairs"], "deepdiff_different": len(dd_ids),
        "analyze_different_on_deepdiff_pairs": len(an_in_subset),
        "truth_different_on_deepdiff_pairs": len(truth_in_subset),
        "only_deepdiff": sorted(dd_ids - an_in_subset)[:20], "only_analyze": sorted(an_in_subset - dd_ids)[:20],
        "driver_vs_truth_missing": sorted(truth - an_ids)[:20], "driver_vs_truth_extra": sorted(an_ids - truth)[:20],
    }
    complete = t["replayed"] == n and t["errors"] == 0
    if not dd["subset"]:
        count_ok = not_identical == len(dd_ids)
        count_detail = (f"analyze: {not_identical:,} of {t['replayed']:,} not identical; DeepDiff: {len(dd_ids):,} "
                        f"of {dd['pairs']:,} differ (truth {len(truth):,})")
    else:
        count_ok = not_identical == len(truth) and len(dd_ids) == len(truth_in_subset) == len(an_in_subset)
        count_detail = (f"analyze: {not_identical:,} of {t['replayed']:,} not identical (truth {len(truth):,}); "
                        f"on DeepDiff's {dd['pairs']:,}-pair subset: DeepDiff {len(dd_ids):,}, analyze "
                        f"{len(an_in_subset):,}, truth {len(truth_in_subset):,}")
    ids_ok = an_ids == truth and an_in_subset == dd_ids and drv.get("compared") == n
    ids_detail = (f"driver's differing ids = truth's ({len(an_ids):,} vs {len(truth):,}: "
                  f"{len(truth - an_ids)} missed, {len(an_ids - truth)} extra); on DeepDiff's pairs "
                  f"{len(an_in_subset & dd_ids):,} both, {len(dd_ids - an_in_subset)} DeepDiff only, "
                  f"{len(an_in_subset - dd_ids)} analyze only")
    out["count_check"] = {"ok": count_ok and complete, "detail": count_detail
                          + ("" if complete else f"; replayed {t['replayed']:,} of {n:,}, {t['errors']} errors")}
    out["id_check"] = {"ok": ids_ok, "detail": ids_detail}
    return out


def verdicts(ratio: float, fd: dict[str, Any], head: dict[str, Any], dd: dict[str, Any], head_name: str) -> list[Verdict]:
    return [
        Verdict(f"analyze ≥ {SPEED_TARGET:g}× DeepDiff pairs/s", ratio >= SPEED_TARGET,
                f"{ratio:.2f}× ({head_name} {head['pairs_per_s']:,.0f} pairs/s, whole process; DeepDiff "
                f"{dd['pairs_per_s']:,.0f} pairs/s over {dd['pairs']:,} pairs"
                + (" (a random subset, extrapolated)" if dd["subset"] else "") + ")"),
        Verdict("same findings: counts", fd["count_check"]["ok"], fd["count_check"]["detail"]),
        Verdict("same findings: pair ids", fd["id_check"]["ok"], fd["id_check"]["detail"]),
    ]


def print_table(meta: dict[str, Any], reused: bool, rec: Path, rows: list[tuple[str, dict[str, Any]]],
                dd: dict[str, Any], fd: dict[str, Any], prof: dict[str, Any] | None, vs: list[Verdict],
                html: tuple[bool, str]) -> None:
    print(f"recording: {meta['pairs']:,} pairs of httpbin-like JSON answers, {meta['different']:,} differing "
          f"({meta['different'] / meta['pairs']:.1%}), seed {meta['seed']}"
          + (", shadow bodies re-serialised (--reformat)" if meta["reformat"] else ", equal answers byte-identical"))
    print(f"           {meta['body_bytes'] / 1e6:.0f} MB of bodies, {meta['disk_bytes'] / 1e6:.0f} MB of Parquet; "
          f"{'reused' if reused else 'made'} ({meta['seconds']} s to make): {rec.relative_to(REPO)}")
    print("           endpoints: " + ", ".join(f"{k} {v:,}" for k, v in meta["endpoints"].items()))
    print("           changes: " + ", ".join(f"{k} {v:,}" for k, v in meta["change_kinds"].items()))
    print(f"           analyze.report_html: {'present' if html[0] else 'missing (' + html[1] + ')'}")
    print()
    head = f"{'':<42} {'pairs':>9} {'wall s':>8} {'CPU s':>8} {'pairs/s':>9} {'RSS MiB':>8} {'ratio':>7}"
    print(head)
    print("-" * len(head))
    ddr = dd["pairs_per_s"]
    for name, r in rows:
        # Under py-spy the child is py-spy's, which does not always reap it: its CPU and RSS are not ours to report.
        cpu, rss = ("-", "-") if r["profiled"] else (f"{r['cpu_seconds']:.2f}", f"{r['max_rss_mib']:.0f}")
        print(f"{name:<42} {r['totals']['replayed']:>9,} {r['wall_seconds']:>8.2f} {cpu:>8} "
              f"{r['pairs_per_s']:>9,.0f} {rss:>8} {r['pairs_per_s'] / ddr:>6.2f}×")
    label = f"DeepDiff {dd['version']}" + (" (subset)" if dd["subset"] else "")
    print(f"{label:<42} {dd['pairs']:>9,} {dd['deepdiff_seconds']:>8.2f} {dd['loop_cpu_seconds']:>8.2f} "
          f"{ddr:>9,.0f} {'':>8} {'1.00×':>7}")
    print(f"{'  DeepDiff + json.loads':<42} {dd['pairs']:>9,} {dd['deepdiff_seconds'] + dd['decode_seconds']:>8.2f} "
          f"{'':>8} {dd['pairs_per_s_with_decode']:>9,.0f} {'':>8} {dd['pairs_per_s_with_decode'] / ddr:>6.2f}×")
    print(f"(analyze rows: child processes, wall clock from start to exit, reports written; the RSS floor is "
          f"this script's {rows[0][1]['parent_rss_mib']:.0f} MiB. DeepDiff row: its calls only, CPU of the whole loop"
          + (f"; {dd['pairs']:,} of {dd['of']:,} pairs, all would take ~{dd['estimated_seconds_all']:.0f} s" if dd["subset"] else "")
          + ")")
    print()
    o = fd["analyze_outcomes"]
    print(f"findings: truth {fd['truth_different']:,} differing pairs; analyze {fd['analyze_not_identical']:,} not identical "
          f"(different {o['different']:,}, noise {o['noise']:,}, artifacts {o['artifacts']:,}), replayed "
          f"{fd['replayed']:,}, errors {fd['errors']}; DeepDiff {fd['deepdiff_different']:,} of {fd['deepdiff_pairs']:,}")
    for key in ("only_deepdiff", "only_analyze", "driver_vs_truth_missing", "driver_vs_truth_extra"):
        if fd[key]:
            print(f"  {key}: {', '.join(fd[key][:10])}")
    if prof:
        print()
        print(f"where analyze spends its time (py-spy, {prof['samples']:,} samples of one in-process run, "
              f"{prof['wall_seconds']} s under the profiler); top self time:")
        for f in prof["self_top"]:
            print(f"  {f['share']:>6.1%}  {f['function']}")
        print("  inclusive: " + ", ".join(f"{k} {v:.1%}" for k, v in prof["places"].items()))
        print("  shadowtap's functions, inclusive:")
        for f in prof["total_top_shadowtap"][:8]:
            print(f"  {f['share']:>6.1%}  {f['function']}")
        if prof.get("ratio_ceiling"):
            print(f"  DeepDiff inside analyze ≈ {prof['deepdiff_seconds_in_analyze']} s for the "
                  f"{fd['truth_different']:,} differing pairs; DeepDiff alone on all {fd['pairs']:,} ≈ "
                  f"{dd['estimated_seconds_all']:.0f} s: with everything else free, the ratio would be ≤ "
                  f"{prof['ratio_ceiling']:.1f}×")
    print()
    for v in vs:
        print(f"[{'PASS' if v.ok else 'FAIL'}] {v.name}: {v.detail}")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--pairs", type=int, default=DEFAULT_N, metavar="N", help=f"pairs in the recording (default {DEFAULT_N})")
    p.add_argument("--seed", type=int, default=1, help="the generator's seed (default 1)")
    p.add_argument("--diff-rate", type=float, default=DIFF_RATE, metavar="F",
                   help=f"fraction of pairs where the shadow's answer differs (default {DIFF_RATE:g})")
    p.add_argument("--reformat", action="store_true",
                   help="serialise every shadow body differently (same JSON, other bytes)")
    p.add_argument("--fresh", action="store_true", help="remake the recording even if a cached one exists")
    p.add_argument("--deepdiff-pairs", type=int, default=0, metavar="K",
                   help="DeepDiff on a random K pairs (default: all if that fits --deepdiff-budget, "
                        f"else a subset of at least {MIN_SUBSET})")
    p.add_argument("--deepdiff-budget", type=float, default=60.0, metavar="S",
                   help="seconds DeepDiff may take before a subset is used (default 60)")
    p.add_argument("--repeat", type=int, default=1, help="timed analyze runs each; the fastest counts (default 1)")
    p.add_argument("--profile", choices=("auto", "on", "off"), default="auto",
                   help="py-spy one more driver run: auto = when analyze misses the target (default auto)")
    p.add_argument("--keep", action="store_true", help="keep the reports (bench/out/analyze-work-*)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S",
                   help="kill any single child run after this many seconds (default 900)")
    # Child modes (internal)
    p.add_argument("--_make", metavar="REC", help=argparse.SUPPRESS)
    p.add_argument("--_driver", metavar="REC", help=argparse.SUPPRESS)
    p.add_argument("--_ids", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("cli", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pairs < 1 or not 0 < args.diff_rate < 1 or args.repeat < 1 or args.deepdiff_pairs < 0:
        p.error("--pairs and --repeat must be positive, --diff-rate in (0, 1), --deepdiff-pairs ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._make:
        make_recording(Path(args._make), args.pairs, args.seed, args.diff_rate, args.reformat)
        return 0
    if args._driver:
        return driver_main(args.cli, Path(args._ids))
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started, load0 = time.monotonic(), os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    rec, meta, reused = ensure_recording(args)
    print(f"  recording: {meta['pairs']:,} pairs, {meta['different']:,} differing; "
          f"{'reused' if reused else 'made in ' + str(meta['seconds']) + ' s'}", file=sys.stderr)
    truth = set(json.loads((rec / "bench-truth.json").read_text()))
    html = html_available()
    work = Path(tempfile.mkdtemp(prefix="analyze-work-", dir=OUT))
    rows: list[tuple[str, dict[str, Any]]] = []
    prof: dict[str, Any] | None = None
    pairs = meta["pairs"]
    try:
        # The headline first: the CLI when it can write all its reports, else the driver.
        if html[0]:
            rows.append(("shadowtap analyze (CLI)", timed_analysis(
                "shadowtap analyze", analyze_argv(rec, work), work / "cli-report.json", None, pairs, args)))
        else:
            print(f"  analyze.report_html does not import ({html[1]}): the CLI would fail writing its reports; "
                  "the in-process driver is the headline", file=sys.stderr)
            rows.append(("analyze in-process, no HTML", timed_analysis(
                "in-process driver", driver_argv(rec, work, "driver"), work / "driver-report.json",
                work / "driver-ids.json", pairs, args)))
        head_name, head = rows[0]
        dd = deepdiff_phase(rec, args)
        ratio = head["pairs_per_s"] / dd["pairs_per_s"]
        want_profile = args.profile == "on" or (args.profile == "auto" and ratio < SPEED_TARGET)
        if html[0]:
            # The driver's per-pair findings; when a profile is wanted, this run is the profiled one.
            argv = driver_argv(rec, work, "driver")
            if want_profile:
                prof, run = profile(argv, work, args)
                drv = summarize("in-process driver", [run], work / "driver-report.json", work / "driver-ids.json",
                                pairs, profiled=True)
            else:
                drv = timed_analysis("in-process driver", argv, work / "driver-report.json", work / "driver-ids.json",
                                     pairs, args)
            rows.append(("analyze in-process (cmd_analyze)" + (", py-spy" if want_profile else ""), drv))
        else:
            drv = head
            if want_profile:
                prof, _ = profile(driver_argv(rec, work, "profile"), work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if prof:
        # What explaining the differing pairs with DeepDiff costs analyze, against DeepDiff on all.
        in_analyze = prof["places"]["DeepDiff (explaining differing pairs)"] * prof["wall_seconds"]
        prof["deepdiff_seconds_in_analyze"] = round(in_analyze, 1)
        prof["ratio_ceiling"] = round(dd["estimated_seconds_all"] / in_analyze, 2) if in_analyze else None
    fd = findings(meta, truth, head, drv, dd)
    vs = verdicts(ratio, fd, head, dd, head_name.split(" (")[0])
    print()
    print_table(meta, reused, rec, rows, dd, fd, prof, vs, html)
    total = time.monotonic() - started
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "options": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "cli"},
        "recording": {**meta, "path": str(rec.relative_to(REPO)), "reused": reused},
        "report_html": {"available": html[0], "detail": html[1]},
        "headline": head_name,
        "analyze": {name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in rows},
        "deepdiff": {k: v for k, v in dd.items() if not k.startswith("_")},
        "ratio": round(ratio, 3),
        "findings": fd,
        "profile": prof,
        "verdicts": [asdict(v) for v in vs],
        "targets_met": all(v.ok for v in vs),
        "total_seconds": round(total, 1),
    }
    dest = OUT / "analyze.json"
    tmp = dest.with_suffix(".json.part")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, dest)
    print(f"whole run {total:.0f} s; results in {dest.relative_to(REPO)}"
          + (f"; reports kept in {work.relative_to(REPO)}" if args.keep else ""))
    return 0 if report["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
