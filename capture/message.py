"""An HTTP/1.x message as seen on the wire, and the reading of its header lines.

Kept apart from the parser (http1.py) because every stage uses messages, and only extraction
parses them.
"""
from __future__ import annotations

def parse_header_block(block: str) -> list[tuple[str, str]]:
    """`name: value` lines to pairs, in order; folded lines joined, lines without a colon
    left out (the message was flagged `bad_header` when parsed)."""
    if "\n " not in block and "\n\t" not in block and " \r" not in block and "\t\r" not in block \
            and " \n" not in block and "\t\n" not in block and not block.startswith((" ", "\t")):
        # The common case: plain `name: value` lines. split/partition beat a regex here, and
        # every replayed response goes through this.
        pairs: list[tuple[str, str]] = []
        for line in block.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            k, sep, v = line.partition(":")
            if not sep or "\r" in line:
                if line:
                    break  # not plain after all
                continue
            pairs.append((k, v.lstrip(" \t")))
        else:
            return pairs
    headers: list[tuple[str, str]] = []
    for line in block.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip(" \t"))
            continue
        k, sep, v = line.partition(":")
        if sep:
            headers.append((k, v.strip(" \t")))  # OWS is space and tab only (RFC 9110 §5.6.3)
    return headers


class Message:
    """One HTTP request or response as seen on the wire."""

    __slots__ = ("is_request", "method", "target", "version", "status", "reason", "raw_headers", "_headers",
                 "body", "stored", "body_len", "flags", "t_start", "t_end", "ack", "head_end",
                 "interim", "error", "done")

    def __init__(self, is_request: bool, t_start: float, ack: int) -> None:
        self.is_request = is_request
        self.method: str | None = None
        self.target: str | None = None
        self.version: str | None = None
        self.status: int | None = None
        self.reason: str | None = None
        self.raw_headers = ""  # the header lines as sent; parsed into `headers` on first use
        self._headers: list[tuple[str, str]] | None = None
        self.body: list[bytes] = []
        self.stored = 0  # body bytes kept (at most max_body)
        self.body_len = 0  # body bytes on the wire (de-chunked), kept or not
        self.flags: set[str] = set()
        self.t_start = t_start
        self.t_end = t_start
        self.ack = ack  # the sender's ACK of the other direction when this message began
        self.head_end = -1  # stream offset just past the head
        self.interim: list[int] = []
        self.error: str | None = None
        self.done = False  # the parser has finished with it (complete or not)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Ordered (name, value) pairs. Parsed lazily: extracting to JSON lines never needs
        them, and building them is a third of the cost of a message."""
        h = self._headers
        if h is None:
            h = self._headers = parse_header_block(self.raw_headers)
        return h

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


def is_interim(msg: "Message") -> bool:
    """A 1xx answer that precedes the final one (not 101, and not one framed with a body)."""
    st = msg.status
    return st is not None and 100 <= st < 200 and st != 101 and "interim_with_body" not in msg.flags
