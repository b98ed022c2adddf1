"""The native engine's TCP and pairing parts (capture/native/tcp.c, pairing.c) against the
Python core (tcp.py, pairing.py, exchange.json_line) on the same TCP segments.

Segments go to both engines as tuples (layers.decode's Segment), so what is tested here is
reassembly, HTTP parsing, pairing and the JSON lines, not the capture decoding
(test_native.py covers that end to end). Python's lines are rendered as each exchange is handed
on (after each segment): a message the Python changes after its exchange went out (an upgraded
request whose body was still coming gets its end time at the connection's end) would otherwise
make the Python's own output depend on where its input batches end.
"""
from __future__ import annotations

import json
import random
from typing import Any, Iterator

import pytest

import capture.extract as extract_mod
from capture.exchange import json_line
from capture.extract import Extractor
from capture.layers import decode

import capture.pcapfile

# A build with mypyc has the native engine too (setup.py); only SHADOWTAP_PURE=1 has neither.
if capture.pcapfile.__file__.endswith(".py"):
    _native = pytest.importorskip("capture._native", reason="a pure-Python install (SHADOWTAP_PURE=1)")
else:
    from capture import _native  # type: ignore[attr-defined]

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
M32 = 0xFFFFFFFF
Seg = tuple[float, tuple]


def python_run(segs: list[Seg], **kw: Any) -> tuple[list[str], dict[str, Any]]:
    ex = Extractor(**kw)
    lines = []
    for ts, seg in segs:
        ex.reasm.segment(ts, seg)
        lines += [json_line(e) for e in ex._drain()]
    r = ex.reasm
    for conn in list(r._live.values()):  # Reassembler.flush, one connection at a time
        r._finish(conn, conn.last_ts)
        lines += [json_line(e) for e in ex._drain()]
    return lines, ex.counts()


def native_run(segs: list[Seg], **kw: Any) -> tuple[list[str], dict[str, Any]]:
    eng = _native.Engine(
        list(kw.get("ports", ())), list(kw.get("servers", ())),
        kw.get("max_body", 64 << 20), kw.get("idle_timeout", 300.0),
    )
    out = eng.feed_segments([(ts, 1, seg) for ts, seg in segs]) + eng.finish()
    return out.decode("ascii").splitlines(), eng.counts()


def assert_same(segs: list[Seg], **kw: Any) -> int:
    a, ca = python_run(segs, **kw)
    b, cb = native_run(segs, **kw)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"line {i} differs"
    assert len(a) == len(b)
    ca, cb = json.loads(json.dumps(ca)), json.loads(json.dumps(cb))
    for k in ("packets", "packets_by_linktype"):  # segments, not records, went in
        ca.pop(k), cb.pop(k)
    assert ca == cb
    return len(a)


# -- the crafted scenarios of the Python tests ---------------------------------------------

def _scenario_tests() -> Iterator[Any]:
    from tests.capture import test_hostile_input, test_reassembly
    for mod in (test_reassembly, test_hostile_input):
        for name, fn in sorted(vars(mod).items()):
            code = getattr(fn, "__code__", None)
            if name.startswith("test_") and code is not None and code.co_argcount == 0:
                yield pytest.param(fn, id=f"{mod.__name__.rsplit('.', 1)[1]}::{name}")


