"""TCP reassembly (sans-I/O): segments in, ordered byte streams out to a per-connection sink.

Each connection has two halves (direction 0 is the source of the first packet seen, 1 the
other). In-order data goes straight to the sink; out-of-order data waits in a small buffer; a
retransmission is dropped after its bytes are compared with what was delivered (a mismatch is
an `overlap_conflict`). Bytes that never arrive become a `gap` the sink is told about, so the
HTTP layer can flag the message and resynchronise instead of abandoning the connection.
A gap is declared when the peer acknowledges bytes we never saw, when the out-of-order buffer
outgrows its bound, or when the connection ends with holes.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

from .layers import ACK, FIN, RST, SYN, Segment

M32 = 0xFFFFFFFF
HALF = 0x80000000
MAX_OOO_BYTES = 4 * 1024 * 1024  # a TCP window's worth; beyond it the hole is a loss
RECENT = 16  # delivered segments kept per direction to check retransmissions against
CLOSED_LINGER = 5.0  # seconds a closed connection stays to absorb late retransmissions


class Sink(Protocol):
    """What a connection's byte streams are delivered to (the HTTP layer implements it)."""

    def data(self, d: int, payload: bytes, ts: float, ack: int) -> None: ...
    def gap(self, d: int, nbytes: int, ts: float, cause: str) -> None: ...
    def eof(self, d: int, ts: float) -> None: ...
    def flag(self, d: int, name: str) -> None: ...
    def close(self, ts: float) -> None: ...


class Half:
    """One direction's sequence state."""

    __slots__ = ("base", "next", "isn", "ooo", "ooo_bytes", "fin", "ended", "recent")

    def __init__(self) -> None:
        self.base: int | None = None  # sequence number of stream offset 0
        self.next: int | None = None  # next in-order sequence number expected
        self.isn: int | None = None
        self.ooo: dict[int, tuple[bytes, float, int, int]] = {}
        self.ooo_bytes = 0
        self.fin: int | None = None  # sequence number of the FIN, once seen
        self.ended = False
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=RECENT)


class Connection:
    """A TCP connection: addresses as first seen, which side opened it, and both halves."""

    __slots__ = ("serial", "src", "sport", "dst", "dport", "first_ts", "last_ts", "syn_dir",
                 "halves", "sink", "closed_at", "keys")

    def __init__(self, serial: int, seg: Segment, ts: float) -> None:
        self.serial = serial
        self.src, self.dst, self.sport, self.dport = seg[0], seg[1], seg[2], seg[3]
        self.first_ts = ts
        self.last_ts = ts
        flags = seg[6]
        # Who opened it: the SYN's sender; a SYN-ACK's sender is the server.
        self.syn_dir: int | None = (0 if not flags & ACK else 1) if flags & SYN else None
        self.halves = (Half(), Half())
        self.sink: Sink | None = None
        self.closed_at: float | None = None
        self.keys = ((seg[0], seg[2], seg[1], seg[3]), (seg[1], seg[3], seg[0], seg[2]))


STATS_FIELDS = ("connections", "reused", "retransmissions", "overlap_conflicts", "gaps",
                "gap_bytes", "ignored_no_connection", "expired")


class Stats:
    __slots__ = STATS_FIELDS

    def __init__(self) -> None:
        self.connections = 0
        self.reused = 0
        self.retransmissions = 0
        self.overlap_conflicts = 0
        self.gaps = 0
        self.gap_bytes = 0
        self.ignored_no_connection = 0
        self.expired = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in STATS_FIELDS}


