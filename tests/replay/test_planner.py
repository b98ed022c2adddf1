"""planner.c (replay._sender.Planner) against its specification, replay.plan.Planner with
replay.request.build: the same decision for every row, and for every job the same bytes, Host,
close and HEAD flags, over random rows and random edits. A batch the C code does not take
(text beyond Latin-1) must be handed back, never planned differently."""
from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from capture.recording import EXCHANGE_SCHEMA
from replay import native, plan
from replay.plan import COLUMNS, SKIP_REASONS, Captured, Planner, count_skip
from replay.request import Edits, HostRule
from replay.runner import _addr, captured_rows
from replay.sampling import Sampler

# Only a SHADOWTAP_PURE=1 install (the planning modules not compiled either) skips; a compiled
# build without the native module fails here.
pytestmark = pytest.mark.skipif(not native.available() and plan.__file__.endswith(".py"),
                                reason="SHADOWTAP_PURE=1 build: no native modules")

SCHEMA = pa.schema([EXCHANGE_SCHEMA.field(c) for c in COLUMNS])

METHODS = ["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT", "get", "BREW",
           "", None]
TARGETS = ["/", "/small.txt", "/a?b=c", "/caf\u00e9", "*", "http://httpbin:8000/get", "HTTPS://[::1]:8/y?z",
           "http://h", "hTTp://a#b", "http://x?y", "https://u@h:1/p", "http:/x", "ftp://x/y", "/p://q", "http://\u00e9:1/",
           None]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", None]
HOSTS = ["httpbin:8000", "cluster1", "[::1]:80", "[::1]", "a:b:c", "x]:y", "", "h\u00e9te:9", "[fe80::1%eth0]:8080"]
FLAGS = ["gap", "incomplete", "snaplen", "body_truncated", "parse_error", "interim", "pipelined", "no_response"]


def case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


def random_headers(rng: random.Random) -> list[tuple[str, str]]:
    hs: list[tuple[str, str]] = []
    for _ in range(rng.choice([0, 1, 2, 3, 5, 8])):
        kind = rng.random()
        if kind < 0.25:
            hs.append((case(rng, "host"), rng.choice(HOSTS)))
        elif kind < 0.35:
            hs.append((case(rng, "content-length"), str(rng.randrange(100))))
        elif kind < 0.42:
            hs.append((case(rng, "transfer-encoding"), "chunked"))
        elif kind < 0.55:
            hs.append((case(rng, "connection"), rng.choice(["close", "Keep-Alive", "Upgrade, CLOSE", "keep-alive, x",
                                                            "cl", "ose", "KEEP-ALIVE"])))
        elif kind < 0.6:
            hs.append((case(rng, "upgrade"), "websocket"))
        elif kind < 0.72:
            hs.append((case(rng, "x-request-id"), rng.choice(["r1", "r2", "r3", "caf\u00e9", ""])))
        elif kind < 0.8:
            hs.append((case(rng, "cookie"), "a=b"))
        elif kind < 0.85:
            hs.append(("\u00c0-Latin", "\u00ff\u00e9"))
        else:
            hs.append((case(rng, rng.choice(["accept", "x-shadow", "user-agent", "te", "keep-alive"])), "v" * rng.randrange(4)))
    return hs


def random_row(rng: random.Random, i: int) -> dict[str, Any]:
    body = rng.choice([None, b"", b"x", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))])
    return {
        "id": f"c{rng.randrange(4)}-{i}", "server": rng.choice(["10.0.0.2:8000", "[::1]:80", "10.0.0.3:80", "h:0080", "nope"]),
        "method": rng.choice(METHODS), "target": rng.choice(TARGETS), "version": rng.choice(VERSIONS),
        "req_headers": [{"name": k, "value": v} for k, v in random_headers(rng)],
        "req_body": body, "t_req_start": 1.0 + i,
        "flags": rng.choice([None, [], [], ["pipelined"], [rng.choice(FLAGS)], [rng.choice(FLAGS), rng.choice(FLAGS)]]),
    }