@pytest.mark.parametrize("scenario", list(_scenario_tests()))
def test_crafted_scenarios_agree(scenario: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each crafted conversation of test_reassembly / test_hostile_input, replayed through both."""
    sessions: list[tuple[dict[str, Any], list[Seg]]] = []

    class Recording(Extractor):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self._segs: list[Seg] = []
            sessions.append((kw, self._segs))

        def feed(self, records: list) -> list:
            for ts, lt, data, orig in records:
                seg = decode(lt, data, orig)
                if type(seg) is not str:
                    self._segs.append((ts, seg))
            return super().feed(records)

    from tests.capture import craft, test_hostile_input, test_reassembly
    for mod in (extract_mod, craft, test_reassembly, test_hostile_input):
        monkeypatch.setattr(mod, "Extractor", Recording)
    scenario()
    monkeypatch.undo()
    for kw, segs in sessions:
        assert_same(segs, **{k: (list(v) if k in ("ports", "servers") else v) for k, v in kw.items()})


# -- randomised conversations ----------------------------------------------------------------

REQS = [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
        b"HEAD /h HTTP/1.1\r\n\r\n",
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n",
        b"GET /\xe9t\xe9 HTTP/1.0\r\n\r\n",
        b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
        b"garbage\r\n\r\n",
        b"GET /09\r\n",
        b"CONNECT h:443 HTTP/1.1\r\n\r\n"]
RESPS = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
         b"HTTP/1.1 204 No Content\r\n\r\n",
         b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
         b"HTTP/1.1 404 Not \xffFound\r\nContent-Length: 3\r\n\r\nnop",
         b"HTTP/1.1 304 Not Modified\r\n\r\n",
         b"HTTP/1.0 200 OK\r\n\r\nuntil close",
         b"HTTP/1.1 101 Switching\r\nUpgrade: ws\r\n\r\n\x81\x00",
         b"\x16\x03\x01\x00\x05hello"]


def _conversation(rng: random.Random, t: float, tup: tuple | None) -> tuple[list[Seg], tuple]:
    """One connection's packets, lost, duplicated (sometimes altered or overlapping), reordered,
    cut by a snap length, ACKing ahead; sequence numbers often near the wrap."""
    reused = tup is not None
    if tup is None:
        v6 = rng.random() < 0.2

        def addr() -> bytes:
            return bytes([0x20, 1] + [rng.randrange(4) for _ in range(14)]) if v6 else bytes([10, 0, 0, rng.randrange(1, 5)])
        tup = (addr(), addr(), rng.randrange(1024, 1100), rng.choice([80, 8080, 3128, rng.randrange(1, 65535)]))
    c, s, cp, sp = tup
    cisn = (M32 - rng.randrange(3000)) if rng.random() < 0.3 else rng.randrange(1 << 32)
    sisn = (M32 - rng.randrange(3000)) if rng.random() < 0.3 else rng.randrange(1 << 32)
    n = rng.randrange(1, 5)
    creq = b"".join(rng.choice(REQS) for _ in range(n))
    cresp = b"".join(rng.choice(RESPS) for _ in range(n))
    # A reused 4-tuple starts with its handshake, in place: without one, the new conversation's
    # unrelated numbers can make tcp.py loop forever (test_offsets_past_4_gib_do_not_hang).
    hs = reused or rng.random() < 0.75
    pkts: list[tuple[bool, int, bytes, int]] = []
    if hs:
        pkts.append((True, -1, b"", SYN))
        if rng.random() < 0.9:
            pkts.append((False, -1, b"", SYN | ACK))

    def split(data: bytes) -> list[tuple[int, bytes]]:
        out, i = [], 0
        while i < len(data):
            k = rng.randrange(1, 40)
            out.append((i, data[i:i + k]))
            i += k
        return out
    cs, ss = split(creq), split(cresp)
    ci = si = 0
    while ci < len(cs) or si < len(ss):
        if si >= len(ss) or (ci < len(cs) and rng.random() < 0.55):
            pkts.append((True, cs[ci][0], cs[ci][1], PSH | ACK))
            ci += 1
        else:
            pkts.append((False, ss[si][0], ss[si][1], PSH | ACK))
            si += 1
    end = rng.random()
    if end < 0.5:
        pkts += [(True, len(creq), b"", FIN | ACK), (False, len(cresp), b"", FIN | ACK)]
    elif end < 0.65:
        pkts.append((rng.random() < 0.5, len(creq), b"", RST))
    elif end < 0.8:
        pkts.append((False, len(cresp), b"", FIN | ACK))
    out = []
    for p in pkts:
        r = rng.random()
        if r < 0.06 and p[2]:
            continue  # lost
        out.append(p)
        if r > 0.93 and p[2]:
            fc, off, data, fl = p
            if rng.random() < 0.4:
                data = bytes(b ^ 1 for b in data)
            if rng.random() < 0.3 and off >= 3:
                data = (creq if fc else cresp)[off - 3:off + len(data)]
                off -= 3
            out.append((fc, off, data, fl))
    for _ in range(rng.randrange(0, 4)):
        if len(out) > 4:
            i = rng.randrange(2 if reused else 0, len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    segs: list[Seg] = []
    cnext = snext = 0
    for fc, off, data, fl in out:
        t += rng.choice([0.0001, 0.001, 0.01, 0.5])
        isn, pisn = (cisn, sisn) if fc else (sisn, cisn)
        seq = isn if off < 0 else (isn + 1 + off) & M32
        if fc:
            cnext = max(cnext, off + len(data))
        else:
            snext = max(snext, off + len(data))
        have = snext if fc else cnext
        if rng.random() < 0.1:
            have += rng.randrange(1, 50)  # acknowledges bytes the capture lost
        ack = 0 if fl == SYN else (pisn + 1 + have) & M32
        if not hs and rng.random() < 0.05:
            fl &= ~ACK
        missing = 0
        if data and rng.random() < 0.03:
            k = rng.randrange(len(data))
            missing, data = len(data) - k, data[:k]
        src, dst, p1, p2 = (c, s, cp, sp) if fc else (s, c, sp, cp)
        segs.append((t, (src, dst, p1, p2, seq, ack, fl, data, missing)))
    return segs, tup


def random_capture(seed: int, nconn: int) -> list[Seg]:
    rng = random.Random(seed)
    streams, t, prev = [], 1000.0, None
    for _ in range(nconn):
        segs, prev = _conversation(rng, t, prev if prev is not None and rng.random() < 0.15 else None)
        streams.append(segs)
        t += rng.choice([0.01, 0.1, 1.0, 10.0])
    return sorted((s for st in streams for s in st), key=lambda x: x[0])


@pytest.mark.parametrize("seed,opts", [
    (1, {}),
    (2, {"idle_timeout": 3.0}),        # idle expiry by capture time, every 0x1000 segments
    (3, {"ports": [80]}),
    (4, {"servers": [(bytes([10, 0, 0, 2]), 80)], "idle_timeout": 0.2}),
    (5, {"max_body": 4}),
])
def test_random_conversations_agree(seed: int, opts: dict[str, Any]) -> None:
    segs = random_capture(seed, 400)
    assert len(segs) > 0x1000
    assert assert_same(segs, **opts) > 100


# -- cases of their own ------------------------------------------------------------------------

C, S = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _c(seq: int, ack: int, fl: int, data: bytes = b"") -> tuple:
    return (C, S, 40000, 80, seq & M32, ack & M32, fl, data, 0)


def _s(seq: int, ack: int, fl: int, data: bytes = b"") -> tuple:
    return (S, C, 80, 40000, seq & M32, ack & M32, fl, data, 0)


@pytest.mark.timeout(30)
def test_offsets_past_4_gib_do_not_hang() -> None:
    """The flush used to loop forever here: a waiting segment was left behind `next` once its
    offset from the base and next's no longer compared (past 4 GiB, here reached through
    acknowledged holes), so _skip_to_buffered made no progress. Both engines now take that
    segment as the retransmission it is."""
    segs = [_c(0, 0, SYN), _s(1000, 1, SYN | ACK), _c(1, 1001, ACK, b"x" * 10)]
    nxt = 11
    for jump in (0x70000000, 0x70000000, 0x1FFFFF00):  # the server acknowledges bytes never seen
        nxt += jump
        segs += [_s(1001, nxt, ACK), _c(nxt, 1001, ACK)]
    segs += [_c(nxt + 100, 1001, ACK, b"y" * 10),  # waits, at offset 0xFFFFFF6E
             _c(nxt, 1001, ACK, b"z" * 400)]       # covers it: next's offset wraps to 0x9A
    lines, counts = native_run([(1.0 + i, s) for i, s in enumerate(segs)])
    assert counts["tcp"]["retransmissions"] == 1 and counts["tcp"]["overlap_conflicts"] == 1
    assert counts["tcp"]["gaps"] == 3
    assert_same([(1.0 + i, s) for i, s in enumerate(segs)])  # the Python engine ends too


def test_a_connection_to_itself() -> None:
    """src == dst and sport == dport: both directions share one key (the later mapping wins)."""
    a = bytes([127, 0, 0, 1])
    seg = lambda seq, fl, data=b"": (a, a, 5000, 5000, seq, 0, fl, data, 0)  # noqa: E731
    segs = [(1.0, seg(10, SYN)), (1.1, seg(11, ACK, b"GET / HTTP/1.1\r\n\r\n")),
            (1.2, seg(29, ACK, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")), (1.3, seg(67, FIN))]
    assert_same(segs)


def test_many_connections_and_reuse() -> None:
    """20k connections open at once (the 4-tuple table grows and deletes), half reused."""
    segs: list[Seg] = []
    t = 1.0
    for rnd in range(2):
        for i in range(20000):
            c = bytes([10, 1, i >> 8, i & 255])
            base = 1000 + rnd * 100000
            segs.append((t, (c, S, 1000 + i % 7, 80, base, 0, SYN, b"", 0)))
            t += 0.0001
        for i in range(20000):
            c = bytes([10, 1, i >> 8, i & 255])
            base = 1000 + rnd * 100000
            segs.append((t, (c, S, 1000 + i % 7, 80, base + 1, 1, ACK | PSH,
                             b"GET /%d HTTP/1.1\r\n\r\n" % i, 0)))
            t += 0.0001
    assert assert_same(segs, idle_timeout=1.0) == 40000


def test_an_upgrade_answered_before_the_request_body_ends_is_final() -> None:
    """The request is handed on with the 101; bytes and the end of the stream after it do not
    change its line. (They did in the Python engine, so its JSON depended on where the input's
    read batches ended; the native engine writes the line at hand-off.)"""
    head = b"POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 100\r\n\r\n"
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    segs = [(1.0, _c(0, 0, SYN)), (1.1, _s(1000, 1, SYN | ACK)),
            (1.2, _c(1, 1001, ACK | PSH, head + b"x" * 10)),
            (1.3, _s(1001, 1 + len(head) + 10, ACK | PSH, answer)),
            (1.4, _c(1 + len(head) + 10, 1001 + len(answer), ACK | PSH, b"y" * 50)),
            (1.5, _c(1 + len(head) + 60, 1001 + len(answer), FIN | ACK))]
    at_handoff, _ = python_run(segs)  # lines rendered as each segment hands them on
    ex = Extractor()
    for ts, seg in segs:  # one batch: rendered after everything was fed
        ex.reasm.segment(ts, seg)
    ex.reasm.flush()
    at_end = [json_line(e) for e in ex._drain()]
    assert at_handoff == at_end
    (line,) = at_end
    assert json.loads(line)["t_req_end"] == 1.2 and json.loads(line)["status"] == 101  # its last byte before the 101
    assert_same(segs)
