"""The native send loop (replay/native/sender.c) against the reference client (replay.client),
over real sockets: a scripted server on 127.0.0.1 answers each request in the way that once
broke a pool, and both loops must record the same results (error details are worded apart).
"""
from __future__ import annotations

import asyncio
import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from replay import native, plan
from replay.client import Pool, Target
from replay.plan import Job
from replay.results import Result

# Built with the rest (setup.py); only a SHADOWTAP_PURE=1 install, which has no compiled
# module at all, runs without it.
pytestmark = pytest.mark.skipif(not native.available() and plan.__file__.endswith(".py"),
                                reason="a pure-Python install (SHADOWTAP_PURE=1): no native loop")

# What the server does with one request head: the pieces it writes (with a pause before
# each), and whether it closes the connection afterwards.
Script = Callable[[bytes], tuple[list[bytes], bool]]


@dataclass
class Scripted:
    """A threaded TCP server on 127.0.0.1 that plays a script per request."""

    script: Script
    pause: float = 0.0
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    requests: int = 0
    connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def __enter__(self) -> "Scripted":
        self.sock.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(10)
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    got = conn.recv(65536)
                    if not got:
                        return
                    buf += got
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.requests += 1
                pieces, close = self.script(head)
                for p in pieces:
                    if self.pause:
                        time.sleep(self.pause)
                    conn.sendall(p)
                if close:
                    return
        except OSError:
            pass
        finally:
            conn.close()


def jobs(n: int, method: str = "GET", close: bool = False) -> list[Job]:
    return [Job(f"j-{i}", method, "/", 0.0, f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n".encode(), "h",
                "1.1.1.1:80", close) for i in range(n)]


FIELDS = ("id", "status", "reason", "version", "headers", "body", "body_len", "interim", "error")


def _row(r: Result) -> dict[str, Any]:
    d = {k: getattr(r, k) for k in FIELDS}
    d["headers"] = None if r.headers is None else [tuple(h) for h in r.headers]
    return d


def via_asyncio(port: int, js: list[Job], concurrency: int = 1, timeout: float = 2.0, max_body: int = 1 << 20,
                discard: bool = False) -> list[dict[str, Any]]:
    async def go() -> list[Result]:
        got: list[Result] = []
        done = asyncio.get_running_loop().create_future()

        def on_result(r: Result) -> None:
            got.append(r)
            if len(got) == len(js) and not done.done():
                done.set_result(None)
        p = Pool(asyncio.get_running_loop(), Target.parse("t", f"http://127.0.0.1:{port}"), concurrency,
                 timeout, max_body, discard, on_result)
        for j in js:
            p.submit(j, None)
        await asyncio.wait_for(done, 30)
        p.close()
        return got
    return sorted((_row(r) for r in asyncio.run(go())), key=lambda d: d["id"])


def via_native(port: int, js: list[Job], concurrency: int = 1, timeout: float = 2.0, max_body: int = 1 << 20,
               discard: bool = False, journal: Path | None = None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as d:
        path = journal or Path(d) / "_sent.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            s = native.new_sender([("127.0.0.1", port, fd)], concurrency, timeout, max_body, discard)
            s.start()
            s.submit(0, [j.id for j in js], [j.data for j in js], [j.host for j in js],
                     bytes(j.close for j in js), bytes(j.method == "HEAD" for j in js), [None] * len(js))
            s.close_input()
            rows: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                select.select([s.ready_fd], [], [], 0.2)
                for cols in s.collect():
                    if cols is not None:
                        rows += native.record_batch(cols, "t").to_pylist()
                if s.counts()[0]:
                    for cols in s.collect():
                        if cols is not None:
                            rows += native.record_batch(cols, "t").to_pylist()
                    break
            s.join()
        finally:
            os.close(fd)
    out = []
    for r in rows:
        d = {k: r[k] for k in FIELDS}
        d["headers"] = None if r["headers"] is None else [(h["name"], h["value"]) for h in r["headers"]]
        d["_times"] = (r["t_send"], r["t_first_byte"], r["t_end"])
        out.append(d)
    return sorted(out, key=lambda d: d["id"])


def both(script: Script, js: list[Job], pause: float = 0.0, **kw: Any) -> tuple[list[dict[str, Any]], int, int]:
    """Results of the native loop (checked equal to asyncio's), and the native run's requests
    and connections as the server counted them."""
    with Scripted(script, pause) as srv:
        ref = via_asyncio(srv.port, js, **kw)
    with Scripted(script, pause) as srv:
        got = via_native(srv.port, js, **kw)
        seen, conns = srv.requests, srv.connections
    assert [{k: v for k, v in d.items() if k != "_times"} for d in got] == ref
    return got, seen, conns


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def always(*pieces: bytes, close: bool = False) -> Script:
    return lambda head: (list(pieces), close)


@pytest.mark.parametrize("pieces", [[OK], [OK[:10], OK[10:]], [OK[:-2], OK[-2:]], [bytes([b]) for b in OK[:40]] + [OK[40:]]])
def test_content_length_whole_or_in_pieces(pieces: list[bytes]) -> None:
    got, seen, conns = both(always(*pieces), jobs(3), pause=0.002 if len(pieces) > 2 else 0.0)
    assert [(r["status"], r["reason"], r["body"], r["error"]) for r in got] == [(200, "OK", b"hello", None)] * 3
    assert got[0]["headers"] == [("Content-Type", "text/plain"), ("Content-Length", "5")]
    assert all(None not in r["_times"] and r["_times"][0] <= r["_times"][1] <= r["_times"][2] for r in got)
    assert (seen, conns) == (3, 1)  # kept alive


def test_chunked_with_extension_and_trailer() -> None:
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    got, _, conns = both(always(resp[:30], resp[30:]), jobs(2))
    assert got[0]["body"] == b"hello!" and got[0]["body_len"] == 6 and ("X-T", "1") in got[0]["headers"]
    assert conns == 1


def test_close_delimited_answers_never_take_the_next_request_down() -> None:
    got, seen, conns = both(always(b"HTTP/1.1 200 OK\r\n\r\nhello", close=True), jobs(4))
    assert [(r["status"], r["body"], r["error"]) for r in got] == [(200, b"hello", None)] * 4
    assert seen == conns == 4


def test_interim_then_final() -> None:
    got, _, _ = both(always(b"HTTP/1.1 100 Continue\r\n\r\n", OK), jobs(1))
    assert got[0]["interim"] == [100] and got[0]["status"] == 200


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses(status: bytes) -> None:
    got, _, conns = both(always(b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"), jobs(2))
    assert [r["body"] for r in got] == [b"", b""] and conns == 1


def test_head_answered_with_a_body_does_not_spoil_the_next() -> None:
    got, seen, conns = both(always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), jobs(3, method="HEAD"))
    assert [(r["status"], r["body"], r["error"]) for r in got] == [(200, b"", None)] * 3
    assert seen == 3 and conns == 3  # the leftover "ok" makes each connection untrustworthy


@pytest.mark.parametrize("head,reused", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
])
def test_connection_reuse(head: bytes, reused: bool) -> None:
    got, seen, conns = both(always(head, close=not reused), jobs(3))
    assert [r["error"] for r in got] == [None] * 3
    assert conns == (1 if reused else 3)


def test_request_asking_close_gets_a_new_connection() -> None:
    got, seen, conns = both(always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True),
                            jobs(4, close=True))
    assert [r["error"] for r in got] == [None] * 4 and seen == conns == 4


