"""HTTP/1.x message parsing for one direction of a connection (sans-I/O).

Bytes (and gaps) in, `Message` objects out through two callbacks: `on_head` when a start line
and headers are complete (a response asks its owner which request it answers, because HEAD and
CONNECT change how its body is framed) and `on_end` when the message is complete. A parser
never gives up on a connection: after garbage or lost bytes it scans for the next message
start, and counts what it skipped, because one bad message should not cost the rest.
"""
from __future__ import annotations

import re
from typing import Callable

from .message import Message

# Parser states
IDLE, HEAD, BODY_LEN, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, BODY_CLOSE, RESYNC, DEAD = range(10)

MAX_HEAD = 64 * 1024
DEFAULT_MAX_BODY = 64 * 1024 * 1024

_REQ_LINE_RE = re.compile(
    rb"(?:^|\n)[A-Z][A-Z0-9_-]{0,31} [!-~]+ HTTP/[0-9]\.[0-9]\r?\n"
)
_RESP_LINE_RE = re.compile(rb"(?:^|\n)HTTP/[0-9]\.[0-9] [0-9]{3}[ \r\n]")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _is_status(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isdigit()  # not "²00": isdigit() says yes


_BAD_LINE = re.compile(r"\n(?![ \t])[^:\n]*\n")  # a header line with no colon
_CONTENT_LENGTH = re.compile(r"\ncontent-length:[ \t]*([^\r\n]*?)[ \t]*(?=\r?\n)")
_TRANSFER_ENCODING = re.compile(r"\ntransfer-encoding:[ \t]*([^\r\n]*?)[ \t]*(?=\r?\n)")
NO_BODY_STATUS = frozenset((204, 304))


class Parser:
    """Parses one direction. `is_request` says which side of the conversation it reads."""

    def __init__(
        self,
        is_request: bool,
        on_head: Callable[[Message], str | None],
        on_end: Callable[[Message], None],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.is_request = is_request
        self.on_head = on_head
        self.on_end = on_end
        self.max_body = max_body
        self.state = IDLE
        self.buf = b""
        self.msg: Message | None = None
        self.remaining = 0
        self.offset = 0  # stream offset of the first byte not yet consumed
        self.skipped = 0  # bytes passed over while resynchronising
        self.errors: dict[str, int] = {}
        self.pending_flags: set[str] = set()  # flags for the next message (e.g. after a gap)
        self.headless_ts: float | None = None  # an HTTP/0.9 answer may come (see expect_headless)
        self.dropped: tuple[str, float, int] | None = None  # last unparseable start, unreported
        self._ts = 0.0
        self._ack = -1

    # -- input ---------------------------------------------------------------------------
    def feed(self, data: bytes, ts: float, ack: int = -1) -> None:
        self._ts = ts
        self._ack = ack
        if self.state == DEAD:
            self.offset += len(data)
            return
        if self.buf:  # self.offset already points at the kept bytes
            if self.state == RESYNC and (_REQ_LINE_RE if self.is_request else _RESP_LINE_RE).match(data):
                # Messages tend to start at a segment boundary: drop the junk before it.
                self.skipped += len(self.buf)
                self.offset += len(self.buf)
            else:
                data = self.buf + data
            self.buf = b""
        pos = 0
        n = len(data)
        while pos < n:
            st = self.state
            if st == BODY_LEN:
                take = self.remaining if self.remaining < n - pos else n - pos
                self._body(data[pos : pos + take] if pos or take != n else data)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self._finish()
            elif st == IDLE or st == HEAD:
                pos = self._head(data, pos)
                if pos < 0:
                    return
            elif st == CHUNK_DATA:
                take = self.remaining if self.remaining < n - pos else n - pos
                self._body(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = CHUNK_CRLF
            elif st == CHUNK_SIZE or st == CHUNK_CRLF or st == TRAILER:
                pos = self._chunk_line(data, pos)
                if pos < 0:
                    return
            elif st == BODY_CLOSE:
                self._body(data[pos:] if pos else data)
                pos = n
            elif st == RESYNC:
                pos = self._resync(data, pos)
                if pos < 0:
                    return
            else:  # DEAD
                self.offset += n
                return
        self.offset += n

    def _keep(self, data: bytes, pos: int) -> int:
        """Keep data[pos:] for the next feed. `offset` stays the stream offset of buf[0]."""
        self.buf = data[pos:]
        self.offset += pos
        return -1

    def gap(self, nbytes: int, ts: float, cause: str = "gap") -> bool:
        """`nbytes` of this direction were never captured. Returns whether message boundaries
        were lost with them (pairing by order can no longer be trusted then)."""
        self._ts = ts
        st = self.state
        msg = self.msg
        self.offset += len(self.buf) + nbytes
        if st == DEAD:
            return False
        if msg is not None and (st == BODY_LEN or st == CHUNK_DATA) and nbytes <= self.remaining and not self.buf:
            # The hole is inside a body of known length: the framing survives it.
            msg.flags.add(cause)
            msg.body_len += nbytes
            self.remaining -= nbytes
            if not self.remaining:
                if st == BODY_LEN:
                    self._finish()
                else:
                    self.state = CHUNK_CRLF
            return False
        if msg is not None and st == BODY_CLOSE:
            msg.flags.add(cause)
            msg.body_len += nbytes
            return False
        if msg is not None:
            if st == HEAD and msg.head_end < 0:
                self._salvage_start_line(msg, self.buf, "head cut by a gap")
            msg.flags.add(cause)
            msg.flags.add("incomplete")
            self.skipped += len(self.buf)
            self.buf = b""
            self._finish()
        else:
            self.skipped += len(self.buf)
            self.buf = b""
        self.pending_flags.add("after_gap")
        self.state = RESYNC
        return True

    def _salvage_start_line(self, msg: Message, partial: bytes, why: str) -> None:
        """A head cut short: keep its start line if that much arrived, and pair it either way
        (with `error` saying why), so the exchange still has both sides."""
        nl = partial.find(b"\n")
        parts = partial[:nl].rstrip(b"\r").decode("latin-1").split(" ", 2) if nl >= 0 else []
        if len(parts) >= 2 and self.is_request:
            msg.method, msg.target = parts[0], parts[1]
            msg.version = parts[2] if len(parts) > 2 else None
        elif len(parts) >= 2 and _is_status(parts[1]):
            msg.version, msg.status = parts[0], int(parts[1])
            msg.reason = parts[2] if len(parts) > 2 else ""
        else:
            msg.error = why
        self.on_head(msg)

    def eof(self, ts: float) -> None:
        """The direction ended (FIN, RST or end of capture)."""
        self._ts = ts
        msg = self.msg
        if self.state == BODY_CLOSE and msg is not None:
            self._finish()
        elif msg is not None:
            if self.state == HEAD and msg.head_end < 0:
                self._salvage_start_line(msg, self.buf, "head cut by the end of the stream")
            msg.flags.add("incomplete")
            self._finish()
        elif self.buf and self.state in (IDLE, HEAD) and self.buf.strip(b"\r\n"):
            self._error("head not terminated at end of stream", None)
        self.buf = b""
        self.state = DEAD

    def kill(self) -> None:
        """Stop parsing this direction for good (after an upgrade, CONNECT, or non-HTTP)."""
        self.state = DEAD
        self.buf = b""

    def resync(self) -> None:
        """Start by searching for a message start (capture began mid-connection)."""
        self.state = RESYNC

    def expect_headless(self, ts: float) -> None:
        """The request was HTTP/0.9, so the answer may be a bare body that runs until close.

        Decided when the answer's first bytes come: many servers answer a versionless request
        with an ordinary status line (often a 400), which is parsed as usual.
        """
        if self.state in (IDLE, RESYNC) and not self.buf:
            self.state = IDLE
            self.headless_ts = ts

    def _start_headless(self) -> None:
        msg = self.msg = Message(self.is_request, self.headless_ts or self._ts, -1)
        self.headless_ts = None
        msg.version = "HTTP/0.9"
        msg.head_end = self.offset
        self.on_head(msg)
        self.state = BODY_CLOSE

    # -- heads ---------------------------------------------------------------------------
    def _head(self, data: bytes, pos: int) -> int:
        n = len(data)
        if self.headless_ts is not None:
            if len(data) - pos < 5 and b"HTTP/".startswith(data[pos:]):
                return self._keep(data, pos)
            if data[pos : pos + 5] != b"HTTP/":
                self._start_headless()
                return pos
            self.headless_ts = None
        if self.state == IDLE:
            c = data[pos]
            if c == 13 or c == 10:
                while pos < n and data[pos] in (13, 10):  # CRLFs between messages are allowed
                    pos += 1
                if pos == n:
                    return pos
                c = data[pos]
            # A cheap first-byte test: the start line is validated when the head is complete.
            if not (65 <= c <= 90 or 97 <= c <= 122) or not self.is_request and not self._status_prefix(data, pos):
                return self._error_resync("not an HTTP message start", data, pos)
            self.state = HEAD
            msg = self.msg = Message(self.is_request, self._ts, self._ack)
            if self.pending_flags:
                msg.flags |= self.pending_flags
                self.pending_flags = set()
        end = data.find(b"\r\n\r\n", pos)
        if end >= 0:
            body_at = end + 4
            # A bare-LF head may end earlier than the first CRLFCRLF: take the earliest end.
            lf = data.find(b"\n\n", pos, end + 2)
            if lf >= 0 and lf < end:
                end, body_at = lf, lf + 2
            lf = data.find(b"\n\r\n", pos, end)
            if lf >= 0:
                end, body_at = lf, lf + 3
        else:
            end = data.find(b"\n\n", pos)
            if end >= 0:
                body_at = end + 2
            else:
                cut = data.find(b"\n\r\n", pos)
                if cut < 0:
                    if self.is_request and (nl := data.find(b"\n", pos)) >= 0 and b" HTTP/" not in data[pos:nl]:
                        return self._http09(data, pos, nl)
                    if n - pos > MAX_HEAD:
                        return self._error_resync("head larger than 64 KiB", data, pos)
                    return self._keep(data, pos)
                end, body_at = cut, cut + 3
        sol = data.find(b"\n", pos, end + 1)
        if self.is_request and data.find(b" HTTP/", pos, sol if sol >= 0 else end) < 0:
            if sol < 0 or sol + 1 >= end or not data[sol + 1 : end].strip():
                return self._http09(data, pos, sol if sol >= 0 else end)
            return self._error_resync("request line without HTTP version", data, pos)
        head = data[pos:end].decode("latin-1")
        return self._parse_head(head, data, body_at)

    @staticmethod
    def _status_prefix(data: bytes, pos: int) -> bool:
        """Could a status line start here (b"HTTP/", or a prefix of it at the end of data)?"""
        return data.startswith(b"HTTP/", pos) or (len(data) - pos < 5 and b"HTTP/".startswith(data[pos:]))

    def _http09(self, data: bytes, pos: int, nl: int) -> int:
        """`GET /path` with no version: HTTP/0.9, a one-line request with no headers."""
        line = data[pos:nl].rstrip(b"\r").decode("latin-1")
        parts = line.split()
        if len(parts) != 2:
            return self._error_resync("invalid request line", data, pos)
        msg = self.msg
        assert msg is not None
        msg.method, msg.target, msg.version = parts[0], parts[1], "HTTP/0.9"
        msg.head_end = self.offset + nl + 1
        self.on_head(msg)
        self._finish()
        return nl + 1

    def _parse_head(self, head: str, data: bytes, body_at: int) -> int:
        msg = self.msg
        assert msg is not None
        sol = head.find("\n")
        if sol < 0:
            first, sol = head.rstrip("\r"), len(head)
        else:
            first = head[:sol].rstrip("\r")
        if self.is_request:
            parts = first.split(" ")
            if len(parts) != 3:
                if len(parts) < 3:
                    return self._error_resync("invalid request line", data, body_at, delimited=True)
                # spaces inside the target: keep them, as servers often do
                parts = [parts[0], " ".join(parts[1:-1]), parts[-1]]
            msg.method, msg.target, msg.version = parts
            if not msg.version.startswith("HTTP/"):
                return self._error_resync("invalid request line", data, body_at, delimited=True)
        else:
            parts = first.split(" ", 2)
            if len(parts) < 2 or not _is_status(parts[1]):
                return self._error_resync("invalid status line", data, body_at, delimited=True)
            msg.version = parts[0]
            msg.status = int(parts[1])
            msg.reason = parts[2] if len(parts) > 2 else ""
        if self.dropped is not None:
            self.dropped = None  # a good head follows: the earlier junk was not a request
        head += "\n"
        msg.raw_headers = head[sol + 1 :]
        if _BAD_LINE.search(head, sol):
            msg.flags.add("bad_header")
        lh = head.lower()
        cls = _CONTENT_LENGTH.findall(lh, sol) if "content-length" in lh else None
        tes = _TRANSFER_ENCODING.findall(lh, sol) if "transfer-encoding" in lh else None
        clen = cls[0] if cls else None
        te = ", ".join(tes) if tes else None
        if cls and len(set(cls)) > 1:
            msg.flags.add("conflicting_content_length")
        msg.head_end = self.offset + body_at
        msg.t_end = self._ts
        st = msg.status
        if st is not None and 100 <= st < 200 and st != 101 and (te or (clen or "0").strip() != "0"):
            msg.flags.add("interim_with_body")  # framed like a final answer: treated as one
        if te is not None and clen is not None:
            msg.flags.add("te_and_cl")  # both framings: a request-smuggling sign
        method = self.on_head(msg)
        return self._framing(msg, clen, te, method, body_at)

    def _framing(self, msg: Message, clen: str | None, te: str | None, method: str | None, pos: int) -> int:
        if self.is_request and clen is None and te is None:
            self._finish()  # the common GET: no body
            return pos
        st = msg.status
        if not self.is_request:
            if st is not None and 100 <= st < 200 and "interim_with_body" not in msg.flags:
                if st == 101:
                    msg.flags.add("upgrade")
                self._finish()
                if st == 101:
                    self.kill()
                return pos
            if method == "HEAD" or st in NO_BODY_STATUS:
                self._finish()
                return pos
            if method == "CONNECT" and st is not None and 200 <= st < 300:
                msg.flags.add("upgrade")
                self._finish()
                self.kill()
                return pos
        if te is not None and te.lower().replace(" ", "").split(",")[-1] == "chunked":
            self.state = CHUNK_SIZE
            return pos
        if clen is not None:
            try:
                if not (clen.isascii() and clen.isdigit()):
                    values = {v.strip() for v in clen.split(",")}  # "42, 42" is allowed
                    if len(values) != 1 or not all(v.isascii() and v.isdigit() for v in values):
                        raise ValueError  # "+5", "1_000", "-1": servers reject these
                    clen = values.pop()
                length = int(clen)
            except ValueError:
                msg.flags.add("bad_content_length")
                length = -1
            if length == 0:
                self._finish()
                return pos
            if length > 0:
                self.state = BODY_LEN
                self.remaining = length
                return pos
        if self.is_request:
            self._finish()  # a request without framing headers has no body
            return pos
        self.state = BODY_CLOSE  # the body runs until the connection closes
        return pos

    # -- chunked -------------------------------------------------------------------------
    def _chunk_line(self, data: bytes, pos: int) -> int:
        nl = data.find(b"\n", pos)
        if nl < 0:
            if len(data) - pos > 4096:
                return self._error_resync("chunk size line too long", data, pos)
            return self._keep(data, pos)
        line = data[pos:nl].rstrip(b"\r")
        st = self.state
        msg = self.msg
        assert msg is not None
        if st == CHUNK_CRLF:
            if line:
                msg.flags.add("bad_chunk")
                return self._error_resync("chunk data not followed by CRLF", data, pos)
            self.state = CHUNK_SIZE
            return nl + 1
        if st == TRAILER:
            if not line:
                self._finish()
            else:
                k, _, v = line.decode("latin-1").partition(":")
                msg.headers.append((k, v.strip()))
                msg.flags.add("trailers")
            return nl + 1
        size = line.split(b";", 1)[0].strip()
        if not size or not all(c in _HEX for c in size):
            msg.flags.add("bad_chunk")
            return self._error_resync("invalid chunk size", data, pos)
        n = int(size, 16)
        if n == 0:
            self.state = TRAILER
        else:
            self.state = CHUNK_DATA
            self.remaining = n
        return nl + 1

    # -- bodies and endings --------------------------------------------------------------
    def _body(self, chunk: bytes) -> None:
        msg = self.msg
        assert msg is not None
        n = len(chunk)
        msg.body_len += n
        room = self.max_body - msg.stored
        if room >= n:
            msg.body.append(chunk)
            msg.stored += n
        else:
            if room > 0:
                msg.body.append(chunk[:room])
                msg.stored += room
            msg.flags.add("body_truncated")
        msg.t_end = self._ts

    def _finish(self) -> None:
        msg = self.msg
        assert msg is not None
        msg.t_end = self._ts
        msg.done = True
        self.msg = None
        if self.state != DEAD:
            self.state = IDLE
        self.on_end(msg)

    def _error(self, reason: str, msg: Message | None) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if msg is not None:
            msg.error = reason
            msg.flags.add("parse_error")
            msg.flags.add("incomplete")
            self._finish()

    def _error_resync(self, reason: str, data: bytes, pos: int, delimited: bool = False) -> int:
        """Count or report the bad message, then look for the next message start: right at
        `pos` when the bad head was delimited (the next message may begin there), else one
        byte on."""
        msg = self.msg
        if msg is None or msg.head_end < 0 and (msg.method or msg.status) is None:
            # Nothing usable was parsed: count it; the owner reports it if it is answered.
            self.msg = None
            self.errors[reason] = self.errors.get(reason, 0) + 1
            if self.state in (IDLE, HEAD):
                self.dropped = (reason, msg.t_start if msg else self._ts, msg.ack if msg else self._ack)
        else:
            self._error(reason, msg)
        self.state = RESYNC
        return self._resync(data, pos if delimited or pos >= len(data) else pos + 1)

    def _resync(self, data: bytes, pos: int) -> int:
        rx = _REQ_LINE_RE if self.is_request else _RESP_LINE_RE
        # The pattern's `\n` alternative needs the newline before `pos` to be in view.
        m = rx.search(data, pos - 1 if pos and data[pos - 1] == 10 else pos)
        if m is None:
            # Keep the last line (it may be the start of a message cut by the segment end).
            nl = data.rfind(b"\n", pos)
            keep = max(pos, nl if nl >= 0 else pos, len(data) - MAX_HEAD)
            self.skipped += keep - pos
            return self._keep(data, keep)
        start = m.start() + (1 if data[m.start()] == 10 else 0)
        self.skipped += start - pos
        self.state = IDLE
        return start
