"""The two passes and the gate, on synthetic pairs (the seeded test runs real servers)."""
import json
import uuid
from typing import Any

from analyze.analysis import Analyzer, Thresholds, verdict
from analyze.diff import Rules
from analyze.endpoints import Endpoints

JSON = [{"name": "Content-Type", "value": "application/json"}]


def ex(i: int, target: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return {"id": f"c-{i}", "method": "GET", "target": target, "client": "10.0.0.9:5555", "status": status,
            "req_headers": [{"name": "Host", "value": "svc:8000"}], "req_body": None,
            "resp_headers": JSON, "resp_body": json.dumps(body).encode(), "t_req_start": 100.0, "t_resp_end": 100.01}


def res(i: int, body: dict[str, Any] | None, status: int = 200, error: str | None = None, ms: float = 10) -> dict[str, Any]:
    return {"id": f"c-{i}", "host": "svc-shadow:8000", "status": None if error else status, "error": error,
            "headers": None if error else JSON, "body": None if body is None else json.dumps(body).encode(),
            "t_send": 200.0, "t_end": 200.0 + ms / 1000}


def run(pairs: list[tuple[dict, dict | None, dict | None]], baseline: bool, **t: float) -> dict[str, Any]:
    th = Thresholds(**t)
    a = Analyzer(Rules(), Endpoints(), baseline, th)
    for e, s, b in pairs:
        a.add(e, s, b)
    r = a.report()
    r["verdict"], r["reasons"] = verdict(r, th)
    return r


def by_endpoint(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["endpoint"]: e for e in r["endpoints"]}


def fields(e: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["classification"] for f in e["fields"]}


def scenario() -> list[tuple[dict, dict | None, dict | None]]:
    pairs = []
    for i in range(100):
        u = {"id": i, "name": f"u{i}", "request_id": str(uuid.uuid4()), "host": "svc:8000"}
        primary = ex(i, f"/users/{i}", u)
        shadow = dict(u, request_id=str(uuid.uuid4()), host="svc-shadow:8000")
        if i % 10 == 0:
            shadow["name"] = "changed"  # a real regression on 10 % of the answers
        base = dict(u, request_id=str(uuid.uuid4()), host="svc-shadow:8000")
        pairs.append((primary, res(i, shadow, 500 if i == 5 else 200), res(i, base)))
    for i in range(100, 110):
        pairs.append((ex(i, "/health", {"ok": True}), res(i, None, error="timeout"), res(i, {"ok": True})))
    pairs.append((ex(200, "/never", {"a": 1}), None, None))
    return pairs


def test_with_a_baseline_diffy_separates_change_noise_and_artifacts() -> None:
    r = run(scenario(), baseline=True)
    users = by_endpoint(r)["GET /users/{id}"]
    assert fields(users) == {"body.name": "change", "status": "change", "body.request_id": "noise",
                             "body.host": "artifact"}
    assert (users["requests"], users["sampled"], users["replayed"], users["errors"]) == (100, 100, 100, 0)
    assert users["different"] == 11 and users["noise"] == 89 and users["identical"] == 0
    assert users["status_transitions"] == {"200->500": 1}
    health = by_endpoint(r)["GET /health"]
    assert health["errors"] == 10 and health["error_rate"] == 1.0 and health["replayed"] == 0
    never = by_endpoint(r)["GET /never"]
    assert never["sampled"] == 0 and never["requests"] == 1
    assert r["verdict"] == "fail"
    assert any(x.startswith("GET /users/{id}: 11.0% of answers differ") for x in r["reasons"])
    assert any("10 of 110 replayed requests failed" in x for x in r["reasons"])


def test_without_a_baseline_volatile_values_are_probable_noise() -> None:
    r = run(scenario(), baseline=False)
    users = by_endpoint(r)["GET /users/{id}"]
    assert fields(users)["body.request_id"] == "probable_noise"
    assert fields(users)["body.name"] == "change" and fields(users)["body.host"] == "artifact"


def test_identical_shadow_passes() -> None:
    pairs = [(ex(i, f"/items/{i}", {"i": i}), res(i, {"i": i}), None) for i in range(50)]
    r = run(pairs, baseline=False)
    assert r["verdict"] == "pass" and r["totals"]["identical"] == 50 and r["reasons"] == []


def test_slower_p99_fails_the_gate() -> None:
    pairs = [(ex(i, "/slow", {"i": i}), res(i, {"i": i}, ms=50), res(i, {"i": i}, ms=10)) for i in range(30)]
    r = run(pairs, baseline=True)
    lat = by_endpoint(r)["GET /slow"]["latency"]
    assert lat["shadow"]["p99"] == 50.0 and lat["baseline"]["p99"] == 10.0 and lat["p99_increase"] == 4.0
    assert r["verdict"] == "fail" and "p90 latency +400% against the baseline (+40 ms" in r["reasons"][0]
    assert lat["judged"] == {"percentile": "p90", "samples": 30, "against": "baseline", "increase": 4.0, "delta_ms": 40.0}


def test_a_pair_is_judged_by_its_own_differences() -> None:
    """One shadow answers a different host: that pair differs; the nine that only echo the
    rewritten Host stay artifacts, although they share the field."""
    pairs = []
    for i in range(10):
        shadow = {"host": "other" if i == 0 else "svc-shadow:8000"}
        pairs.append((ex(i, f"/h/{i}", {"host": "svc:8000"}), res(i, shadow), None))
    r = run(pairs, baseline=False, max_diff_rate=0.5)
    e = by_endpoint(r)["GET /h/{id}"]
    assert (e["different"], e["artifacts"]) == (1, 9) and r["verdict"] == "pass"
    assert e["fields"][0]["examples"][0]["shadow"] == "other"  # the real change is the example


def test_without_a_baseline_real_changes_are_not_taken_for_noise() -> None:
    """Volatile-looking values are noise only when both sides hold one of the same kind."""
    cases = {
        "dropped": ({"id": "550e8400-e29b-41d4-a716-446655440000", "x": 1}, {"x": 1}),
        "size": ({"size": 1_700_000_000}, {"size": 1_900_000_000}),
        "type": ({"t": 1_700_000_000}, {"t": "2023-11-14T22:13:20Z"}),
        "digits": ({"account": "1234567890123456"}, {"account": "6543210987654321"}),
    }
    pairs = [(ex(i, f"/{name}", a), res(i, b), None) for i, (name, (a, b)) in enumerate(cases.items())]
    r = run(pairs, baseline=False)
    for name in cases:
        assert by_endpoint(r)[f"GET /{name}"]["different"] == 1, name


def test_a_text_body_is_judged_on_every_line() -> None:
    text = [{"name": "Content-Type", "value": "text/plain"}]
    a = dict(ex(0, "/log", {}), resp_headers=text, resp_body=b"generated 2026-11-26T10:00:00Z\nprice: 10\n")
    b = dict(res(0, None), headers=text, body=b"generated 2026-11-26T11:00:00Z\nprice: 99\n")
    quiet = dict(res(1, None), headers=text, body=b"generated 2026-11-26T11:00:00Z\nprice: 10\n")
    r = run([(a, b, None), (dict(a, id="c-1"), quiet, None)], baseline=False)
    e = by_endpoint(r)["GET /log"]
    assert (e["different"], e["noise"]) == (1, 1)


def test_bodies_cut_at_capture_are_not_compared() -> None:
    full = json.dumps({"items": list(range(50))}).encode()
    primary = dict(ex(0, "/big", {}), resp_body=full[:40], flags=["body_truncated"])
    r = run([(primary, res(0, {"items": list(range(50))}), None)], baseline=False)
    e = by_endpoint(r)["GET /big"]
    assert e["different"] == 0 and e["identical"] == 1
    assert any("bodies not compared, cut at capture (body_truncated)" in p for p in r["problems"])


def test_a_huge_integer_is_no_crash() -> None:
    r = run([(ex(0, "/n", {"n": 10 ** 400}), res(0, {"n": 1}), None)], baseline=False)
    assert by_endpoint(r)["GET /n"]["different"] == 1


def test_an_endpoint_that_keeps_failing_fails_the_gate_on_its_own() -> None:
    pairs = [(ex(i, f"/items/{i}", {"i": i}), res(i, {"i": i}), None) for i in range(1000)]
    pairs += [(ex(i, "/checkout", {"ok": 1}), res(i, None, error="timeout"), None) for i in range(1000, 1004)]
    r = run(pairs, baseline=False)
    assert r["totals"]["error_rate"] < 0.005  # 4 of 1,004: under the run's threshold
    assert r["verdict"] == "fail" and r["reasons"] == ["GET /checkout: 4 of 4 replayed requests failed (100.0%, max 0.50%)"]