def random_planner(rng: random.Random) -> tuple[Planner, list[tuple[str, int]] | None]:
    mode = rng.choice(["suffix", "suffix", "keep", "literal"])
    host = HostRule(mode, literal=rng.choice(["lit:9", "l\u00e9t"]) if mode == "literal" else "",
                    suffix=rng.choice(["-shadow", "-shadow", "-canary", ""]))
    sets = rng.choice([(), (), (("Host", "forced:1"),), (("X-Shadow", "1"), ("x-shadow", "2")), (("Content-Length", "5"),),
                       (("X-New", "n"), ("Connection", "close")), (("Transfer-Encoding", "gzip"),)])
    drop = rng.choice([frozenset(), frozenset(), frozenset({"cookie"}), frozenset({"host"}),
                       frozenset({"transfer-encoding", "x-shadow"}), frozenset({"\u00e0-latin"})])
    sampler = Sampler(rng.choice([100.0, 100.0, 37.5, 0.0, 99.9, 0.1]), seed=rng.choice(["", "0", "seed\u00e9"]),
                      header=rng.choice([None, None, "X-Request-Id", "\u00c0-Latin"]))
    planner = Planner(Edits(host, sets, drop), sampler, methods=rng.choice([(), (), ("GET",), ("get", "POST")]),
                      include=rng.choice([(), (), ("small",)]), exclude=rng.choice([(), (), ("^/a",)]),
                      allow_writes=rng.random() < 0.5)
    primary = rng.choice([None, None, [("10.0.0.3", 80)], [("::1", 80), ("h", 80)]])
    return planner, primary


def python_plan(planner: Planner, rows: list[Captured], primary: list[tuple[str, int]] | None
                ) -> tuple[bytes, list[tuple[Any, ...]], Counter[str], Counter[str], tuple[str, str] | None]:
    codes = bytearray()
    jobs: list[tuple[Any, ...]] = []
    skips: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    refused = None
    for c in rows:
        skip = planner.admit(c)
        if skip is not None:
            codes.append(1 + SKIP_REASONS.index(skip.reason))
            count_skip(skip, skips, writes)
            continue
        codes.append(0)
        j = planner.job(c)
        if primary is not None and refused is None and _addr(j.server) in set(primary):
            refused = (j.id, j.server)
        jobs.append((j.id, j.data, j.host, j.close, j.method == "HEAD"))
    return bytes(codes), jobs, skips, writes, refused


def check(planner: Planner, primary: list[tuple[str, int]] | None, batch: pa.RecordBatch) -> Any:
    fast = native.fast_planner(planner, primary)
    assert fast is not None
    planned = native.plan_batch(fast, planner, batch)
    rows = captured_rows(batch)
    codes, jobs, skips, writes, refused = python_plan(planner, rows, primary)
    if planned is None:  # handed back: only for text beyond Latin-1
        return None
    assert planned.codes() == codes
    assert planned.rows == len(rows)
    assert dict(zip(SKIP_REASONS, planned.skips)) == {r: skips[r] for r in SKIP_REASONS}
    assert planned.writes == dict(writes)
    assert planned.refused == refused
    if refused is None:
        assert planned.jobs() == jobs
        assert len(planned) == len(jobs)
    else:
        assert len(planned) == 0  # nothing of a batch with a refused job is sent
    return planned


@pytest.mark.parametrize("seed", range(40))
def test_random_rows_and_edits_plan_as_python_does(seed: int) -> None:
    rng = random.Random(seed)
    planned = 0
    for _ in range(6):
        planner, primary = random_planner(rng)
        rows = [random_row(rng, i) for i in range(rng.choice([1, 7, 200]))]
        batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
        planned += check(planner, primary, batch) is not None
        # the same rows at an offset (a sliced batch: every buffer read from its offset)
        if batch.num_rows > 3:
            check(planner, primary, batch.slice(2, batch.num_rows - 3))
    assert planned == 6  # every batch here is Latin-1: none handed back


