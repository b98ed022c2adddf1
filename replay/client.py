"""The sender: a keep-alive connection pool per target, on asyncio, with no retries.

Callback-driven (asyncio.Protocol, not streams): a request costs a write, a parse and a
callback, which is what lets one Python process keep up with nginx. Responses are parsed by
the extraction core's HTTP/1 parser (capture.http1), so a response is framed by the same
rules whether it was captured or received. Every request handed to a pool ends in exactly
one Result: the response, or an error kind (results.ERROR_KINDS).
"""
from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from capture.http1 import IDLE, Parser
from capture.message import Message, is_interim, parse_header_block

from .plan import Job
from .results import Result

# A connection idle longer than this is not reused: servers close idle keep-alive connections
# (gunicorn after 2 s, nginx after 75 s), and a request written into one that the server is
# closing fails with a reset it did not deserve. A new connection costs far less.
IDLE_REUSE = 1.0
SWEEP = 0.05  # s between timeout checks (one timer per pool, not one per request)

# The fast path: a whole response with a Content-Length in one read (most small answers).
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*\r\n", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:", re.IGNORECASE)
_NO_BODY = frozenset((b"204", b"304"))
_CONNECTION = re.compile(rb"\r\nconnection:([^\r\n]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """Where requests are sent: `name` (results/<name>/) and an http(s) URL."""

    name: str
    url: str
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, url: str) -> "Target":
        u = urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"{url}: only http:// and https:// targets are supported")
        if not u.hostname:
            raise ValueError(f"{url}: no host")
        if u.path not in ("", "/") or u.query:
            raise ValueError(f"{url}: a target is a scheme, host and port (the path is the captured one)")
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"{url}: bad port") from None
        return cls(name, url, u.scheme, u.hostname, port)

    def addresses(self) -> set[tuple[str, int]]:
        """Every (ip, port) the target's host resolves to, for the --allow-primary check."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ValueError(f"{self.url}: cannot resolve {self.host}: {e.strerror}") from None
        return {(str(i[4][0]), self.port) for i in infos}


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
        return "refused"  # nothing listening, or no such name: nothing to talk to
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "refused"  # nothing to talk to: as final as a refusal
    if isinstance(exc, ssl.SSLError):
        return "protocol"
    return "reset"


def error_of_loss(exc: BaseException | None) -> str:
    """The kind for a connection lost mid-request: TLS failures are protocol errors."""
    return "protocol" if isinstance(exc, ssl.SSLError) else "reset"


class Conn(asyncio.Protocol):
    """One connection; at most one request in flight (no pipelining: wrk's model too)."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.job: Job | None = None
        self.result: Result | None = None
        self.deadline = 0.0
        self.parser = Parser(False, self._on_head, self._on_end, pool.max_body)
        self.closed = False
        self.keep = True
        self.idle_since = 0.0
        self.connecting: asyncio.Task[object] | None = None
        self._gone = False  # the pool was told this connection is gone (exactly once)
        self._feeding = False  # inside data_received: decide about reuse once the bytes are parsed
        self._ended = False  # a response ended during this feed

    # -- called by the pool --------------------------------------------------------------
    def assign(self, job: Job, due: float | None) -> None:
        """Take `job`; its timeout runs from now (connecting is part of the request's time)."""
        self.job = job
        self.result = Result(job.id, self.pool.target.name, job.host, t_due=due)
        self.deadline = self.pool.loop.time() + self.pool.timeout
        self.keep = not job.close  # the captured client asked for the connection to close
        self.parser.errors.clear()
        self.pool.busy.add(self)

    def send(self) -> None:
        assert self.transport is not None and self.job is not None and self.result is not None
        try:
            self.pool.journal(self.job)  # before a byte leaves: a re-run must not send it again
        except OSError as e:
            self.pool.unsent(self, e)
            return
        self.result.t_send = time.time()
        self.transport.write(self.job.data)

    def connected(self, task: "asyncio.Task[object]") -> None:
        self.connecting = None
        if task.cancelled():
            return  # the request timed out while connecting; already recorded
        exc = task.exception()
        if exc is not None:
            self.closed = True
            self._fail(error_kind(exc), f"connect: {exc}")
            self._report_gone()
            return
        if self.closed:  # timed out just as the connection was made
            if self.transport is not None:
                self.transport.abort()
            return
        self.send()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        r = self.result
        if r is None:  # bytes nobody asked for: the connection cannot be trusted
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return
        if r.t_first_byte is None:
            r.t_first_byte = time.time()
        p = self.parser
        self._feeding = True
        try:
            if not (p.state == IDLE and not p.buf and self._whole(data, r)):
                p.feed(data, 0.0)
        finally:
            self._feeding = False
        if p.errors and self.result is not None:
            self._fail("protocol", "not an HTTP/1 response: " + ", ".join(p.errors))
        if self._ended:
            self._ended = False
            self._after()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # before anything below can hand this connection a new request
        self.keep = False
        if self.result is not None:
            self.parser.eof(0.0)  # a close-delimited body ends here
        if self.result is not None:
            got = "" if self.result.t_first_byte is None else " mid-response"
            self._fail(error_of_loss(exc), f"connection closed by the target{got}" + (f": {exc}" if exc else ""))
        self._report_gone()

    def _report_gone(self) -> None:
        if not self._gone:
            self._gone = True
            self.pool.gone(self)

    def _whole(self, data: bytes, r: Result) -> bool:
        """A complete, plainly framed response in `data`: record it without the general
        parser (a third of the cost of a request). Anything unusual returns False."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or not (data.startswith(b"HTTP/1.1 ") or data.startswith(b"HTTP/1.0 ")):
            return False
        code = data[9:12]
        if not code.isdigit() or code[0] == 49 or code in _NO_BODY or len(data) > 12 and data[12] not in b" \r":
            return False  # 1xx, no-body statuses: the parser knows their rules
        cl = _CONTENT_LENGTH.findall(data, 0, end + 2)
        if len(cl) != 1 or _TRANSFER_ENCODING.search(data, 0, end + 2):
            return False
        body_at = end + 4
        n = int(cl[0])
        if len(data) != body_at + n or n > self.pool.max_body or self.job is None or self.job.method == "HEAD":
            return False
        sol = data.find(b"\r\n")
        r.t_end = time.time()
        r.status = int(code)
        r.reason = data[13:sol].decode("latin-1")
        r.version = "HTTP/1.1" if data[7] == 49 else "HTTP/1.0"
        r.body_len = n
        block = data[sol + 2 : end + 2].decode("latin-1")
        if not self.pool.discard:
            r.headers = parse_header_block(block)
            r.body = data[body_at:]
        if self.keep:
            tokens = b",".join(_CONNECTION.findall(data, 0, end + 2)).lower()
            self.keep = b"close" not in tokens and (r.version == "HTTP/1.1" or b"keep-alive" in tokens)
        self._finish()
        return True

    # -- parser callbacks ----------------------------------------------------------------
    def _on_head(self, msg: Message) -> str | None:
        return self.job.method if self.job is not None else None

    def _on_end(self, msg: Message) -> None:
        r = self.result
        if r is None:
            return
        if is_interim(msg):
            r.interim.append(msg.status or 0)
            return
        if "incomplete" in msg.flags:
            self._fail("reset" if msg.error is None else "protocol",
                       msg.error or "connection closed mid-response")
            return
        r.t_end = time.time()
        r.status, r.reason, r.version = msg.status, msg.reason, msg.version
        r.body_len = msg.body_len
        if not self.pool.discard:
            r.headers = msg.headers
            r.body = msg.body[0] if len(msg.body) == 1 else b"".join(msg.body)
        if msg.error:
            r.error, r.error_detail = "protocol", msg.error
        elif "body_truncated" in msg.flags:
            r.error, r.error_detail = "too_large", f"body of {msg.body_len} bytes over --max-body"
        if self.keep:
            self.keep = _reusable(msg)
        self._finish()

    # -- endings -------------------------------------------------------------------------
    def on_timeout(self) -> None:
        if self.result is not None:
            self._fail("timeout", f"no complete response within {self.pool.timeout:g} s")

    def _fail(self, kind: str, detail: str) -> None:
        r = self.result
        if r is None:
            return
        r.error, r.error_detail = kind, detail
        r.t_end = time.time()
        self.keep = False
        self._finish()

    def _finish(self) -> None:
        r = self.result
        assert r is not None
        self.result = None
        self.job = None
        self.pool.busy.discard(self)
        self.pool.done(r)
        if self._feeding:
            self._ended = True  # data_received decides, once the rest of the bytes are parsed
        else:
            self._after()

    def _after(self) -> None:
        """Reuse the connection, or close it. Not if the target sent more than the answer
        (a HEAD answered with a body, a body longer than its length): the next answer could
        not be told from the leftovers."""
        p = self.parser
        clean = p.state == IDLE and not p.buf and not p.errors
        if self.keep and clean and not self.closed and self.transport is not None:
            self.pool.released(self)
        elif not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()  # connection_lost follows and tells the pool
            else:  # still connecting (a timeout): stop that, the slot is free now
                if self.connecting is not None:
                    self.connecting.cancel()
                self._report_gone()


def _reusable(msg: Message) -> bool:
    """May another request follow on this connection?"""
    if msg.status == 101 or "upgrade" in msg.flags:
        return False
    conn = (msg.header("connection") or "").lower()
    if "close" in conn:
        return False
    if msg.version == "HTTP/1.0" and "keep-alive" not in conn:
        return False
    return msg.version != "HTTP/0.9"


class Pool:
    """At most `concurrency` connections to one target; requests beyond wait in a backlog."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: Target, concurrency: int,
                 timeout: float, max_body: int, discard: bool, on_result: Callable[[Result], None],
                 journal: Callable[[Job], None] | None = None,
                 on_unsent: Callable[[Job, OSError], None] | None = None) -> None:
        self.loop = loop
        self.target = target
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_body = max_body
        self.discard = discard
        self.on_result = on_result
        self.journal: Callable[[Job], None] = journal or (lambda job: None)
        self.on_unsent = on_unsent
        self.idle: list[Conn] = []
        self.open = 0  # connections open or being opened
        self.backlog: deque[tuple[Job, float | None]] = deque()
        self.in_flight = 0
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if target.scheme == "https" else None
        self.on_room: Callable[[], None] | None = None  # the dispatcher's wake-up
        self.busy: set[Conn] = set()  # connections with a request in flight
        self._sweeper = loop.call_later(SWEEP, self._sweep)

    def _sweep(self) -> None:
        """Time out what is overdue: one timer per pool instead of one per request."""
        self._sweeper = self.loop.call_later(SWEEP, self._sweep)  # first: a failure below must not stop timeouts
        now = self.loop.time()
        for c in [c for c in self.busy if c.deadline <= now]:
            c.on_timeout()

    def submit(self, job: Job, due: float | None) -> None:
        self.in_flight += 1
        now = time.monotonic()
        while self.idle:
            c = self.idle.pop()
            if c.closed:
                continue
            if now - c.idle_since > IDLE_REUSE:
                c.close()
                continue
            c.assign(job, due)
            c.send()
            return
        if self.open < self.concurrency:
            self._connect(job, due)
        else:
            self.backlog.append((job, due))

    def submit_batch(self, jobs: list[Job], dues: list[float | None]) -> None:
        for job, due in zip(jobs, dues):
            self.submit(job, due)

    def _connect(self, job: Job, due: float | None) -> None:
        self.open += 1
        conn = Conn(self)
        conn.assign(job, due)
        t = self.target
        kw = {"ssl": self.ssl, "server_hostname": t.host} if self.ssl is not None else {}
        task = self.loop.create_task(self.loop.create_connection(lambda: conn, t.host, t.port, **kw))
        conn.connecting = task
        task.add_done_callback(conn.connected)

    # -- called by connections -----------------------------------------------------------
    def done(self, r: Result) -> None:
        self.in_flight -= 1
        self.on_result(r)
        if self.on_room is not None and len(self.backlog) < self.concurrency:
            self.on_room()

    def unsent(self, conn: Conn, error: OSError) -> None:
        """The journal could not be written, so the request is not sent (and has no result);
        the run stops."""
        job = conn.job
        conn.result = conn.job = None
        self.busy.discard(conn)
        self.in_flight -= 1
        conn.keep = False
        conn._after()
        if self.on_unsent is not None and job is not None:
            self.on_unsent(job, error)

    def released(self, conn: Conn) -> None:
        if self.backlog:
            job, due = self.backlog.popleft()
            conn.assign(job, due)
            conn.send()
        else:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)

    def gone(self, conn: Conn) -> None:
        self.open -= 1
        if self.backlog and self.open < self.concurrency:
            self._connect(*self.backlog.popleft())

    def abandon(self, kind: str, detail: str) -> None:
        """End the run now: requests on the wire get `kind`; waiting ones are not sent."""
        while self.backlog:
            self.backlog.popleft()
            self.in_flight -= 1
        for c in list(self.busy):
            r = c.result
            if r is not None and r.t_send is None:  # still connecting: never sent, never journaled
                c.result = c.job = None
                self.busy.discard(c)
                self.in_flight -= 1
                c.keep = False
                c._after()
            else:
                c._fail(kind, detail)

    def close(self) -> None:
        self._sweeper.cancel()
        for c in self.idle:
            c.close()
        self.idle.clear()