class Reassembler:
    """Feeds TCP segments into per-connection sinks made by `sink_factory`."""

    def __init__(self, sink_factory: Callable[[Connection], Sink], idle_timeout: float = 300.0) -> None:
        self._factory = sink_factory
        self._conns: dict[tuple[bytes, int, bytes, int], tuple[Connection, int]] = {}
        self._live: dict[int, Connection] = {}
        self._serial = 0
        self._idle = idle_timeout
        self._next_sweep = 0.0
        self._count = 0
        self.stats = Stats()

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def segment(self, ts: float, seg: Segment) -> None:
        src, dst, sport, dport, seq, ack, flags, payload, missing = seg
        ent = self._conns.get((src, sport, dst, dport))
        if ent is None:
            if not (payload or missing or flags & SYN):
                self.stats.ignored_no_connection += 1
                return
            conn, d = self._open(seg, ts), 0
        else:
            conn, d = ent
            if flags & SYN:
                h = conn.halves[d]
                # A SYN (or a SYN-ACK, after an early RST) on a closed connection, or a SYN
                # with another ISN: the 4-tuple is in use again.
                if conn.closed_at is not None or (h.isn is not None and h.isn != seq and not flags & ACK):
                    self._finish(conn, ts)  # the 4-tuple is reused: a new connection
                    self.stats.reused += 1
                    conn, d = self._open(seg, ts), 0
        conn.last_ts = ts
        h = conn.halves[d]
        sink = conn.sink
        assert sink is not None
        if flags & ACK:
            peer = conn.halves[1 - d]
            pn = peer.next
            if pn is not None:
                ahead = (ack - pn) & M32
                if 0 < ahead < HALF and not (peer.fin is not None and ack == (peer.fin + 1) & M32):
                    self._acked_hole(conn, 1 - d, peer, ack, ts)
                ack_rel = (ack - peer.base) & M32  # type: ignore[operator]
            else:
                ack_rel = -1
        else:
            ack_rel = -1
        if flags & SYN:
            h.isn = seq
            seq = (seq + 1) & M32
            if h.next is None:
                h.next = h.base = seq
        n = len(payload)
        if n or missing:
            if h.next is None:
                h.next = h.base = seq
            diff = (seq - h.next) & M32
            if diff == 0:
                if n:
                    sink.data(d, payload, ts, ack_rel)
                    h.recent.append((seq, payload))
                if missing:
                    self._gap(sink, d, missing, ts, "snaplen")
                h.next = (seq + n + missing) & M32
                if h.ooo:
                    self._drain(conn, d, h)
            elif diff < HALF:
                if seq not in h.ooo:
                    h.ooo[seq] = (payload, ts, ack_rel, missing)
                    h.ooo_bytes += n
                    if h.ooo_bytes > MAX_OOO_BYTES:
                        self._skip_to_buffered(conn, d, h, ts)
                else:
                    self.stats.retransmissions += 1
            else:
                self._old(conn, d, h, seq, payload, missing, ts, ack_rel)
        elif h.next is None and flags & ACK:
            h.next = h.base = seq  # mid-stream: a pure ACK still tells where data starts
        if flags & FIN:
            h.fin = (seq + n + missing) & M32
            if h.next == h.fin and not h.ooo:
                self._end_half(conn, d, ts)
        if flags & RST:
            for i in (0, 1):
                self._flush_half(conn, i, ts)
        self._count += 1
        if not self._count & 0xFFF and ts >= self._next_sweep:
            self.expire(ts)

    # -- connection lifecycle ---------------------------------------------------------
    def _open(self, seg: Segment, ts: float) -> Connection:
        self._serial += 1
        conn = Connection(self._serial, seg, ts)
        conn.sink = self._factory(conn)
        self._conns[conn.keys[0]] = (conn, 0)
        self._conns[conn.keys[1]] = (conn, 1)
        self._live[conn.serial] = conn
        self.stats.connections += 1
        return conn

    def _end_half(self, conn: Connection, d: int, ts: float) -> None:
        h = conn.halves[d]
        if h.ended:
            return
        h.ended = True
        assert conn.sink is not None
        conn.sink.eof(d, ts)
        if conn.halves[1 - d].ended and conn.closed_at is None:
            conn.closed_at = ts
            conn.sink.close(ts)

    def _flush_half(self, conn: Connection, d: int, ts: float) -> None:
        """End a direction now: what is still missing is a gap."""
        h = conn.halves[d]
        if h.ended:
            return
        while h.ooo:
            self._skip_to_buffered(conn, d, h, ts)
        if h.fin is not None and h.next is not None:
            hole = (h.fin - h.next) & M32
            if 0 < hole < HALF:
                assert conn.sink is not None
                self._gap(conn.sink, d, hole, ts)
                h.next = h.fin
        self._end_half(conn, d, ts)

    def _finish(self, conn: Connection, ts: float) -> None:
        for d in (0, 1):
            self._flush_half(conn, d, ts)
        for k in conn.keys:
            if self._conns.get(k, (None,))[0] is conn:
                del self._conns[k]
        self._live.pop(conn.serial, None)

    def expire(self, now: float) -> None:
        """Finish connections idle longer than the timeout (by capture time, not wall time)."""
        for conn in list(self._live.values()):
            if conn.closed_at is not None:
                if now - conn.last_ts > CLOSED_LINGER:
                    self._finish(conn, conn.last_ts)
            elif now - conn.last_ts > self._idle:
                self.stats.expired += 1
                self._finish(conn, conn.last_ts)
        self._next_sweep = now + min(self._idle, CLOSED_LINGER)

    def flush(self) -> None:
        """End of input: finish every connection still open."""
        for conn in list(self._live.values()):
            self._finish(conn, conn.last_ts)

    # -- holes, reordering, retransmission ------------------------------------------
    def _gap(self, sink: Sink, d: int, nbytes: int, ts: float, cause: str = "gap") -> None:
        """`cause` is "gap" for bytes lost on the wire, "snaplen" for bytes the capture cut."""
        self.stats.gaps += 1
        self.stats.gap_bytes += nbytes
        sink.gap(d, nbytes, ts, cause)

    def _drain(self, conn: Connection, d: int, h: Half) -> None:
        """Deliver buffered segments that are now in order (trimming overlaps)."""
        sink = conn.sink
        assert sink is not None
        ooo = h.ooo
        while ooo:
            nxt = h.next
            assert nxt is not None
            item = ooo.pop(nxt, None)
            if item is not None:
                payload, ts, ack_rel, missing = item
                h.ooo_bytes -= len(payload)
                if payload:
                    sink.data(d, payload, ts, ack_rel)
                    h.recent.append((nxt, payload))
                if missing:
                    self._gap(sink, d, missing, ts, "snaplen")
                h.next = (nxt + len(payload) + missing) & M32
                continue
            # An entry that starts before `next` but reaches past it: deliver its tail.
            for s in list(ooo):
                rel = (s - nxt) & M32
                if rel >= HALF:
                    payload, ts, ack_rel, missing = ooo.pop(s)
                    h.ooo_bytes -= len(payload)
                    self._old(conn, d, h, s, payload, missing, ts, ack_rel)
                    break
            else:
                break
        if h.fin is not None and h.next == h.fin and not ooo:
            self._end_half(conn, d, conn.last_ts)

    def _old(self, conn: Connection, d: int, h: Half, seq: int, payload: bytes, missing: int,
             ts: float, ack_rel: int) -> None:
        """Data that starts before `next`: a retransmission, or an overlap reaching past it."""
        nxt = h.next
        assert nxt is not None and conn.sink is not None
        behind = (nxt - seq) & M32
        self._check_overlap(conn, d, h, seq, payload[:behind])
        if behind < len(payload):
            tail = payload[behind:]
            conn.sink.data(d, tail, ts, ack_rel)
            h.recent.append((nxt, tail))
            h.next = (nxt + len(tail)) & M32
            if missing:
                self._gap(conn.sink, d, missing, ts, "snaplen")
                h.next = (h.next + missing) & M32
            if h.ooo:
                self._drain(conn, d, h)
        else:
            self.stats.retransmissions += 1

    def _check_overlap(self, conn: Connection, d: int, h: Half, seq: int, data: bytes) -> None:
        for s, old in h.recent:
            off = (seq - s) & M32
            if off < len(old):
                a = old[off : off + len(data)]
                if a != data[: len(a)]:
                    self.stats.overlap_conflicts += 1
                    assert conn.sink is not None
                    conn.sink.flag(d, "overlap_conflict")
                return

    def _skip_to_buffered(self, conn: Connection, d: int, h: Half, ts: float) -> None:
        """Give up on the hole before the earliest buffered segment: it is lost."""
        nxt = h.next
        assert nxt is not None and conn.sink is not None
        first = min(h.ooo, key=lambda s: (s - nxt) & M32)
        hole = (first - nxt) & M32
        if hole and hole < HALF:
            self._gap(conn.sink, d, hole, ts)
            h.next = first
        self._drain(conn, d, h)

    def _acked_hole(self, conn: Connection, d: int, h: Half, ack: int, ts: float) -> None:
        """The peer acknowledged bytes of direction `d` that were never captured."""
        assert h.next is not None and conn.sink is not None
        if h.ended:
            return
        if h.ooo:
            nxt = h.next
            first = min(h.ooo, key=lambda s: (s - nxt) & M32)
            if ((first - nxt) & M32) <= ((ack - nxt) & M32):
                self._skip_to_buffered(conn, d, h, ts)
                return
        hole = (ack - h.next) & M32
        self._gap(conn.sink, d, hole, ts)
        h.next = ack
