"""Captures that are odd, damaged or hostile: each case once broke the core (a crash, a lost
exchange, a wrong pairing or memory that grew), found by review and fuzzing."""
from __future__ import annotations

import gzip
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

from capture.extract import Extractor
from capture.http1 import Parser
from capture.message import Message
from capture.pcapfile import CaptureDecoder, CaptureError
from tests.capture.craft import Conv, extract, get, ok, pcap_bytes

import pytest


def pairs(exs: list) -> list[tuple]:
    return [(e.request.target if e.request else None,
             b"".join(e.response.body) if e.response else None) for e in exs]


def test_ack_captured_before_the_data_it_acknowledges_is_not_a_gap() -> None:
    c = Conv().handshake()
    c.c(get("/a"))
    resp = ok(b"x" * 1000)
    c.s(resp[:500])
    late = c.s(resp[500:], lost=True)
    c.ack_c()  # a SPAN port often shows the ACK first
    c.pkts.append(late)
    c.c(get("/b")); c.s(ok(b"second")); c.ack_c()
    exs = extract(c.fin().pkts)
    assert pairs(exs) == [("/a", b"x" * 1000), ("/b", b"second")]
    assert not exs[0].flags


def test_pipelined_requests_after_a_gap_inside_a_body_pair_in_order() -> None:
    c = Conv().handshake()
    c.c(get("/big"))
    r = ok(b"x" * 3000)
    c.s(r[:1000]); c.s(r[1000:2000], lost=True); c.s(r[2000:]); c.ack_c()
    c.c(get("/p1") + get("/p2") + get("/p3"))
    c.s(ok(b"one") + ok(b"two") + ok(b"three")); c.ack_c()
    exs = extract(c.fin().pkts)
    assert pairs(exs)[1:] == [("/p1", b"one"), ("/p2", b"two"), ("/p3", b"three")]
    assert exs[0].flags == {"gap"} and not any(e.flags for e in exs[1:])


def test_fin_captured_before_the_last_data_still_ends_the_body() -> None:
    c = Conv().handshake()
    c.c(b"GET /old HTTP/1.0\r\n\r\n")
    data = c.s(b"HTTP/1.0 200 OK\r\n\r\nbody until close", lost=True)
    fin = c.packet(False, flags="FA")
    c.sseq += 1
    c.pkts += [fin, data]
    c.ack_c()
    ex = Extractor()
    out = ex.feed([(t, 1, d, len(d)) for t, d in c.pkts])  # before end of input
    assert pairs(out) == [("/old", b"body until close")]


def test_new_connection_on_a_four_tuple_first_seen_mid_stream() -> None:
    a = Conv(cseq=3_000_000_000, sseq=100_000)
    a.c(get("/old")); a.s(ok(b"old")); a.ack_c()
    b = Conv(cseq=1000, sseq=5000, t0=1010.0).handshake()
    b.c(get("/new1")); b.s(ok(b"new1")); b.ack_c()
    exs = extract(a.pkts + b.fin().pkts)
    assert pairs(exs) == [("/old", b"old"), ("/new1", b"new1")]


def test_a_longer_copy_of_a_waiting_segment_wins() -> None:
    c = Conv().handshake()
    body = bytes(range(65, 91)) * 40
    req = b"POST /up HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    base = c.cseq
    first = c.packet(True, req[:100], seq=base)
    short = c.packet(True, req[100:400], seq=base + 100)
    longer = c.packet(True, req[100:], seq=base + 100)
    c.cseq += len(req)
    c.pkts += [short, longer, first]
    c.s(ok(b"done")); c.ack_c()
    r = extract(c.fin().pkts)[0]
    assert r.request.stored == len(body) and not r.flags


def test_thousands_of_overlapping_segments_do_not_recurse() -> None:
    c = Conv().handshake()
    base = c.cseq
    c.pkts += [c.packet(True, b"a" * 11, seq=base + 1 + 10 * k) for k in range(3000)]
    c.pkts.append(c.packet(True, b"GET /", seq=base))
    extract(c.pkts)  # no RecursionError (and, compiled, no crash)


def test_response_head_cut_by_a_gap_before_its_first_line_end_still_pairs() -> None:
    c = Conv().handshake()
    c.c(get("/a"))
    r = ok(b"x" * 100)
    c.s(r[:12]); c.s(r[12:60], lost=True); c.s(r[60:]); c.ack_c()
    c.c(get("/b")); c.s(ok(b"b")); c.ack_c()
    exs = extract(c.fin().pkts)
    assert [(e.request.target, e.response.error) for e in exs] == [("/a", "head cut by a gap"), ("/b", None)]


