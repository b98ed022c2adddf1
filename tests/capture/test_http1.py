"""The HTTP/1 parser alone: bytes in, messages out."""
from __future__ import annotations

import pytest

from capture.http1 import Parser
from capture.message import Message


class Rec:
    """Collects a parser's callbacks; plays the owner that knows the request method."""

    def __init__(self, method: str | None = None, is_request: bool = True) -> None:
        self.method = method
        self.heads: list[Message] = []
        self.ends: list[Message] = []
        self.parser = Parser(is_request, self.on_head, self.ends.append, max_body=1000)

    def on_head(self, m: Message) -> str | None:
        self.heads.append(m)
        return self.method


def feed_all(r: Rec, data: bytes, step: int | None = None) -> None:
    if step is None:
        r.parser.feed(data, 1.0)
    else:
        for i in range(0, len(data), step):
            r.parser.feed(data[i : i + step], 1.0 + i)


PIPELINE = (
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"\r\nDELETE /d HTTP/1.0\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 2, 7, 64])
def test_pipelined_requests_survive_any_segmentation(step: int | None) -> None:
    r = Rec()
    feed_all(r, PIPELINE, step)
    assert [(m.method, m.target) for m in r.ends] == [
        ("GET", "/a"), ("POST", "/b?q=1"), ("PUT", "/c"), ("DELETE", "/d")]
    assert [m.body_len for m in r.ends] == [0, 5, 19, 0]
    assert b"".join(r.ends[2].body) == b"abc0123456789abcdef"
    assert ("X-Trailer", "t") in r.ends[2].headers and "trailers" in r.ends[2].flags
    assert r.ends[3].version == "HTTP/1.0"
    assert all(not m.flags - {"trailers"} for m in r.ends)
    assert r.parser.offset == len(PIPELINE)


@pytest.mark.parametrize("method,status,has_body", [
    ("HEAD", 200, False), ("GET", 204, False), ("GET", 304, False), ("GET", 200, True)])
def test_response_framing_depends_on_request_and_status(method: str, status: int, has_body: bool) -> None:
    r = Rec(method, is_request=False)
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\n".encode()
    nxt = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    feed_all(r, head + (b"body" if has_body else b"") + nxt)
    assert [m.status for m in r.ends] == [status, 200]
    assert r.ends[0].body_len == (4 if has_body else 0)


def test_interim_then_final_and_close_delimited_body() -> None:
    r = Rec("POST", is_request=False)
    feed_all(r, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: s\r\n\r\nuntil close", 3)
    assert [m.status for m in r.ends] == [100]
    r.parser.eof(9.0)
    assert [m.status for m in r.ends] == [100, 200]
    assert b"".join(r.ends[1].body) == b"until close" and not r.ends[1].flags


def test_gap_inside_known_length_body_keeps_framing() -> None:
    r = Rec()
    r.parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", 1.0)
    r.parser.gap(3, 2.0)
    r.parser.feed(b"789GET /next HTTP/1.1\r\n\r\n", 3.0)
    assert [(m.target, m.body_len) for m in r.ends] == [("/", 10), ("/next", 0)]
    assert r.ends[0].flags == {"gap"} and not r.ends[1].flags


def test_gap_in_head_resynchronises_at_next_request() -> None:
    r = Rec()
    r.parser.feed(b"GET /lost HTTP/1.1\r\nHo", 1.0)
    r.parser.gap(50, 2.0)
    r.parser.feed(b"rest of something\r\n\r\nGET /found HTTP/1.1\r\nHost: y\r\n\r\n", 3.0)
    assert [m.target for m in r.ends] == ["/lost", "/found"]
    assert {"gap", "incomplete"} <= r.ends[0].flags
    assert r.parser.skipped > 0


def test_garbage_is_counted_and_skipped() -> None:
    r = Rec()
    feed_all(r, b"\x00\x01garbage\r\nmore junk\r\nGET /ok HTTP/1.1\r\n\r\n")
    assert [m.target for m in r.ends] == ["/ok"]
    assert r.parser.errors == {"not an HTTP message start": 1}  # counted for the manifest
    assert not r.ends[0].flags  # the request after the junk is clean


def test_invalid_chunk_size_is_flagged() -> None:
    r = Rec()
    feed_all(r, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /n HTTP/1.1\r\n\r\n")
    assert [m.target for m in r.ends] == ["/", "/n"]
    assert {"bad_chunk", "parse_error"} <= r.ends[0].flags


def test_body_over_limit_is_counted_not_kept() -> None:
    r = Rec()
    feed_all(r, b"POST / HTTP/1.1\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000, 500)
    m = r.ends[0]
    assert m.body_len == 3000 and m.stored == 1000 and "body_truncated" in m.flags


def test_folded_header_conflicting_length_and_spaces_in_target() -> None:
    r = Rec()
    feed_all(r, b"GET /a b HTTP/1.1\r\nX-Long: one\r\n two\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx")
    m = r.ends[0]
    assert m.target == "/a b"
    assert ("X-Long", "one two") in m.headers
    assert "conflicting_content_length" in m.flags and m.body_len == 1


def test_http09_request() -> None:
    r = Rec()
    feed_all(r, b"GET /old\r\n")
    assert [(m.method, m.target, m.version) for m in r.ends] == [("GET", "/old", "HTTP/0.9")]


def test_eof_mid_body_is_incomplete() -> None:
    r = Rec("GET", is_request=False)
    r.parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 1.0)
    r.parser.eof(2.0)
    assert r.ends[0].flags == {"incomplete"} and r.ends[0].body_len == 5


def test_upgrade_stops_parsing() -> None:
    r = Rec("GET", is_request=False)
    feed_all(r, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    assert [m.status for m in r.ends] == [101] and "upgrade" in r.ends[0].flags
