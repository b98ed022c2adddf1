"""`shadowtap extract` as a user runs it: outputs, exit codes, one-line errors."""
from __future__ import annotations

import gzip
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.capture.craft import Conv, get, ok, pcap_bytes

CLI = [sys.executable, "-m", "capture.cli"]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = Conv(sport=8000).handshake()
    c.c(get("/get?a=1", host="httpbin:8000", extra="Authorization: Bearer s3cret\r\n"))
    c.s(ok(b'{"ok": true}', extra="Content-Type: application/json\r\n"))
    c.ack_c()
    c.c(b"POST /post HTTP/1.1\r\nHost: httpbin:8000\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
    c.s(ok(b"created", status="201 Created"))
    c.ack_c()
    c.c(get("/pending"))
    path = tmp_path_factory.mktemp("cap") / "c.pcap"
    path.write_bytes(pcap_bytes(c.pkts))
    return path


def lines(out: bytes) -> list[dict]:
    return [json.loads(x) for x in out.decode().splitlines()]


def test_jsonl_to_stdout_has_the_documented_keys(capture: Path) -> None:
    r = run("extract", str(capture), "--jsonl", "-")
    assert r.returncode == 0, r.stderr
    rows = lines(r.stdout)
    keys = {"id", "conn", "index", "client", "server", "method", "target", "version", "status", "reason",
            "req_body_len", "resp_body_len", "t_req_start", "t_req_end", "t_resp_start", "t_resp_end", "flags"}
    assert all(keys <= row.keys() for row in rows)
    assert [(x["method"], x["target"], x["status"]) for x in rows] == [
        ("GET", "/get?a=1", 200), ("POST", "/post", 201), ("GET", "/pending", None)]
    assert rows[2]["flags"] == ["no_response"]
    assert rows[1]["req_body_len"] == 7
    assert b"extracted 3 exchanges" in r.stderr


def test_recording_parquet_manifest_and_modes(capture: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    r = run("extract", str(capture), "-o", str(rec))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b""  # a recording was asked for: stdout stays quiet
    parts = sorted((rec / "exchanges").glob("part-*.parquet"))
    assert len(parts) == 1 and not list((rec / "exchanges").glob(".*"))
    table = pq.read_table(parts[0])
    assert table.num_rows == 3
    row = table.to_pylist()[1]
    assert row["req_body"] == b'{"a":1}' and row["resp_body"] == b"created"
    assert row["req_headers"][0] == {"name": "Host", "value": "httpbin:8000"}
    for p in [*parts, rec / "manifest.json"]:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(rec).st_mode) == 0o700
    counts = json.loads((rec / "manifest.json").read_text())["extract"]["counts"]
    assert counts["exchanges"] == 3 and counts["requests_without_response"] == 1
    assert counts["packets"] == 10 and counts["http_connections"] == 1


def test_har_is_valid_and_complete(capture: Path, tmp_path: Path) -> None:
    har = tmp_path / "x.har"
    r = run("extract", str(capture), "--har", str(har))
    assert r.returncode == 0, r.stderr
    log = json.loads(har.read_text())["log"]
    assert log["version"] == "1.2"
    urls = [e["request"]["url"] for e in log["entries"]]
    assert urls == ["http://httpbin:8000/get?a=1", "http://httpbin:8000/post", "http://h/pending"]
    assert log["entries"][0]["request"]["queryString"] == [{"name": "a", "value": "1"}]
    assert log["entries"][1]["request"]["postData"]["text"] == '{"a":1}'
    assert log["entries"][0]["response"]["content"]["text"] == '{"ok": true}'
    assert stat.S_IMODE(os.stat(har).st_mode) == 0o600


def test_stdin_and_gzip_inputs_match_the_file(capture: Path, tmp_path: Path) -> None:
    plain = run("extract", str(capture)).stdout
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes()))
    assert run("extract", str(gz)).stdout == plain
    assert run("extract", "-", stdin=capture.read_bytes()).stdout == plain
    assert run("extract", "-", stdin=gz.read_bytes()).stdout == plain


def test_limit(capture: Path) -> None:
    assert len(lines(run("extract", str(capture), "--limit", "2").stdout)) == 2


def test_not_a_capture_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a capture\n")
    r = run("extract", str(bad))
    assert r.returncode == 2
    assert r.stderr.decode() == f"error: {bad} is not a pcap or pcapng file\n"
    r = run("extract", str(tmp_path / "missing.pcap"))
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and b"Traceback" not in r.stderr


def test_truncated_file_keeps_what_came_before(capture: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcap"
    data = capture.read_bytes()
    cut.write_bytes(data[:-30])
    r = run("extract", str(cut))
    assert r.returncode == 0
    assert b"warning:" in r.stderr and b"last record truncated" in r.stderr
    assert [x["target"] for x in lines(r.stdout)] == ["/get?a=1", "/post"]


def test_corrupt_record_mid_file_exits_1_and_keeps_results(capture: Path, tmp_path: Path) -> None:
    data = bytearray(capture.read_bytes())
    # Walk to the 10th record and give it an absurd length.
    off = 24
    for _ in range(9):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<I", data, off + 8, 50_000_000)
    bad = tmp_path / "corrupt.pcap"
    bad.write_bytes(bytes(data))
    r = run("extract", str(bad))
    assert r.returncode == 1
    assert b"corrupt record" in r.stderr and b"Traceback" not in r.stderr
    got = lines(r.stdout)
    assert [x["target"] for x in got][:2] == ["/get?a=1", "/post"]


def test_second_run_replaces_the_exchanges(capture: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    run("extract", str(capture), "-o", str(rec))
    run("extract", str(capture), "-o", str(rec), "--limit", "1")
    assert pq.read_table(rec / "exchanges").num_rows == 1
