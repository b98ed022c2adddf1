"""End to end on live traffic: httpbin in a namespace, tcpdump on the veth, curl as the client;
`shadowtap extract` on the capture must equal gunicorn's access log exactly.

gunicorn's logged body size is the de-chunked body, which is what extract's `resp_body_len`
means, so every field compares exactly, chunked responses included. Needs root (it creates a
network namespace); CI runs as root.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `from tests.netlab import …` needs the repository root
    sys.path.insert(0, str(REPO))

from tests import netlab  # noqa: E402
from tests.netlab import extract_jsonl, port_of  # noqa: E402

HOST = ["-H", "Host: httpbin:8000"]


@pytest.mark.timeout(120)
def test_live_capture_equals_gunicorn_log(tmp_path: Path) -> None:
    pcap = tmp_path / "live.pcap"
    with netlab.netns("live") as ns:
        server = netlab.start_httpbin(ns, tmp_path)
        with netlab.tcpdump(ns.host_if, pcap, f"tcp port {server.port}", lab=ns) as cap:
            u = server.url
            reports = netlab.curl([
                [*HOST, u("/get?a=1&b=two")],
                [*HOST, "-H", "Expect:", "-H", "Content-Type: application/json",
                 "--data-binary", '{"live":true}', u("/post")],
                [*HOST, "-I", u("/get")],
                [*HOST, u("/status/418")],
                [*HOST, u("/stream/3")],  # chunked
            ])
            reports += netlab.curl([[*HOST, u("/bytes/5000?seed=3")], [*HOST, u("/status/204")]])
        stats = cap.stats
        server.stop()
        log = server.records()

    assert stats is not None and stats.dropped_kernel == 0, stats
    assert len(log) == len(reports) == 7
    assert [(r["method"], r["status"], r["size"]) for r in reports] == [
        (x.method, x.status, x.body_bytes) for x in log
    ], "curl and gunicorn disagree: the lab itself is broken"

    exchanges = extract_jsonl(pcap)
    by_port: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ex in exchanges:
        by_port[port_of(ex["client"])].append(ex)
    # gunicorn logs each connection's requests in order and the two curl runs were sequential,
    # so connections ordered by their first request, then `index`, reproduce the log's order.
    got = [
        (port, ex["method"], ex["target"], ex["status"], ex["resp_body_len"])
        for port, exs in sorted(by_port.items(), key=lambda kv: min(e["t_req_start"] for e in kv[1]))
        for ex in sorted(exs, key=lambda e: e["index"])
    ]
    want = [(x.client_port, x.method, x.target, x.status, x.body_bytes) for x in log]
    assert got == want
    assert all(not ex["flags"] for ex in exchanges), [ex["flags"] for ex in exchanges]
    assert len(by_port) == 2


@pytest.mark.timeout(120)
def test_tcpdump_pipe_streams_exchanges_while_capturing(tmp_path: Path) -> None:
    """`tcpdump -w - | shadowtap extract -`: each exchange is printed as soon as it completes,
    not when the capture ends."""
    import json
    import queue
    import subprocess
    import threading

    with netlab.netns("pipe") as ns:
        server = netlab.start_httpbin(ns, tmp_path)
        dump = subprocess.Popen(
            ["tcpdump", "-i", ns.host_if, "-U", "-w", "-", "-s", "0", "-n", "--immediate-mode",
             "-B", "65536", f"tcp port {server.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        ns.procs.append(dump)
        ext = subprocess.Popen([*netlab.shadowtap_argv(), "extract", "-", "--jsonl", "-"],
                               stdin=dump.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert dump.stdout is not None and dump.stderr is not None
        dump.stdout.close()
        ns.procs.append(ext)
        assert b"listening on" in dump.stderr.readline()
        lines: queue.Queue[dict[str, Any]] = queue.Queue()

        def read() -> None:
            assert ext.stdout is not None
            for raw in ext.stdout:
                lines.put(json.loads(raw))

        threading.Thread(target=read, daemon=True).start()
        try:
            for i in range(3):
                netlab.curl([[*HOST, server.url(f"/anything/live{i}")]])
                got = lines.get(timeout=10)  # arrives while tcpdump is still running
                assert got["target"] == f"/anything/live{i}" and got["status"] == 200
                assert dump.poll() is None
        finally:
            dump.terminate()
            dump.wait(timeout=10)
            ext.wait(timeout=10)
    assert ext.returncode == 0
    assert lines.empty()