@pytest.mark.parametrize("answer,kind", [
    ([b"NOT HTTP\r\n\r\n"], "protocol"),
    ([], "reset"),  # closed before any answer
    ([OK[:-2]], "reset"),  # closed mid-body
])
def test_broken_answers(answer: list[bytes], kind: str) -> None:
    got, _, _ = both(always(*answer, close=True), jobs(2))
    assert [(r["error"], r["status"]) for r in got] == [(kind, None)] * 2


@pytest.mark.parametrize("length", [b"x", b"+5", b"5, 6", b"-1"])
def test_a_length_that_is_not_one_frames_to_the_close(length: bytes) -> None:
    got, _, conns = both(always(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\nbody", close=True), jobs(2))
    assert [(r["status"], r["body"], r["error"]) for r in got] == [(200, b"body", None)] * 2 and conns == 2


def test_too_large_keeps_head_and_cut_body() -> None:
    got, _, _ = both(always(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"), jobs(1), max_body=4)
    r = got[0]
    assert (r["status"], r["error"], r["body"], r["body_len"]) == (200, "too_large", b"0123", 10)


def test_discard_keeps_status_and_size_only() -> None:
    got, _, _ = both(always(OK), jobs(1), discard=True)
    assert (got[0]["status"], got[0]["body_len"], got[0]["headers"], got[0]["body"]) == (200, 5, None, None)


def test_latin1_header_values_become_text() -> None:
    got, _, _ = both(always(b"HTTP/1.1 200 Caf\xe9\r\nX-Name: na\xefve\r\n folded\r\nContent-Length: 0\r\n\r\n"), jobs(1))
    assert got[0]["reason"] == "Café" and got[0]["headers"] == [("X-Name", "naïve folded"), ("Content-Length", "0")]


def test_requests_waiting_for_a_connection_get_their_whole_timeout() -> None:
    def never(head: bytes) -> tuple[list[bytes], bool]:
        time.sleep(3)
        return [], True
    with Scripted(never) as srv:
        got = via_native(srv.port, jobs(3), concurrency=1, timeout=0.3)
        assert srv.requests == 3
    assert [r["error"] for r in got] == ["timeout"] * 3
    assert all(0.25 <= r["_times"][2] - r["_times"][0] <= 0.6 for r in got)


def test_nothing_listening_is_refused_fast() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listening: a refusal
    t = time.monotonic()
    got = via_native(port, jobs(5), concurrency=2)
    assert [r["error"] for r in got] == ["refused"] * 5
    assert time.monotonic() - t < 2


def test_every_id_is_journaled_before_it_is_sent(tmp_path: Path) -> None:
    journal = tmp_path / "_sent.log"
    seen_before: list[bool] = []

    def check(head: bytes) -> tuple[list[bytes], bool]:
        # the server got the request: its id (the path) must already be in the journal
        ident = head.split(b" ")[1].decode().lstrip("/")
        seen_before.append(ident in journal.read_text().split())
        return [OK], False
    js = [Job(f"j-{i}", "GET", f"/j-{i}", 0.0, f"GET /j-{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode(), "h",
              "1.1.1.1:80") for i in range(50)]
    with Scripted(check) as srv:
        got = via_native(srv.port, js, concurrency=4, journal=journal)
    assert len(got) == 50 and all(seen_before) and len(seen_before) == 50
    assert sorted(journal.read_text().split()) == sorted(f"j-{i}" for i in range(50))
