"""One TCP connection's HTTP conversation: decide who is the server, pair requests with
responses, and emit exchanges in order (sans-I/O: it implements the reassembler's Sink).

Pairing is in order (HTTP/1.1 answers pipelined requests in order). When a gap costs a
direction its message boundaries, order alone can pair a response with the wrong request, so
the server's ACK number is used as evidence: a response cannot answer a request whose head the
server had not yet received; and after responses were lost, it answers the last request the
server had received (true without pipelining; a gap already flags what it touches).
Any internal failure ends that connection's parsing only, counted, never the whole run.
"""
from __future__ import annotations

import hashlib
import re
import socket
from collections import deque
from dataclasses import dataclass, field

from .exchange import Exchange
from .http1 import _REQ_LINE_RE, _RESP_LINE_RE, DEFAULT_MAX_BODY, Parser
from .message import Message, is_interim
from .tcp import Connection

CLASSIFY_LIMIT = 64 * 1024  # bytes buffered per direction before we call a stream non-HTTP
CLASSIFY_ITEMS = 4096  # segments and gaps buffered before deciding (a headers-only capture)
MAX_PENDING = 1024  # unanswered requests held; older ones go out as no_response (one-sided capture)
_REQ_AT_START = re.compile(rb"[\r\n]*[A-Z][A-Z0-9_-]{0,31} [!-~]+ HTTP/[0-9]\.[0-9]\r?\n")
_REQ_PREFIX = re.compile(rb"[\r\n]*[A-Za-z][A-Za-z0-9_-]{0,31}( |$)")
_RESP_AT_START = re.compile(rb"[\r\n]*HTTP/[0-9]\.[0-9] ")

_ntop_cache: dict[bytes, str] = {}


def format_addr(ip: bytes, port: int) -> str:
    s = _ntop_cache.get(ip)
    if s is None:
        s = socket.inet_ntop(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, ip)
        if len(ip) == 16:
            s = f"[{s}]"
        if len(_ntop_cache) < 65536:
            _ntop_cache[ip] = s
    return f"{s}:{port}"


def non_http_reason(first: bytes) -> str:
    """Why a stream that should start with a request does not: named where we can tell."""
    if first[:1] == b"\x16" and first[1:2] == b"\x03":
        return "tls"
    if first.startswith(b"SSH-"):
        return "ssh"
    if first.startswith(b"PRI * HTTP/2.0"):
        return "http2-prior-knowledge"
    if first[:5].isalpha() and first[:5].isupper():
        return "not-http-text"
    return "binary"


@dataclass
class Context:
    """What all connections of one extraction share: options, output queue, counters."""

    ports: frozenset[int] = frozenset()
    servers: frozenset[tuple[bytes, int]] = frozenset()
    max_body: int = DEFAULT_MAX_BODY
    out: list[Exchange] = field(default_factory=list)
    http_connections: int = 0
    non_http: dict[str, int] = field(default_factory=dict)
    parse_errors: dict[str, int] = field(default_factory=dict)
    skipped_bytes: int = 0


