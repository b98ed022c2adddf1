"""`shadowtap mirror` end to end on veths: live capture of v1's traffic, mirrored to v2.

v1 and v2 are httpbin under gunicorn, each in its own namespace on port 8000 (the seed's
two deployments); the mirror sniffs v1's veth and sends to v2's address.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from capture.recording import read_exchanges
from replay.results import read_results
from tests import netlab


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[netlab.NetNS, netlab.Server, netlab.NetNS, netlab.Server]]:
    work = tmp_path_factory.mktemp("mirror")
    with netlab.netns("mv1") as ns1, netlab.netns("mv2") as ns2:
        v1 = netlab.start_httpbin(ns1, work / "v1", port=8000)
        v2 = netlab.start_httpbin(ns2, work / "v2", port=8000)
        try:
            yield ns1, v1, ns2, v2
        finally:
            v1.stop()
            v2.stop()


def start_mirror(ns: netlab.NetNS, rec: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*netlab.shadowtap_argv(), "mirror", "-i", ns.host_if, "--port", "8000",
                             "-o", str(rec), *extra], stderr=subprocess.PIPE, text=True, cwd=netlab.REPO)
    deadline = time.monotonic() + 10
    while not (rec / "pcap" / "capture.json").exists() or \
            json.loads((rec / "pcap" / "capture.json").read_text()).get("state") != "running":
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "mirror did not start"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_mirror_sends_live_traffic_to_v2(pair: tuple, tmp_path: Path) -> None:
    ns1, v1, ns2, v2 = pair
    before = len(v2.records())
    rec = tmp_path / "rec"
    proc = start_mirror(ns1, rec, "--target", v2.base_url)
    host = ["-H", "Host: httpbin:8000"]
    netlab.curl([[*host, v1.url("/headers")], [*host, v1.url("/get?n=1")], [*host, v1.url("/status/418")],
                 [*host, "-X", "POST", "-d", "x=1", v1.url("/post")]])
    # Mirrored live, while the capture runs (not at the stop): tcpdump hands packets over
    # within a second, and each exchange is sent as it completes.
    deadline = time.monotonic() + 8
    while len(v2.records()) - before < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(v2.records()) - before == 3, "not mirrored while capturing"
    err = stop(proc)
    logged = v2.records()[before:]
    assert sorted((r.method, r.target) for r in logged) == [
        ("GET", "/get?n=1"), ("GET", "/headers"), ("GET", "/status/418")]  # no POST without --allow-writes
    exchanges = list(read_exchanges(rec))
    assert len(exchanges) == 4  # everything captured is recorded, mirrored or not
    results = {r["id"]: r for r in read_results(rec, "shadow")}
    assert len(results) == 3
    by_target = {e["target"]: e for e in exchanges}
    shadow = results[by_target["/headers"]["id"]]
    assert shadow["host"] == "httpbin-shadow:8000"
    assert json.loads(shadow["body"])["headers"]["Host"] == "httpbin-shadow:8000"
    assert results[by_target["/status/418"]["id"]]["status"] == 418
    # live lag: how long after the capture saw the request it was sent (bounded by the 1 s hand-over)
    lags = [r["t_send"] - r["t_due"] for r in results.values()]
    assert all(0 <= lag < 5 for lag in lags), lags
    assert "1 writes not sent (POST 1" in err
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["extract"]["counts"]["exchanges"] == 4
    assert manifest["replay"]["targets"]["shadow"]["responses"] == 3


def _blackhole() -> tuple[socket.socket, int]:
    """Accepts connections (the kernel does) and never answers: a shadow that hangs."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(512)
    return s, s.getsockname()[1]


def test_slow_shadow_drops_are_counted_and_capture_is_whole(pair: tuple, tmp_path: Path) -> None:
    ns1, v1, _, _ = pair
    hole, port = _blackhole()
    try:
        rec = tmp_path / "rec"
        proc = start_mirror(ns1, rec, "--target", f"http://127.0.0.1:{port}", "--concurrency", "1",
                            "--timeout", "1", "--queue", "3")
        n = 30
        netlab.curl([["-H", "Host: httpbin:8000", v1.url(f"/get?i={i}")] for i in range(n)])
        time.sleep(1.5)
        t0 = time.monotonic()
        err = stop(proc)
        assert time.monotonic() - t0 < 20  # the backlog drains by timeouts, bounded by the queue
    finally:
        hole.close()
    exchanges = list(read_exchanges(rec))
    assert len(exchanges) == n  # the capture lost nothing
    manifest = json.loads((rec / "manifest.json").read_text())["replay"]
    results = read_results(rec, "shadow")
    dropped = manifest["mirrored_dropped"]
    assert dropped > 0 and f"{dropped} of {n} exchanges were not mirrored" in err
    assert len(results) + dropped == n  # every exchange: a result or counted as dropped
    assert {r["error"] for r in results} == {"timeout"}
    assert len({r["id"] for r in results}) == len(results)


def test_mirror_refuses_to_overwrite_a_recording(pair: tuple, tmp_path: Path) -> None:
    ns1, _, _, v2 = pair
    rec = tmp_path / "rec"
    (rec / "exchanges").mkdir(parents=True)
    (rec / "exchanges" / "part-00000.parquet").write_bytes(b"x")
    p = subprocess.run([*netlab.shadowtap_argv(), "mirror", "-i", ns1.host_if, "--port", "8000", "-o", str(rec),
                        "--target", v2.base_url], capture_output=True, text=True, timeout=30, cwd=netlab.REPO)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "already holds a recording" in p.stderr
    assert (rec / "exchanges" / "part-00000.parquet").read_bytes() == b"x"
