"""The exchange record: one request paired with the primary's response, plus what was unclean.

This is the unit every later stage works on (replay re-sends `request`, analyze compares
`response` with the shadow's). Flags name everything that makes an exchange less than a
faithful copy of what the client and server said; an exchange is never dropped for them.

Flags:
  gap                bytes of this message were never captured (packet loss)
  after_gap          the message follows lost bytes; it is intact, but its pairing rests on ACKs
  snaplen            bytes were cut by the capture's snap length
  overlap_conflict   retransmitted bytes disagreed with the bytes first seen (first kept)
  midstream          the capture began inside this connection; this message was found by scanning
  incomplete         the message ended (close, gap, end of capture) before its framing said
  body_truncated     the body was larger than --max-body; the rest was counted, not kept
  no_response        no response was seen for this request
  no_request         a response whose request was not seen
  interim            1xx interim responses preceded the final one (see `interim`)
  upgrade            101 Switching Protocols or a CONNECT tunnel: the rest is not HTTP/1
  parse_error        a message could not be parsed (`error` says why); parsing resumed after it
  interim_with_body  a 1xx answer framed with a body: taken as the final answer
  te_and_cl          both Transfer-Encoding and Content-Length (a request-smuggling sign)
  conflicting_content_length, bad_content_length, bad_chunk, bad_header, trailers
"""
from __future__ import annotations

from typing import Any

from .http1 import Message


class Exchange:
    __slots__ = ("id", "conn", "index", "client", "server", "request", "response", "flags")

    def __init__(self, conn: str, index: int, client: str, server: str) -> None:
        self.id = f"{conn}-{index}"
        self.conn = conn
        self.index = index
        self.client = client
        self.server = server
        self.request: Message | None = None
        self.response: Message | None = None
        self.flags: set[str] = set()

    @property
    def done(self) -> bool:
        req, resp = self.request, self.response
        return (req is None or req.done) and resp is not None and resp.done

    def finalize(self) -> None:
        """Merge message flags into the exchange's flags (called once, when it is emitted)."""
        req, resp = self.request, self.response
        if req is not None:
            self.flags |= req.flags
            if req.interim:
                self.flags.add("interim")
        else:
            self.flags.add("no_request")
        if resp is not None:
            self.flags |= resp.flags
        else:
            self.flags.add("no_response")

    def error(self) -> str | None:
        for m in (self.request, self.response):
            if m is not None and m.error:
                return m.error
        return None

    def summary(self) -> dict[str, Any]:
        """The JSON-lines view: everything but headers and bodies."""
        req, resp = self.request, self.response
        return {
            "id": self.id,
            "conn": self.conn,
            "index": self.index,
            "client": self.client,
            "server": self.server,
            "method": req.method if req else None,
            "target": req.target if req else None,
            "version": req.version if req else (resp.version if resp else None),
            "status": resp.status if resp else None,
            "reason": resp.reason if resp else None,
            "req_body_len": req.body_len if req else None,
            "resp_body_len": resp.body_len if resp else None,
            "t_req_start": req.t_start if req else None,
            "t_req_end": req.t_end if req else None,
            "t_resp_start": resp.t_start if resp else None,
            "t_resp_end": resp.t_end if resp else None,
            "interim": req.interim if req and req.interim else [],
            "flags": sorted(self.flags),
            "error": self.error(),
        }


def body_bytes(m: Message | None) -> bytes | None:
    if m is None:
        return None
    return m.body[0] if len(m.body) == 1 else b"".join(m.body)