def test_sampling_hash_is_sampler_position() -> None:
    """10,000 keys at 50 %: the C BLAKE2b and the float compare give Python's every decision."""
    rng = random.Random(7)
    for header in (None, "x-request-id"):
        planner = Planner(Edits(), Sampler(50.0, seed="s", header=header))
        rows = [{"id": f"{rng.getrandbits(64):x}-{i}", "server": "h:1", "method": "GET", "target": "/",
                 "version": "HTTP/1.1", "req_headers": [{"name": "X-Request-Id", "value": str(rng.getrandbits(20))}]
                 if i % 3 else [], "req_body": None, "t_req_start": 0.0, "flags": None} for i in range(10_000)]
        planned = check(planner, None, pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
        assert 4_500 < len(planned) < 5_500


def test_long_keys_cross_blake2b_blocks() -> None:
    planner = Planner(Edits(), Sampler(50.0, seed="k"))
    rows = [{"id": "i" * n, "server": "h:1", "method": "GET", "target": "/", "version": "HTTP/1.1",
             "req_headers": [], "req_body": None, "t_req_start": 0.0, "flags": None} for n in range(0, 400)]
    check(planner, None, pa.RecordBatch.from_pylist(rows, schema=SCHEMA))


@pytest.mark.parametrize("where", ["target", "name", "value", "dropped"])
def test_text_beyond_latin1_is_handed_back(where: str) -> None:
    planner = Planner(Edits(drop_headers=frozenset({"x-drop"})), Sampler())
    row = {"id": "a", "server": "h:1", "method": "GET", "target": "/", "version": "HTTP/1.1",
           "req_headers": [{"name": "Host", "value": "h"}], "req_body": None, "t_req_start": 0.0, "flags": None}
    snow = "\u2603"
    if where == "target":
        row["target"] = "/" + snow
    elif where == "name":
        row["req_headers"].append({"name": "X-" + snow, "value": "v"})
    elif where == "value":
        row["req_headers"].append({"name": "X-V", "value": snow})
    else:  # Python would send this one (the header is dropped): so it plans it
        row["req_headers"].append({"name": "X-Drop", "value": snow})
    ok = {"id": "b", "server": "h:1", "method": "GET", "target": "/", "version": "HTTP/1.1",
          "req_headers": [], "req_body": None, "t_req_start": 0.0, "flags": None}
    batch = pa.RecordBatch.from_pylist([ok, row], schema=SCHEMA)
    fast = native.fast_planner(planner, None)
    assert native.plan_batch(fast, planner, batch) is None
    assert native.plan_batch(fast, planner, batch.slice(0, 1)) is not None  # the row alone is fine


def test_edits_beyond_latin1_plan_in_python() -> None:
    assert native.fast_planner(Planner(Edits(set_headers=(("X", "\u2603"),)), Sampler()), None) is None
    assert native.fast_planner(Planner(Edits(HostRule("literal", "\u2603")), Sampler()), None) is None
    resumed = Planner(Edits(), Sampler(), done=frozenset({"x"}))
    assert native.fast_planner(resumed, None) is None


def test_jobs_are_shared_by_targets_and_outlive_the_planned() -> None:
    """A Planned queued for two targets: each queue holds the jobs after the Planned is gone."""
    import gc

    planner = Planner(Edits(), Sampler())
    rows = [random_row(random.Random(1), i) | {"method": "GET", "version": "HTTP/1.1", "target": "/", "flags": None}
            for i in range(50)]
    fast = native.fast_planner(planner, None)
    planned = native.plan_batch(fast, planner, pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
    assert len(planned) == 50
    sender = native.new_sender([("127.0.0.1", 9, -1), ("127.0.0.1", 9, -1)], 2, 1.0, 1 << 20, False)
    sender.submit_planned(0, planned)
    sender.submit_planned(1, planned)
    del planned
    gc.collect()
    finished, failure, per = sender.counts()
    assert per == [(50, 0), (50, 0)]
    del sender  # (never started: its queues are freed with it)


def test_bad_columns_are_refused_not_read() -> None:
    planner = Planner(Edits(), Sampler())
    fast = native.fast_planner(planner, None)
    rows = [{"id": "a", "server": "h:1", "method": "GET", "target": "/", "version": "HTTP/1.1",
             "req_headers": [{"name": "Host", "value": "h"}], "req_body": None, "t_req_start": 0.0, "flags": None}]
    cols = list(native.plan_columns(pa.RecordBatch.from_pylist(rows, schema=SCHEMA)))
    v, o, d, off, n = cols[3]
    with pytest.raises(ValueError):
        fast.plan(cols[:3] + [(v, o, d, off, n + 5)] + cols[4:], None)  # longer than its buffers
    bad = pa.py_buffer(b"\x00\x00\x00\x00\xff\x00\x00\x00")  # an offset past the data
    with pytest.raises(ValueError):
        fast.plan(cols[:3] + [(v, bad, d, 0, 1)] + cols[4:], None)
    with pytest.raises(ValueError):  # (no arithmetic on it overflows)
        fast.plan(cols[:3] + [(v, o, d, 1 << 62, 1 << 62)] + cols[4:], None)
    lv, lo, _, loff, ln = cols[5]
    with pytest.raises(ValueError):  # a list's rows are its child's: no data of its own is read
        fast.plan(cols[:5] + [(lv, lo, bytearray(b"x"), loff, ln)] + cols[6:], None)
    with pytest.raises(TypeError):  # set up once: a second __init__ would leave it half-made
        fast.__init__("suffix", "", "-shadow", [("x", "\u2603", "v")], [], [], 1.0, bytes(16), None, False, None)
    assert fast.plan(cols, None) is not None


def test_empty_and_question_mark_methods_are_one_write() -> None:
    """plan.count_skip names an empty method "?": a method "?" adds to the same count."""
    rows = [{"id": str(k), "server": "h:1", "method": m, "target": "/", "version": "HTTP/1.1", "req_headers": [],
             "req_body": None, "t_req_start": 0.0, "flags": None} for k, m in enumerate(["", "?", "", "PUT"])]
    planned = check(Planner(Edits(), Sampler()), None, pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
    assert planned.writes == {"?": 3, "PUT": 1}


def test_a_null_header_list_has_no_headers_in_both() -> None:
    """A null list whose offsets still span values (Arrow allows it): no headers, and the
    next rows keep their own."""
    pair = pa.struct([("name", pa.string()), ("value", pa.string())])
    values = pa.array([{"name": "Host", "value": "a"}, {"name": "Host", "value": "b"},
                       {"name": "Host", "value": "c"}], pair)
    heads = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), values, mask=pa.array([False, True, False]))
    n = 3
    batch = pa.RecordBatch.from_arrays([
        pa.array([f"i{k}" for k in range(n)]), pa.array(["s:1"] * n), pa.array(["GET"] * n), pa.array(["/"] * n),
        pa.array(["HTTP/1.1"] * n), heads, pa.array([None] * n, pa.binary()), pa.array([0.0] * n),
        pa.array([None] * n, pa.list_(pa.string()))], schema=SCHEMA)
    assert [c.headers for c in captured_rows(batch)] == [[("Host", "a")], [], [("Host", "c")]]
    planned = check(Planner(Edits(), Sampler()), None, batch)
    assert [j[2] for j in planned.jobs()] == ["a-shadow", None, "c-shadow"]


def test_columns_of_other_types_are_planned_in_python() -> None:
    rows = [{"id": "a", "server": "h:1", "method": "GET", "target": "/", "version": "HTTP/1.1",
             "req_headers": [], "req_body": None, "t_req_start": 0.0, "flags": None}]
    batch = pa.RecordBatch.from_pylist(rows, schema=SCHEMA)
    as_binary = batch.set_column(2, "method", batch.column("method").cast(pa.binary()))
    assert native.plan_columns(as_binary) is None
    as_large = batch.set_column(3, "target", batch.column("target").cast(pa.large_string()))
    assert native.plan_columns(as_large) is None
    assert native.plan_columns(batch) is not None
