"""`shadowtap extract` on the committed fixtures must reproduce the servers' access logs.

The truth files (fixtures/*.truth.json, written by fixtures/make_fixtures.py) list what nginx
or gunicorn logged, in log order. The extractor emits exchanges grouped by connection, not in
global time order, and the log is in completion order across connections, so neither global
order is comparable. What is comparable exactly is each connection's sequence: a connection is
identified on both sides by the client's TCP port (make_fixtures.py checks that each port opens
exactly one connection in the capture), and within a connection the log's order is the request
order, which is the extractor's `index` order. Comparing per-connection sequences is exact (every
request, in order, on the right connection) yet independent of how connections interleave.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.netlab import …` needs the repository root
    sys.path.insert(0, str(REPO))

from tests.netlab import extract_jsonl, port_of  # noqa: E402

FIXTURES = REPO / "fixtures"
SCENARIOS = sorted(p.name.removesuffix(".truth.json") for p in FIXTURES.glob("*.truth.json"))

# `interim` is how the extractor says a 100 Continue preceded the final response; the truth
# says which exchanges had one, and that is checked exactly below.
EXPECTED_FLAGS = {"interim"}

Row = tuple[str, str, int, str, int | None, int | None]


def version_of(text: str | None) -> str:
    return (text or "").removeprefix("HTTP/")


def truth_rows(truth: dict[str, Any]) -> dict[int, list[Row]]:
    """Per client port, the log's entries in order: (method, target, status, version,
    response body length, request body length); unknown lengths are None (not compared)."""
    rows: dict[int, list[Row]] = defaultdict(list)
    for e in truth["exchanges"]:
        rows[e["client_port"]].append((e["method"], e["target"], e["status"], version_of(e["protocol"]),
                                       e["resp_body_len"], e["req_body_len"]))
    return rows


def extracted_rows(exchanges: list[dict[str, Any]], truth_by_port: dict[int, list[Row]]) -> dict[int, list[Row]]:
    """The same view of the extractor's output; a length is blanked where the truth has none."""
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ex in exchanges:
        by_port[port_of(ex["client"])].append(ex)
    rows: dict[int, list[Row]] = {}
    for port, exs in by_port.items():
        exs.sort(key=lambda ex: ex["index"])
        expected = truth_by_port.get(port, [])
        out = []
        for i, ex in enumerate(exs):
            want = expected[i] if i < len(expected) else None
            resp_len = ex["resp_body_len"] if want is None or want[4] is not None else None
            req_len = ex["req_body_len"] if want is None or want[5] is not None else None
            out.append((ex["method"], ex["target"], ex["status"], version_of(ex["version"]), resp_len, req_len))
        rows[port] = out
    return rows


@pytest.fixture(scope="module", params=SCENARIOS)
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = request.param
    truth = json.loads((FIXTURES / f"{name}.truth.json").read_text())
    return truth, extract_jsonl(FIXTURES / truth["pcap"])


def test_fixtures_present() -> None:
    assert {"httpbin_curl", "nginx_wrk", "nginx_pipelined"} <= set(SCENARIOS)
    for name in SCENARIOS:
        assert (FIXTURES / f"{name}.pcap").stat().st_size < 1_000_000


def test_count_matches_log(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    truth, exchanges = case
    assert len(exchanges) == truth["count"] == len(truth["exchanges"])


def test_same_requests_as_log(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """Multiset of (method, target, status): a readable diff when something is lost or invented."""
    truth, exchanges = case
    want = Counter((e["method"], e["target"], e["status"]) for e in truth["exchanges"])
    got = Counter((ex["method"], ex["target"], ex["status"]) for ex in exchanges)
    assert got - want == Counter(), "extracted but not in the log"
    assert want - got == Counter(), "in the log but not extracted"


def test_each_connection_matches_log_line_for_line(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    truth, exchanges = case
    want = truth_rows(truth)
    got = extracted_rows(exchanges, want)
    assert sorted(got) == sorted(want), "connections (client ports) differ"
    for port in want:
        assert got[port] == want[port], f"connection from client port {port}"


def test_one_conn_id_per_connection(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    truth, exchanges = case
    conns: dict[int, set[str]] = defaultdict(set)
    for ex in exchanges:
        conns[port_of(ex["client"])].add(ex["conn"])
        assert ex["server"] == truth["server"]["address"]
    assert all(len(c) == 1 for c in conns.values()), conns
    assert len({c for cs in conns.values() for c in cs}) == truth["connections"]


def test_interim_and_flags(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """Clean captures: no flags except `interim`, exactly where a 100 Continue was captured."""
    truth, exchanges = case
    want = {(e["client_port"], e["conn_index"]): e["interim"] for e in truth["exchanges"]}
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ex in exchanges:
        by_port[port_of(ex["client"])].append(ex)
    for port, exs in by_port.items():
        for i, ex in enumerate(sorted(exs, key=lambda ex: ex["index"])):
            assert set(ex["flags"]) <= EXPECTED_FLAGS, (ex["method"], ex["target"], ex["flags"])
            assert ex["interim"] == want.get((port, i), []), (ex["method"], ex["target"])
            assert ("interim" in ex["flags"]) == bool(ex["interim"])


def test_timestamps_ordered(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, exchanges = case
    for ex in exchanges:
        assert ex["t_req_start"] <= ex["t_req_end"], ex
        assert ex["t_resp_start"] <= ex["t_resp_end"], ex
        assert ex["t_req_start"] <= ex["t_resp_start"], ex


def test_ids_unique_and_deterministic(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    truth, exchanges = case
    ids = [ex["id"] for ex in exchanges]
    assert len(set(ids)) == len(ids)
    again = extract_jsonl(FIXTURES / truth["pcap"])
    assert [ex["id"] for ex in again] == ids
