"""The connection's response handling, driven with bytes (the live tests use real servers).

A fake transport stands in for the socket so every framing case, and every way a response
can go wrong, can be fed in pieces."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from replay.client import Conn, Pool, Target
from replay.plan import Job
from replay.results import Result


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True


def run(pieces: list[bytes], method: str = "GET", eof: bool = False, **pool: Any) -> tuple[list[Result], Conn, bool]:
    """Feed `pieces` as the answer; return the results, the connection, and whether the pool
    kept it for another request."""
    async def go() -> tuple[list[Result], Conn, bool]:
        got: list[Result] = []
        p = Pool(asyncio.get_running_loop(), Target.parse("t", "http://127.0.0.1:9"), 2,
                 pool.get("timeout", 5.0), pool.get("max_body", 1 << 20), pool.get("discard", False), got.append)
        c = Conn(p)
        c.connection_made(Transport())  # type: ignore[arg-type]
        p.open = 1
        p.in_flight = 1
        c.assign(Job("x-0", method, "/", 0.0, b"GET / HTTP/1.1\r\n\r\n", "h", "1.1.1.1:80"), None)
        c.send()
        for piece in pieces:
            c.data_received(piece)
        if eof:
            c.connection_lost(None)
        kept = c in p.idle
        p.close()
        return got, c, kept
    return asyncio.run(go())


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("pieces", [[OK], [OK[:10], OK[10:]], [OK[:-2], OK[-2:]], [bytes([b]) for b in OK]])
def test_content_length_whole_or_in_pieces(pieces: list[bytes]) -> None:
    got, c, kept = run(pieces)
    assert len(got) == 1
    r = got[0]
    assert (r.status, r.reason, r.version, r.body, r.body_len, r.error) == (200, "OK", "HTTP/1.1", b"hello", 5, None)
    assert r.headers == [("Content-Type", "text/plain"), ("Content-Length", "5")]
    assert r.t_send is not None and r.t_first_byte is not None and r.t_end is not None
    assert kept  # for the next request


def test_chunked_with_trailer() -> None:
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    got, _, _ = run([resp[:30], resp[30:]])
    assert got[0].body == b"hello!" and got[0].body_len == 6 and ("X-T", "1") in (got[0].headers or [])


def test_close_delimited_body_ends_at_eof() -> None:
    got, c, kept = run([b"HTTP/1.0 200 OK\r\n\r\nuntil", b" close"], eof=True)
    assert got[0].body == b"until close" and got[0].error is None
    assert c.closed and not kept


def test_interim_then_final() -> None:
    got, _, _ = run([b"HTTP/1.1 100 Continue\r\n\r\n", OK])
    assert got[0].interim == [100] and got[0].status == 200


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses(status: bytes) -> None:
    got, _, _ = run([b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"])
    assert got[0].body == b"" and got[0].error is None


def test_head_ignores_content_length() -> None:
    got, c, kept = run([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], method="HEAD")
    assert got[0].status == 200 and got[0].body == b"" and kept


@pytest.mark.parametrize("head,keep", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
])
def test_connection_reuse(head: bytes, keep: bool) -> None:
    got, c, kept = run([head])
    assert got[0].status == 200
    assert kept is keep


def test_garbage_is_a_protocol_error() -> None:
    got, c, _ = run([b"NOT HTTP\r\n\r\n"])
    assert len(got) == 1 and got[0].error == "protocol" and c.closed


def test_closed_before_answer_is_reset() -> None:
    got, _, _ = run([], eof=True)
    assert got[0].error == "reset" and got[0].status is None


def test_closed_mid_body_is_reset() -> None:
    got, _, _ = run([OK[:-2]], eof=True)
    assert len(got) == 1 and got[0].error == "reset"


def test_too_large_keeps_head_and_cut_body() -> None:
    got, _, _ = run([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"], max_body=4)
    r = got[0]
    assert (r.status, r.error, r.body, r.body_len) == (200, "too_large", b"0123", 10)


def test_discard_keeps_status_and_size_only() -> None:
    got, _, _ = run([OK], discard=True)
    assert (got[0].status, got[0].body_len, got[0].headers, got[0].body) == (200, 5, None, None)


def test_timeout_sweep() -> None:
    async def go() -> list[Result]:
        got: list[Result] = []
        p = Pool(asyncio.get_running_loop(), Target.parse("t", "http://127.0.0.1:9"), 1, 0.05, 1000, False, got.append)
        c = Conn(p)
        c.connection_made(Transport())  # type: ignore[arg-type]
        p.open, p.in_flight = 1, 1
        c.assign(Job("x-0", "GET", "/", 0.0, b"GET / HTTP/1.1\r\n\r\n", "h", "1.1.1.1:80"), None)
        c.send()
        await asyncio.sleep(0.2)
        c.data_received(OK)  # too late: not a second result
        p.close()
        return got
    got = asyncio.run(go())
    assert [r.error for r in got] == ["timeout"]


# -- against real sockets: servers on 127.0.0.1 that behave in the ways that broke pools --------

def pool_run(handler: Any, jobs: list[Job], concurrency: int = 1, timeout: float = 2.0) -> tuple[list[Result], int]:
    """Serve `handler(reader, writer)` on 127.0.0.1, send `jobs` through a Pool, and return
    the results and how many requests the server saw."""
    async def go() -> tuple[list[Result], int]:
        seen = [0]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    seen[0] += 1
                    if not await handler(head, writer):
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got: list[Result] = []
        done = asyncio.get_running_loop().create_future()

        def on_result(r: Result) -> None:
            got.append(r)
            if len(got) == len(jobs) and not done.done():
                done.set_result(None)
        p = Pool(asyncio.get_running_loop(), Target.parse("t", f"http://127.0.0.1:{port}"), concurrency,
                 timeout, 1 << 20, False, on_result)
        for j in jobs:
            p.submit(j, None)
        await asyncio.wait_for(done, 30)
        assert p.in_flight == 0 and not p.backlog
        p.close()
        server.close()
        return got, seen[0]
    return asyncio.run(go())


def jobs(n: int, method: str = "GET", close: bool = False) -> list[Job]:
    return [Job(f"j-{i}", method, "/", 0.0, f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n".encode(), "h", "1.1.1.1:80", close)
            for i in range(n)]


def test_close_delimited_answers_never_take_the_next_request_down() -> None:
    async def handler(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n\r\nhello")  # no length: the body ends at close
        await w.drain()
        return False
    got, seen = pool_run(handler, jobs(4))
    assert [(r.status, r.body, r.error) for r in got] == [(200, b"hello", None)] * 4
    assert seen == 4


def test_request_asking_close_gets_a_new_connection() -> None:
    async def handler(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # then closes, silently
        await w.drain()
        return False
    got, seen = pool_run(handler, jobs(4, close=True))
    assert [r.error for r in got] == [None] * 4 and seen == 4


def test_head_answered_with_a_body_does_not_spoil_the_next() -> None:
    async def handler(head: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # a body, even for HEAD
        await w.drain()
        return True
    got, seen = pool_run(handler, jobs(3, method="HEAD"))
    assert [(r.status, r.error) for r in got] == [(200, None)] * 3 and seen == 3


def test_requests_waiting_for_a_connection_get_their_whole_timeout() -> None:
    async def handler(head: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3600)  # never answers
        return False
    got, seen = pool_run(handler, jobs(3), concurrency=1, timeout=0.3)
    assert [r.error for r in got] == ["timeout"] * 3 and seen == 3
    assert all(0.25 <= (r.t_end or 0) - (r.t_send or 0) <= 0.6 for r in got)