class HttpConnection:
    """The Sink for one TCP connection."""

    def __init__(self, conn: Connection, ctx: Context) -> None:
        self.conn = conn
        self.ctx = ctx
        self.client_dir = self._roles_from_hints(conn, ctx)
        self.midstream = conn.syn_dir is None
        self.pre: list[tuple[int, bytes, float, int, str]] | None = []  # before roles are known
        self.pre_bytes = [0, 0]
        self.firsts = [b"", b""]  # each direction's first bytes, for deciding the roles
        self.parsers: tuple[Parser, Parser] | None = None
        self.pending: deque[Exchange] = deque()  # requests awaiting a response, in order
        self.order: deque[Exchange] = deque()  # exchanges awaiting emission, in index order
        self.req_open: Exchange | None = None
        self.resp_open: Exchange | None = None
        self.index = 0
        # Requests / responses lost their boundaries in a gap: order alone is no longer
        # trusted for pairing then.
        self.req_lossy = False
        self.resp_lossy = False
        self.non_http: str | None = None
        self.conn_id = ""
        self.client = self.server = ""

    @staticmethod
    def _roles_from_hints(conn: Connection, ctx: Context) -> int | None:
        if ctx.servers:
            if (conn.dst, conn.dport) in ctx.servers:
                return 0
            if (conn.src, conn.sport) in ctx.servers:
                return 1
        if ctx.ports:
            if conn.dport in ctx.ports and conn.sport not in ctx.ports:
                return 0
            if conn.sport in ctx.ports and conn.dport not in ctx.ports:
                return 1
        return conn.syn_dir

    # -- Sink --------------------------------------------------------------------------
    def data(self, d: int, payload: bytes, ts: float, ack: int) -> None:
        p = self.parsers
        try:
            if p is not None:
                p[d].feed(payload, ts, ack)
            elif self.pre is not None:
                self.pre.append((d, payload, ts, ack, ""))
                self.pre_bytes[d] += len(payload)
                if len(self.firsts[d]) < CLASSIFY_LIMIT:
                    self.firsts[d] += payload[: CLASSIFY_LIMIT - len(self.firsts[d])]
                self._classify()
        except Exception as e:  # noqa: BLE001 - one connection must never end the run
            self._internal_error(e)

    def gap(self, d: int, nbytes: int, ts: float, cause: str) -> None:
        p = self.parsers
        try:
            if p is not None:
                if p[d].gap(nbytes, ts, cause):
                    self._lost_boundaries(d)
            elif self.pre is not None:
                self.pre.append((d, b"", ts, nbytes, cause))
                self._classify()
        except Exception as e:  # noqa: BLE001
            self._internal_error(e)

    def eof(self, d: int, ts: float) -> None:
        try:
            if self.parsers is not None:
                self.parsers[d].eof(ts)
                self._emit()
        except Exception as e:  # noqa: BLE001
            self._internal_error(e)

    def flag(self, d: int, name: str) -> None:
        """A retransmission disagreed: it belongs to the message in progress in that direction,
        or to the newest one not yet handed on (later than that it is only counted)."""
        p = self.parsers
        if p is None:
            return
        target = p[d].msg
        if target is None and self.order:
            last = self.order[-1]
            target = last.request if d == self.client_dir else last.response
        if target is not None:
            target.flags.add(name)

    def _lost_boundaries(self, d: int) -> None:
        if d == self.client_dir:
            self.req_lossy = True
        else:
            self.resp_lossy = True

    def _internal_error(self, e: Exception) -> None:
        """A bug met an input it did not expect: stop parsing this connection, count it, and
        keep what it produced."""
        reason = f"internal error ({type(e).__name__}: {e})"[:200]
        self.ctx.parse_errors[reason] = self.ctx.parse_errors.get(reason, 0) + 1
        self.pre = None
        if self.parsers is not None:
            for parser in self.parsers:
                parser.kill()
            for ex in self.order:
                for m in (ex.request, ex.response):
                    if m is not None and not m.done:
                        m.error = m.error or reason
                        m.flags.add("parse_error")
        elif self.non_http is None:
            self._set_non_http("internal error")

    def close(self, ts: float) -> None:
        try:
            self._close(ts)
        except Exception as e:  # noqa: BLE001
            self._internal_error(e)
            self._emit(final=True)

    def _close(self, ts: float) -> None:
        if self.parsers is None and self.pre:
            self._classify(final=True)
        elif self.parsers is None and self.non_http is None:
            self._set_non_http("no payload")  # a handshake, or only ACKs: counted all the same
        p = self.parsers
        if p is not None:
            for parser in p:
                parser.eof(ts)
            self.ctx.skipped_bytes += p[0].skipped + p[1].skipped
            for parser in p:
                for k, v in parser.errors.items():
                    self.ctx.parse_errors[k] = self.ctx.parse_errors.get(k, 0) + v
            if not self.index and self.non_http is None:
                self._set_non_http("no HTTP message found")
        self._emit(final=True)
        self.pre = None

    # -- roles and start-up -------------------------------------------------------------
    def _classify(self, final: bool = False) -> None:
        """Decide which side is the client from the first bytes, or call the stream non-HTTP."""
        assert self.pre is not None
        firsts = self.firsts
        full = max(self.pre_bytes) >= CLASSIFY_LIMIT or len(self.pre) >= CLASSIFY_ITEMS
        cd = self.client_dir
        if cd is not None and not self.midstream:
            head = firsts[cd]
            if not head and not final and not full:
                return
            if _REQ_PREFIX.match(head) or not head or _RESP_AT_START.match(firsts[1 - cd]):
                self._start(cd)  # (a server answering with a status line makes it HTTP)
            elif not firsts[1 - cd] and not final and not full:
                return  # odd first bytes: wait for the server's answer before deciding
            else:
                self._set_non_http(non_http_reason(head))
            return
        for d in (0, 1):
            if _REQ_AT_START.match(firsts[d]):
                return self._start(d)
            if _RESP_AT_START.match(firsts[d]):
                return self._start(1 - d)
        for d in (0, 1):  # mid-stream: a message start further in
            if _REQ_LINE_RE.search(firsts[d]):
                return self._start(d)
            if _RESP_LINE_RE.search(firsts[d]):
                return self._start(1 - d)
        if final or full:
            if cd is not None:
                self._start(cd)  # hinted: let the parsers count what they skip
            else:
                self._set_non_http("no HTTP message found")

    def _set_non_http(self, reason: str) -> None:
        self.non_http = reason
        self.ctx.non_http[reason] = self.ctx.non_http.get(reason, 0) + 1
        self.pre = None
        if self.parsers is not None:
            self.ctx.http_connections -= 1  # it was counted as HTTP when parsing started
            for p in self.parsers:
                p.kill()

    def _start(self, client_dir: int) -> None:
        conn = self.conn
        self.client_dir = client_dir
        mb = self.ctx.max_body
        req = Parser(True, self._on_req_head, self._on_req_end, mb)
        resp = Parser(False, self._on_resp_head, self._on_resp_end, mb)
        if self.midstream:
            for p in (req, resp):
                p.resync()
                p.pending_flags.add("midstream")
        self.parsers = (req, resp) if client_dir == 0 else (resp, req)
        if client_dir == 0:
            self.client = format_addr(conn.src, conn.sport)
            self.server = format_addr(conn.dst, conn.dport)
        else:
            self.client = format_addr(conn.dst, conn.dport)
            self.server = format_addr(conn.src, conn.sport)
        key = f"{self.client}>{self.server}@{conn.first_ts:.6f}".encode()
        self.conn_id = hashlib.sha1(key).hexdigest()[:12]
        self.ctx.http_connections += 1
        pre, self.pre = self.pre, None
        self.firsts = [b"", b""]
        for d, payload, ts, ack_or_n, cause in pre or ():
            if cause:
                if self.parsers[d].gap(ack_or_n, ts, cause):
                    self._lost_boundaries(d)
            else:
                self.parsers[d].feed(payload, ts, ack_or_n)

    # -- pairing ------------------------------------------------------------------------
    def _new_exchange(self) -> Exchange:
        ex = Exchange(self.conn_id, self.index, self.client, self.server)
        self.index += 1
        self.order.append(ex)
        return ex

    def _on_req_head(self, msg: Message) -> str | None:
        ex = self._new_exchange()
        ex.request = msg
        self.pending.append(ex)
        if len(self.pending) > MAX_PENDING:
            self.pending.popleft()  # no answer in sight (one-sided capture): let it go out
            self._emit()
        self.req_open = ex
        if msg.version == "HTTP/0.9" and self.parsers is not None:
            self.parsers[1 - (self.client_dir or 0)].expect_headless(msg.t_start)
        return None

    def _on_req_end(self, msg: Message) -> None:
        ex = self.req_open
        if ex is None or ex.request is not msg:  # failed before its head was parsed
            ex = self._new_exchange()
            ex.request = msg
            self.pending.append(ex)
        self.req_open = None
        if ex.response is not None:  # answered before the request was complete
            self._emit()

    def _on_resp_head(self, msg: Message) -> str | None:
        if is_interim(msg):
            st = msg.status
            assert st is not None
            if self.pending:
                req = self.pending[0].request
                if req is not None:
                    req.interim.append(st)
            return None
        ex = self._match(msg)
        if ex is None:
            ex = self._new_exchange()
            ex.request = self._unparsed_request()
        ex.response = msg
        self.resp_open = ex
        return ex.request.method if ex.request is not None else None

    def _req_parser(self) -> Parser:
        assert self.parsers is not None and self.client_dir is not None
        return self.parsers[self.client_dir]

    def _unparsed_request(self) -> Message | None:
        """A response with nothing pending answers the request the parser could not read
        (servers answer those with a 400): report that request, with why, rather than none."""
        rp = self._req_parser()
        if rp.dropped is None:
            return None
        reason, ts, ack = rp.dropped
        rp.dropped = None
        bad = Message(True, ts, ack)
        bad.error = reason
        bad.flags.add("parse_error")
        bad.done = True
        return bad

    def _match(self, msg: Message) -> Exchange | None:
        pending = self.pending
        if not pending:
            return None
        ack = msg.ack
        if (self.req_lossy or self.resp_lossy) and ack >= 0:
            first = pending[0].request
            if first is not None and first.head_end > ack:
                return None  # the server had not received that request: ours was lost
            if self.resp_lossy:
                while len(pending) > 1:
                    nxt = pending[1].request
                    if nxt is None or nxt.head_end < 0 or nxt.head_end > ack:
                        break
                    pending.popleft()  # its response was lost in the gap
            self.req_lossy = self.resp_lossy = False
        return pending.popleft()

    def _on_resp_end(self, msg: Message) -> None:
        if is_interim(msg):
            return
        ex = self.resp_open
        if ex is None or ex.response is not msg:
            ex = self._new_exchange()
            ex.response = msg
        self.resp_open = None
        if "upgrade" in msg.flags and self.parsers is not None:
            for p in self.parsers:
                p.kill()
            if ex.request is not None and not ex.request.done:
                ex.request.done = True
                rp = self._req_parser()
                if rp.msg is ex.request:
                    rp.msg = None  # handed on now: the end of the stream must not change it later
        self._emit()

    def _emit(self, final: bool = False) -> None:
        """Hand finished exchanges on, in index order; at the end (`final`) hand on all."""
        order = self.order
        out = self.ctx.out
        while order:
            ex = order[0]
            if not final and not self._ready(ex):
                return
            order.popleft()
            if final:
                for m in (ex.request, ex.response):
                    if m is not None and not m.done:
                        m.flags.add("incomplete")
            ex.finalize()
            out.append(ex)

    def _ready(self, ex: Exchange) -> bool:
        req, resp = ex.request, ex.response
        if resp is not None:
            return resp.done and (req is None or req.done)
        # No response: ready only if pairing has passed it by (its answer was lost in a gap);
        # otherwise it waits, and blocks later ones, until the connection ends.
        return req is not None and req.done and ex not in self.pending
