"""`shadowtap show` on a real recording: fixtures/httpbin_curl.pcap (curl → httpbin, captured on a
veth), extracted, and replayed to an httpbin this module starts on 127.0.0.1 under gunicorn.

The recording gets three results: `shadow` and `baseline` from one replay (reads only: POST, PUT
and DELETE are held back) and `writes` from a second (--allow-writes). So every way `show` can
find or not find an exchange is real data, not a hand-made row.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from analyze import redact
from analyze.show import body_text
from tests import netlab

pytestmark = pytest.mark.timeout(120)

PCAP = netlab.REPO / "fixtures" / "httpbin_curl.pcap"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shadowtap(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([*netlab.shadowtap_argv(), *args], capture_output=True, text=True, timeout=60,
                       cwd=netlab.REPO, env=netlab.curl_env())
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("show")
    port = _free_port()
    with open(work / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--no-control-socket", "-b", f"127.0.0.1:{port}", "-w", "1",
             "-k", "gthread", "--threads", "4", "httpbin:app"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=work)
    try:
        netlab.wait_for_port("127.0.0.1", port, 20, proc)  # type: ignore[arg-type]
        r = work / "rec"
        shadowtap("extract", str(PCAP), "-o", str(r))
        url = f"http://127.0.0.1:{port}"
        shadowtap("replay", str(r), "--target", url, "--baseline", url, "--pace", "fast")
        shadowtap("replay", str(r), "--name", "writes", "--target", url, "--allow-writes", "--pace", "fast")
        yield r
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def sections(out: str) -> list[tuple[str, str]]:
    """(heading, text) for each `── heading ──` block of show's output."""
    parts: list[tuple[str, str]] = []
    for line in out.splitlines():
        if line.startswith("── "):
            parts.append((line.strip("─ "), ""))
        elif parts:
            parts[-1] = (parts[-1][0], parts[-1][1] + line + "\n")
    return parts


def test_headers_primary_and_shadow_like_tcpdump(rec: Path) -> None:
    out = shadowtap("show", str(rec), "--endpoint", "GET /headers").stdout
    s = sections(out)
    heads = [h for h, _ in s]
    assert [h.split(":")[0].split(",")[0] for h in heads] == [
        "request", "response from the primary", "request", "response from shadow",
        "request", "response from baseline"], heads
    assert heads[2].startswith("request, as sent to shadow (http://127.0.0.1:")
    captured, primary, sent, shadow = (t for _, t in s[:4])
    assert captured.startswith("GET /headers HTTP/1.1\nHost: httpbin:8000\nUser-Agent: curl/7.88.1\nAccept: */*\n")
    assert primary.startswith("HTTP/1.1 200 OK\n") and '"Host": "httpbin:8000"' in primary
    assert sent.startswith("GET /headers HTTP/1.1\nHost: httpbin-shadow:8000\nUser-Agent: curl/7.88.1\n")
    assert "[Host rewritten by replay: httpbin:8000 -> httpbin-shadow:8000; the rest as captured]" in sent
    assert shadow.startswith("HTTP/1.1 200 OK\n") and '"Host": "httpbin-shadow:8000"' in shadow
    assert "Content-Type: application/json" in shadow
    assert out.startswith("exchange 0bbbe32d77c6-0: GET /headers ")


def test_by_id_with_secrets_redacted_and_bodies_decoded(rec: Path) -> None:
    out = shadowtap("show", str(rec), "--id", "0bbbe32d77c6-12", "--baseline", "none").stdout  # basic-auth
    assert "GET /basic-auth/user/passwd HTTP/1.1" in out
    assert out.count("Authorization: [redacted]") == 2  # as captured, as sent
    assert "dXNlcjpwYXNzd2Q" not in out and "response from baseline" not in out
    gz = shadowtap("show", str(rec), "--endpoint", "GET /gzip").stdout
    assert "after undoing Content-Encoding: gzip]" in gz and gz.count('"gzipped": true') == 3


