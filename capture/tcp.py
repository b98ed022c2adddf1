"""TCP reassembly (sans-I/O): segments in, ordered byte streams out to a per-connection sink.

Each connection has two halves (direction 0 is the source of the first packet seen, 1 the
other). In-order data goes straight to the sink; out-of-order data waits in a small buffer; a
retransmission is dropped after its bytes are compared with what was delivered (a mismatch is
an `overlap_conflict`). Bytes that never arrive become a `gap` the sink is told about, so the
HTTP layer can flag the message and resynchronise instead of abandoning the connection.
A gap is declared when the peer has acknowledged bytes we never saw and the next packet is not
them (an ACK captured just before the data it acknowledges is normal on a SPAN port), when
the out-of-order buffer outgrows its bound, or when the connection ends with holes. Memory per
connection is bounded: the buffer by bytes and segments, the retransmission history by bytes.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import Callable, Protocol

from .layers import ACK, FIN, RST, SYN, Segment

M32 = 0xFFFFFFFF
HALF = 0x80000000
MAX_OOO_BYTES = 4 * 1024 * 1024  # a TCP window's worth; beyond it the hole is a loss
MAX_OOO_SEGMENTS = 4096  # segments whose payload the snap length cut count here, not in bytes
RECENT_BYTES = 64 * 1024  # delivered bytes kept per direction to check retransmissions against
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

    __slots__ = ("base", "next", "isn", "ooo", "heap", "ooo_bytes", "fin", "ended", "recent",
                 "recent_bytes", "acked", "acked_at")

    def __init__(self) -> None:
        self.base: int | None = None  # sequence number of stream offset 0
        self.next: int | None = None  # next in-order sequence number expected
        self.isn: int | None = None
        self.ooo: dict[int, tuple[bytes, float, int, int]] = {}  # seq -> segment waiting
        self.heap: list[tuple[int, int]] = []  # (offset from base, seq): the waiting, in order
        self.ooo_bytes = 0
        self.fin: int | None = None  # sequence number of the FIN, once seen
        self.ended = False
        self.recent: deque[tuple[int, bytes]] = deque()
        self.recent_bytes = 0
        self.acked: int | None = None  # the peer acknowledged up to here, beyond `next`
        self.acked_at = 0  # ... as of this packet count

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
        self._count += 1
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
                # The 4-tuple is in use again: a SYN (or a SYN-ACK, after an early RST) on a
                # closed connection, a SYN with another ISN, or any SYN on a connection the
                # capture joined mid-stream (its own SYN came before the capture began).
                if (conn.closed_at is not None
                        or not flags & ACK and (h.isn is not None and h.isn != seq
                                                or h.isn is None and h.next is not None)):
                    self._finish(conn, ts)
                    self.stats.reused += 1
                    conn, d = self._open(seg, ts), 0
        conn.last_ts = ts
        h = conn.halves[d]
        peer = conn.halves[1 - d]
        ack_rel = -1
        if flags & ACK:
            pn = peer.next
            if pn is not None:
                ahead = (ack - pn) & M32
                if 0 < ahead < HALF and not peer.ended and not (peer.fin is not None and ack == (peer.fin + 1) & M32):
                    if peer.acked is None or ((ack - peer.acked) & M32) < HALF:
                        peer.acked = ack
                        peer.acked_at = self._count
                rel = (ack - peer.base) & M32  # type: ignore[operator]
                ack_rel = rel if rel < HALF else -1  # behind the start: says nothing
        if flags & SYN:
            h.isn = seq
            seq = (seq + 1) & M32
            if h.next is None:
                h.next = h.base = seq
        n = len(payload)
        if n or missing:
            nxt = h.next
            if nxt is None:
                nxt = h.next = h.base = seq
            if seq == nxt and not missing and not h.ooo:
                # The common case, inline: the next bytes, in order, nothing waiting.
                sink = conn.sink
                assert sink is not None
                sink.data(d, payload, ts, ack_rel)
                h.next = (seq + n) & M32
                recent = h.recent
                recent.append((seq, payload))
                h.recent_bytes += n
                while h.recent_bytes > RECENT_BYTES and len(recent) > 1:
                    h.recent_bytes -= len(recent.popleft()[1])
            else:
                self._accept(conn, d, h, seq, payload, missing, ts, ack_rel)
        elif h.next is None and flags & ACK:
            h.next = h.base = seq  # mid-stream: a pure ACK still tells where data starts
        if flags & FIN:
            h.fin = (seq + n + missing) & M32
        if h.fin is not None and not h.ended and h.next == h.fin and not h.ooo:
            self._end_half(conn, d, ts)
        if flags & RST:
            for i in (0, 1):
                self._flush_half(conn, i, ts)
        # An acknowledged hole is only lost once a later packet has not filled it.
        if h.acked is not None and h.acked_at < self._count:
            self._acked_hole(conn, d, h, ts)
        if peer.acked is not None and peer.acked_at < self._count:
            self._acked_hole(conn, 1 - d, peer, ts)
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
            before = len(h.ooo)
            self._skip_to_buffered(conn, d, h, ts)
            if len(h.ooo) >= before:
                self._take_wrapped(conn, d, h)
        if h.fin is not None and h.next is not None:
            hole = (h.fin - h.next) & M32
            if 0 < hole < HALF:
                assert conn.sink is not None
                self._gap(conn.sink, d, hole, ts)
                h.next = h.fin
        self._end_half(conn, d, ts)

    def _take_wrapped(self, conn: Connection, d: int, h: Half) -> None:
        """No progress: the earliest waiting segment (by offset from the base) is behind `next`,
        yet _drain keeps it because its offset compares larger: the offsets wrapped (a stream
        past 4 GiB, or reached through acknowledged holes). Take it as what it is, data before
        `next` (a retransmission, or the part of it that is new), or the flush never ends."""
        s = self._first_waiting(h)
        assert s is not None
        heapq.heappop(h.heap)
        payload, ts, ack_rel, missing = h.ooo.pop(s)
        h.ooo_bytes -= max(len(payload), 1)
        new = self._past_next(conn, d, h, s, payload, missing)
        if new is not None:
            self._in_order(conn, d, h, new[0], new[1], ts, ack_rel)

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

    def _accept(self, conn: Connection, d: int, h: Half, seq: int, payload: bytes, missing: int,
                ts: float, ack_rel: int) -> None:
        """Data at `seq`: deliver what is new and in order, buffer what is ahead, then drain."""
        nxt = h.next
        assert nxt is not None
        diff = (seq - nxt) & M32
        if diff >= HALF:  # starts before `next`: a retransmission, or an overlap reaching past it
            new = self._past_next(conn, d, h, seq, payload, missing)
            if new is None:
                return
            payload, missing = new
            diff = 0
        if diff == 0:
            self._in_order(conn, d, h, payload, missing, ts, ack_rel)
            if h.ooo:
                self._drain(conn, d, h)
            return
        old = h.ooo.get(seq)
        if old is None:
            assert h.base is not None
            heapq.heappush(h.heap, ((seq - h.base) & M32, seq))
        elif len(old[0]) + old[3] >= len(payload) + missing:
            if old[0][: len(payload)] != payload[: len(old[0])]:
                self.stats.overlap_conflicts += 1
                assert conn.sink is not None
                conn.sink.flag(d, "overlap_conflict")
            self.stats.retransmissions += 1
            return
        else:
            h.ooo_bytes -= max(len(old[0]), 1)  # a longer copy of a waiting segment replaces it
        h.ooo[seq] = (payload, ts, ack_rel, missing)
        h.ooo_bytes += max(len(payload), 1)
        if h.ooo_bytes > MAX_OOO_BYTES or len(h.ooo) > MAX_OOO_SEGMENTS:
            self._skip_to_buffered(conn, d, h, ts)

    def _in_order(self, conn: Connection, d: int, h: Half, payload: bytes, missing: int, ts: float,
                  ack_rel: int) -> None:
        nxt = h.next
        assert nxt is not None and conn.sink is not None
        n = len(payload)
        if n:
            conn.sink.data(d, payload, ts, ack_rel)
            h.recent.append((nxt, payload))
            h.recent_bytes += n
            while h.recent_bytes > RECENT_BYTES and len(h.recent) > 1:
                h.recent_bytes -= len(h.recent.popleft()[1])
        if missing:
            self._gap(conn.sink, d, missing, ts, "snaplen")
        h.next = (nxt + n + missing) & M32

    def _first_waiting(self, h: Half) -> int | None:
        """The sequence number of the earliest buffered segment (stale heap entries dropped)."""
        heap = h.heap
        while heap:
            s = heap[0][1]
            if s in h.ooo:
                return s
            heapq.heappop(heap)
        return None

    def _drain(self, conn: Connection, d: int, h: Half) -> None:
        """Deliver buffered segments that are now in order, trimming overlaps (a loop, not
        recursion: a crafted capture can hold thousands of overlapping segments)."""
        assert h.base is not None
        while h.ooo:
            s = self._first_waiting(h)
            if s is None:
                break
            nxt = h.next
            assert nxt is not None
            if ((s - h.base) & M32) > ((nxt - h.base) & M32):
                break  # a hole remains before it
            heapq.heappop(h.heap)
            payload, ts, ack_rel, missing = h.ooo.pop(s)
            h.ooo_bytes -= max(len(payload), 1)
            if s != nxt:
                new = self._past_next(conn, d, h, s, payload, missing)
                if new is None:
                    continue
                payload, missing = new
            self._in_order(conn, d, h, payload, missing, ts, ack_rel)
        if not h.ooo:
            h.heap.clear()
        if h.fin is not None and h.next == h.fin and not h.ooo:
            self._end_half(conn, d, conn.last_ts)

    def _past_next(self, conn: Connection, d: int, h: Half, seq: int, payload: bytes,
                   missing: int) -> tuple[bytes, int] | None:
        """Data starting before `next`: compare the part already delivered, keep the rest
        (None when nothing is new: a plain retransmission)."""
        assert h.next is not None
        behind = (h.next - seq) & M32
        self._check_overlap(conn, d, h, seq, payload[:behind])
        if behind >= len(payload) + missing:
            self.stats.retransmissions += 1
            return None
        if behind <= len(payload):
            return payload[behind:], missing
        return b"", missing - (behind - len(payload))

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
        first = self._first_waiting(h)
        assert nxt is not None and conn.sink is not None
        if first is not None:
            hole = (first - nxt) & M32
            if hole and hole < HALF:
                self._gap(conn.sink, d, hole, ts)
                h.next = first
        self._drain(conn, d, h)

    def _acked_hole(self, conn: Connection, d: int, h: Half, ts: float) -> None:
        """The peer acknowledged bytes of direction `d` that never came: they are lost."""
        ack = h.acked
        h.acked = None
        nxt = h.next
        if ack is None or nxt is None or h.ended or conn.sink is None:
            return
        hole = (ack - nxt) & M32
        if not hole or hole >= HALF:
            return  # filled meanwhile
        first = self._first_waiting(h)
        if first is not None and ((first - nxt) & M32) <= hole:
            self._skip_to_buffered(conn, d, h, ts)
            return
        self._gap(conn.sink, d, hole, ts)
        h.next = ack
        if h.ooo:
            self._drain(conn, d, h)
