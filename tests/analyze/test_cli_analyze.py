"""`shadowtap analyze` on bad input: one clear line or a line in the report, never a crash."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

from capture.recording import EXCHANGE_SCHEMA, PartWriter, private_dir
from replay.results import Result, ResultParts, target_dir
from tests import netlab

JSON = [{"name": "Content-Type", "value": "application/json"}]


def make(rec: Path, rows: list[dict[str, Any]], results: list[Result] | None) -> Path:
    private_dir(rec)
    w = PartWriter(rec / "exchanges", EXCHANGE_SCHEMA)
    for i, r in enumerate(rows):
        w.add({"id": f"c-{i}", "conn": "c", "index": i, "client": "10.0.0.1:1", "server": "10.0.0.2:80",
               "method": "GET", "target": r.get("target", f"/x/{i}"), "version": "HTTP/1.1",
               "req_headers": [{"name": "Host", "value": "svc"}], "req_body": None, "req_body_len": 0,
               "status": 200, "reason": "OK", "resp_version": "HTTP/1.1", "resp_headers": r.get("headers", JSON),
               "resp_body": r["body"], "resp_body_len": len(r["body"]), "t_req_start": 1.0, "t_req_end": 1.0,
               "t_resp_start": 1.001, "t_resp_end": 1.002, "interim": [], "flags": [], "error": None})
    w.flush()
    if results is not None:
        ResultParts(target_dir(rec, "shadow")).write(results)
    return rec


def analyze(rec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*netlab.shadowtap_argv(), "analyze", str(rec), *args], capture_output=True, text=True,
                          timeout=120, cwd=netlab.REPO)


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    assert lines[-1].startswith("error: "), p.stderr
    return lines[-1]


def test_not_a_recording_and_no_results(tmp_path: Path) -> None:
    p = analyze(tmp_path / "nothing")
    assert p.returncode == 2 and "not a recording" in one_error_line(p)
    rec = make(tmp_path / "rec", [{"body": b"{}"}], None)
    p = analyze(rec)
    assert p.returncode == 2 and "no results for --target shadow" in one_error_line(p)
    p = analyze(rec, "--target", "shadow", "--baseline", "nope")
    assert p.returncode == 2


def test_results_for_unknown_ids_only(tmp_path: Path) -> None:
    rec = make(tmp_path / "rec", [{"body": b"{}"}], [Result("zz-9", "shadow", status=200, body=b"{}", t_send=1, t_end=1)])
    p = analyze(rec)
    assert p.returncode == 2 and "pair with none" in one_error_line(p)
    report = json.loads((rec / "report" / "report.json").read_text())
    assert any("1 results of shadow are for exchanges not in the recording" in x for x in report["problems"])


def test_bad_json_and_a_gzip_bomb_are_reported_not_fatal(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (40 << 20))  # 40 MiB of zeros in ~40 KB: over the decode limit
    gz = [{"name": "Content-Type", "value": "application/json"}, {"name": "Content-Encoding", "value": "gzip"}]
    rows = [{"body": b"<html>oops</html>", "target": "/bad"}, {"body": bomb, "headers": gz, "target": "/bomb"},
            {"body": b'{"a": 1}', "target": "/ok"}]
    results = [Result("c-0", "shadow", status=200, headers=[("Content-Type", "application/json")], body=b"<html>x</html>",
                      t_send=1, t_end=1.001),
               Result("c-1", "shadow", status=200, headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                      body=bomb, t_send=1, t_end=1.001),
               Result("c-2", "shadow", status=200, headers=[("Content-Type", "application/json")], body=b'{"a": 2}',
                      t_send=1, t_end=1.001)]
    rec = make(tmp_path / "rec", rows, results)
    p = analyze(rec, "--max-diff-rate", "100%")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    report = json.loads((rec / "report" / "report.json").read_text())
    problems = " | ".join(report["problems"])
    assert "GET /bad: primary body: not the JSON its Content-Type says (1)" in problems
    assert "too_large" in problems
    eps = {e["endpoint"]: e for e in report["endpoints"]}
    assert [f["path"] for f in eps["GET /ok"]["fields"]] == ["body.a"]
    assert eps["GET /bad"]["fields"][0]["path"] == "body"
    md = (rec / "report" / "summary.md").read_text()
    assert "Input problems" in md and (rec / "report" / "index.html").stat().st_mode & 0o777 == 0o600


def test_gate_exit_codes(tmp_path: Path) -> None:
    rows = [{"body": json.dumps({"i": i}).encode(), "target": f"/items/{i}"} for i in range(20)]
    results = [Result(f"c-{i}", "shadow", status=200, headers=[("Content-Type", "application/json")],
                      body=json.dumps({"i": i if i else -1}).encode(), t_send=1, t_end=1.001) for i in range(20)]
    rec = make(tmp_path / "rec", rows, results)
    p = analyze(rec)
    assert p.returncode == 1 and "GET /items/{id}: 5.0% of answers differ" in p.stderr and "verdict: FAIL" in p.stderr
    p = analyze(rec, "--max-diff-rate", "10%", "--json", str(tmp_path / "r.json"))
    assert p.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["verdict"] == "pass"
    p = analyze(rec, "--ignore-field", "body.i")
    assert p.returncode == 0
    p = analyze(rec, "--tolerance", "body.i=1")
    assert p.returncode == 0
    p = analyze(rec, "--max-diff-rate", "lots")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_repeated_ids_and_secrets_in_targets_bodies_and_lists(tmp_path: Path) -> None:
    rows = [{"body": b'{"tokens": ["LSECRET1"], "ok": 1}', "target": "/q?access_token=QSECRET1&page=2"},
            {"body": b'{"tokens": ["LSECRET1"], "ok": 1}', "target": "/q?access_token=QSECRET1&page=2"}]
    rec = make(tmp_path / "rec", rows, [Result("c-0", "shadow", status=200, headers=[("Content-Type", "application/json")],
                                               body=b'{"tokens": ["LSECRET2"], "ok": 2}', t_send=1, t_end=1.001)])
    # the second row repeats the first one's id: c-1 is its own id, so make a true repeat
    from capture.recording import PartWriter as PW
    w = PW(rec / "exchanges", EXCHANGE_SCHEMA)
    w.add({**{k: None for k in EXCHANGE_SCHEMA.names}, "id": "c-0", "method": "GET", "target": "/q",
           "status": 200, "interim": [], "flags": []})
    w.flush()
    p = analyze(rec, "--max-diff-rate", "100%")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    out = "".join((rec / "report" / n).read_text() for n in ("report.json", "summary.md", "index.html"))
    for secret in ("QSECRET1", "LSECRET1", "LSECRET2"):
        assert secret not in out, secret
    report = json.loads((rec / "report" / "report.json").read_text())
    assert any("1 exchanges repeat an id" in x for x in report["problems"])
    p = analyze(rec, "--baseline", "shadow")
    assert p.returncode == 2 and "is the --target" in one_error_line(p)
