"""TCP reassembly and request/response pairing, on crafted packets (bytes alone)."""
from __future__ import annotations

import random

from capture.extract import Extractor
from tests.capture.craft import Conv, extract, get, ok


def summary(exs: list) -> list[tuple]:
    return [(e.request.target if e.request else None, e.response.status if e.response else None,
             sorted(e.flags)) for e in exs]


def keepalive(n: int = 3) -> Conv:
    c = Conv().handshake()
    for i in range(n):
        c.c(get(f"/r{i}"))
        c.s(ok(f"body{i}".encode()))
        c.ack_c()
    return c.fin()


def test_clean_keepalive_connection() -> None:
    exs = extract(keepalive().pkts)
    assert summary(exs) == [("/r0", 200, []), ("/r1", 200, []), ("/r2", 200, [])]
    assert [e.index for e in exs] == [0, 1, 2]
    assert exs[0].client == "10.0.0.1:40000" and exs[0].server == "10.0.0.2:80"
    assert exs[0].id == f"{exs[0].conn}-0"
    assert exs[0].request.t_start < exs[0].response.t_start <= exs[0].response.t_end


def test_ids_are_deterministic() -> None:
    pkts = keepalive().pkts
    assert [e.id for e in extract(pkts)] == [e.id for e in extract(pkts)]


def test_reordered_and_duplicated_segments() -> None:
    c = Conv().handshake()
    req = get("/split", extra="X-Pad: " + "p" * 300 + "\r\n")
    a, b, d = req[:100], req[100:200], req[200:]
    pa, pb, pd = c.c(a, lost=True), c.c(b, lost=True), c.c(d, lost=True)
    c.pkts += [pd, pb, pa, pb]  # reordered, with a retransmission
    c.s(ok())
    c.ack_c()
    exs = extract(c.fin().pkts)
    assert summary(exs) == [("/split", 200, [])]
    assert len(exs[0].request.headers) == 2


def test_retransmission_with_different_bytes_is_flagged() -> None:
    c = Conv().handshake()
    p = c.c(get("/a"))
    seq = c.cseq - len(get("/a"))
    c.pkts.append(c.packet(True, get("/b"), seq=seq))  # same length, other bytes
    c.s(ok())
    c.ack_c()
    exs = extract(c.fin().pkts)
    assert summary(exs) == [("/a", 200, ["overlap_conflict"])] or summary(exs)[0][2] == ["overlap_conflict"]
    assert exs[0].request.target == "/a"  # the first copy wins
    assert p


def test_lost_response_segment_inside_body_keeps_framing() -> None:
    c = Conv().handshake()
    c.c(get("/big"))
    body = b"x" * 3000
    resp = ok(body)
    c.s(resp[:1000])
    c.s(resp[1000:2000], lost=True)
    c.s(resp[2000:])
    c.ack_c()
    c.c(get("/next"))
    c.s(ok())
    c.ack_c()
    exs = extract(c.fin().pkts)
    assert summary(exs) == [("/big", 200, ["gap"]), ("/next", 200, [])]
    assert exs[0].response.body_len == 3000


def test_lost_whole_response_pairs_the_rest_correctly() -> None:
    """zeek's 1000-requests-one-dropped-response, in small: the ACK says who answers whom."""
    c = Conv().handshake()
    c.c(get("/0")); c.s(ok(b"zero")); c.ack_c()
    c.c(get("/1")); c.s(ok(b"one"), lost=True); c.ack_c()
    c.c(get("/2")); c.s(ok(b"two")); c.ack_c()
    c.c(get("/3")); c.s(ok(b"three")); c.ack_c()
    exs = extract(c.fin().pkts)
    got = {e.request.target: (b"".join(e.response.body) if e.response else None) for e in exs}
    assert got == {"/0": b"zero", "/1": None, "/2": b"two", "/3": b"three"}
    assert "no_response" in exs[1].flags


def test_lost_request_gives_response_without_request() -> None:
    c = Conv().handshake()
    c.c(get("/0")); c.s(ok(b"zero")); c.ack_c()
    c.c(get("/lost"), lost=True); c.s(ok(b"answer")); c.ack_c()
    c.c(get("/2")); c.s(ok(b"two")); c.ack_c()
    exs = extract(c.fin().pkts)
    pairs = [(e.request.target if e.request else None, b"".join(e.response.body)) for e in exs]
    assert pairs == [("/0", b"zero"), (None, b"answer"), ("/2", b"two")]
    assert "no_request" in exs[1].flags


def test_pipelined_requests_in_one_segment() -> None:
    c = Conv().handshake()
    c.c(b"".join(get(f"/p{i}") for i in range(10)))
    c.s(b"".join(ok(f"{i}".encode()) for i in range(10)))
    c.ack_c()
    exs = extract(c.fin().pkts)
    assert [(e.request.target, b"".join(e.response.body)) for e in exs] == [
        (f"/p{i}", f"{i}".encode()) for i in range(10)]