def test_write_with_interim_and_binary_body(rec: Path) -> None:
    out = shadowtap("show", str(rec), "--id", "6f90579250f9-0", "--target", "writes").stdout  # POST, 8 KiB, 100-continue
    assert "POST /post HTTP/1.1" in out and "Expect: 100-continue" in out
    assert "HTTP/1.1 100 Continue\nHTTP/1.1 200 OK" in out
    assert "[8192 bytes of binary (application/octet-stream), not shown; first 16: 00 01 02 03" in out
    assert "request, as sent to writes" in out
    # the baseline never got writes: said, not an error
    assert "── baseline (http://127.0.0.1:" in out and "): this exchange was not replayed to it ─" in out


def test_endpoint_templates_and_literal_paths(rec: Path) -> None:
    first = shadowtap("show", str(rec), "--endpoint", "GET /status/{id}").stdout
    assert first.splitlines()[0].startswith("exchange 0bbbe32d77c6-5: GET /status/404 ")
    lit = shadowtap("show", str(rec), "--endpoint", "get /status/304").stdout
    assert lit.splitlines()[0].startswith("exchange 0bbbe32d77c6-7: GET /status/304 ")
    assert "HTTP/1.1 304 NOT MODIFIED" in lit


def test_long_bodies_are_cut(rec: Path) -> None:
    out = shadowtap("show", str(rec), "--endpoint", "GET /stream/{id}", "--max-body", "300").stdout
    assert "more characters (--max-body 0 shows all)" in out
    full = shadowtap("show", str(rec), "--endpoint", "GET /stream/{id}", "--max-body", "0").stdout
    assert "more characters" not in full and full.count('"id": 4') == 3


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert p.stdout == ""
    return lines[0]


@pytest.mark.parametrize("args, code, message", [
    (["--id", "nope-0"], 2, "no exchange with id nope-0"),
    (["--id", "6f90579250f9-0"], 2, "has no result in results/shadow (it was not sampled, or it is a write"),
    (["--endpoint", "POST /post"], 2, "none of the 2 exchanges of POST /post has a result in results/shadow"),
    (["--endpoint", "GET /nothing"], 2, "no exchange of endpoint GET /nothing"),
    (["--endpoint", "headers"], 2, "--endpoint wants 'METHOD /path/{id}'"),
    (["--target", "v3"], 2, "no results for --target v3 (there are: baseline, shadow, writes)"),
    (["--baseline", "v3"], 2, "no results for --baseline v3"),
])
def test_errors_are_one_line(rec: Path, args: list[str], code: int, message: str) -> None:
    p = shadowtap("show", str(rec), *args, ok=False)
    assert p.returncode == code
    assert message in one_error_line(p)


def test_recordings_without_results(tmp_path: Path) -> None:
    p = shadowtap("show", str(tmp_path / "none"), ok=False)
    assert p.returncode == 2 and "not a recording" in one_error_line(p)
    shadowtap("extract", str(PCAP), "-o", str(tmp_path / "rec"))
    p = shadowtap("show", str(tmp_path / "rec"), ok=False)
    assert p.returncode == 2 and "no results yet (run shadowtap replay" in one_error_line(p)


def test_redaction_helpers() -> None:
    assert redact.text("/login?user=ada&token=abc123&q=a%20b") == "/login?user=ada&token=[redacted]&q=a%20b"
    assert redact.text("/plain?q=1") == "/plain?q=1"
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    assert body_text(b"user=ada&password=hunter2", form, 100) == ["user=ada&password=[redacted]"]
    js = [("Content-Type", "application/json")]
    assert body_text(b'{"a":1}', js, 100) == ['{"a":1}']  # as sent when nothing is masked
    assert body_text(b'{"a":1,"api_key":"k"}', js, 100) == ["{", '  "a": 1,', '  "api_key": "[redacted]"', "}"]
    assert body_text(b"", js, 100) == []