class Rec:
    def __init__(self, is_request: bool) -> None:
        self.ends: list[Message] = []
        self.parser = Parser(is_request, lambda m: "GET", self.ends.append)


def test_bare_lf_head_ends_before_a_later_crlfcrlf() -> None:
    r = Rec(False)
    r.parser.feed(b"HTTP/1.0 200 OK\nContent-Length: 12\n\nhello\r\n\r\nxyzHTTP/1.0 204 No Content\r\n\r\n", 1.0)
    assert [(m.status, m.body_len) for m in r.ends] == [(200, 12), (204, 0)]


def test_message_right_after_an_invalid_head_is_kept() -> None:
    r = Rec(False)
    r.parser.feed(b"HTTP/1.1 2000 Weird\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 1.0)
    assert [(m.status, m.body_len) for m in r.ends] == [(200, 2)]


def test_long_request_line_split_while_resynchronising() -> None:
    r = Rec(True)
    r.parser.feed(b"GET /a HTTP/1.1\r\nHo", 1.0)
    r.parser.gap(100, 2.0)
    long_req = b"GET /search?q=" + b"x" * 1000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    r.parser.feed(b"tail of the lost request\r\n\r\n" + long_req[:700], 3.0)
    r.parser.feed(long_req[700:], 4.0)
    assert [m.target[:10] for m in r.ends if m.target] == ["/a", "/search?q="]


@pytest.mark.parametrize("wire", [
    b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",  # "²00": isdigit() but not a number
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
])
def test_odd_status_and_length_do_not_raise(wire: bytes) -> None:
    c = Conv().handshake()
    c.c(get("/")); c.s(wire); c.ack_c()
    exs = extract(c.fin().pkts)
    assert [e.request.target for e in exs if e.request] == ["/"]


def test_versionless_request_with_empty_line() -> None:
    c = Conv().handshake()
    c.c(b"GET /x\n\n"); c.s(b"hello"); c.ack_c()
    exs = extract(c.fin().pkts)
    assert pairs(exs) == [("/x", b"hello")]


@pytest.mark.parametrize("btype,blen", [(6, 12), (1, 12), (2, 16)])
def test_short_pcapng_blocks_are_corruption_not_a_crash(btype: int, blen: int) -> None:
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 0, 20)
    bad = struct.pack("<II", btype, blen) + b"\0" * (blen - 12) + struct.pack("<I", blen)
    with pytest.raises(CaptureError):
        CaptureDecoder().feed(shb + idb + bad)


def test_interleaved_unanswered_requests_are_bounded() -> None:
    c = Conv().handshake()
    for i in range(1500):  # a capture of the client side only
        c.c(get(f"/{i}"))
    ex = Extractor()
    out = ex.feed([(t, 1, d, len(d)) for t, d in c.pkts])
    assert len(out) >= 1500 - 1024  # the oldest went out as no_response without waiting for the end
    assert all("no_response" in e.flags for e in out)


def test_corrupt_gzip_input(tmp_path: Path) -> None:
    """Unreadable from the start: not a capture (exit 2). Corrupt later: what came before is
    kept and the run says so (exit 1). Never a traceback."""
    c = Conv().handshake()
    c.c(get("/")); c.s(ok()); c.ack_c()
    good = gzip.compress(pcap_bytes(c.fin().pkts))
    cases = {2: good[:12] + b"garbage" * 5, 1: good[: len(good) // 2] + b"\xff" * 40}
    for code, data in cases.items():
        bad = tmp_path / f"x{code}.pcap.gz"
        bad.write_bytes(data)
        r = subprocess.run([sys.executable, "-m", "capture.cli", "extract", str(bad)], capture_output=True, timeout=60)
        assert r.returncode == code, r.stderr
        assert b"Traceback" not in r.stderr and b"error: " in r.stderr


def test_existing_output_file_is_made_private(tmp_path: Path) -> None:
    c = Conv().handshake()
    c.c(get("/", extra="Authorization: Bearer t\r\n")); c.s(ok()); c.ack_c()
    cap = tmp_path / "c.pcap"
    cap.write_bytes(pcap_bytes(c.fin().pkts))
    har = tmp_path / "out.har"
    har.write_text("")
    os.chmod(har, 0o644)
    r = subprocess.run([sys.executable, "-m", "capture.cli", "extract", str(cap), "--har", str(har)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(har).st_mode) == 0o600