def test_head_and_100_continue() -> None:
    c = Conv().handshake()
    c.c(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n")
    c.s(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    c.c(b"POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    c.s(b"HTTP/1.1 100 Continue\r\n\r\n")
    c.c(b"data")
    c.s(ok(b"done", status="201 Created"))
    c.ack_c()
    exs = extract(c.fin().pkts)
    assert summary(exs) == [("/h", 200, []), ("/up", 201, ["interim"])]
    assert exs[0].response.body_len == 0 and exs[1].request.interim == [100]
    assert exs[1].request.body_len == 4


def test_midstream_capture_picks_up_at_next_message() -> None:
    c = Conv()  # no handshake in the capture
    c.c(b"ody of an earlier request\r\n")  # tail of something we never saw start
    c.s(b"tail of an earlier response")
    c.c(get("/seen"))
    c.s(ok())
    c.ack_c()
    exs = extract(c.pkts)
    assert [(e.request.target, e.response.status) for e in exs] == [("/seen", 200)]
    assert "midstream" in exs[0].flags


def test_server_side_from_port_hint_when_only_responses_seen() -> None:
    c = Conv(sport=8000)
    c.s(ok(b"a"))
    c.s(ok(b"b"))
    exs = extract(c.pkts, ports=[8000])
    assert [e.response.status for e in exs] == [200, 200]
    assert all("no_request" in e.flags for e in exs)
    assert exs[0].server.endswith(":8000")


def test_tls_is_counted_as_non_http() -> None:
    c = Conv(sport=443).handshake()
    c.c(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64)
    c.s(b"\x16\x03\x03\x00\x5d\x02")
    ex = Extractor()
    out = ex.feed([(t, 1, d, len(d)) for t, d in c.fin().pkts]) + ex.finish()
    assert out == []
    assert ex.counts()["non_http_connections"] == {"tls": 1}


def test_reused_four_tuple_is_a_new_connection() -> None:
    a = keepalive(1)
    b = Conv(cseq=900000, sseq=700000, t0=2000.0).handshake()
    b.c(get("/second")); b.s(ok()); b.ack_c(); b.fin()
    exs = extract(a.pkts + b.pkts)
    assert [e.request.target for e in exs] == ["/r0", "/second"]
    assert exs[0].conn != exs[1].conn


def test_request_without_response_at_end_of_capture() -> None:
    c = Conv().handshake()
    c.c(get("/waiting"))
    exs = extract(c.pkts)
    assert summary(exs) == [("/waiting", None, ["no_response"])]


def test_shuffled_capture_of_many_connections_keeps_every_exchange() -> None:
    """Interleaved connections: each is reassembled on its own, nothing lost or mixed."""
    convs = [Conv(cport=41000 + i, t0=1000.0 + i * 0.0001) for i in range(20)]
    for c in convs:
        c.handshake()
        for j in range(5):
            c.c(get(f"/c{c.cport}/{j}")); c.s(ok(f"{c.cport}-{j}".encode())); c.ack_c()
        c.fin()
    rng = random.Random(7)
    streams = [list(c.pkts) for c in convs]
    pkts = []
    while any(streams):
        s = rng.choice([s for s in streams if s])
        pkts.append(s.pop(0))
    exs = extract(pkts)
    assert len(exs) == 100
    for e in exs:
        port = e.client.rsplit(":", 1)[1]
        assert e.request.target.startswith(f"/c{port}/")
        assert b"".join(e.response.body) == f"{port}-{e.request.target.rsplit('/', 1)[1]}".encode()
        assert not e.flags


def test_idle_connections_expire_by_capture_time() -> None:
    ex = Extractor(idle_timeout=10.0)
    c = Conv(t0=1000.0).handshake()
    c.c(get("/idle"))
    ex.feed([(t, 1, d, len(d)) for t, d in c.pkts])
    later = Conv(cport=50000, t0=5000.0).handshake()
    later.ack_c()
    t, ack = later.pkts[-1]
    pkts = later.pkts + [(t + i * 1e-4, ack) for i in range(5000)]  # enough to trigger a sweep
    out = ex.feed([(t, 1, d, len(d)) for t, d in pkts])
    assert [e.request.target for e in out] == ["/idle"]
    assert ex.reasm.open_connections == 1


def test_ipv6() -> None:
    c = Conv(client="2001:db8::1", server="2001:db8::2", v6=True).handshake()
    c.c(get("/six")); c.s(ok()); c.ack_c()
    exs = extract(c.fin().pkts)
    assert exs[0].client == "[2001:db8::1]:40000" and exs[0].request.target == "/six"
