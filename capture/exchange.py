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

import json
from json.encoder import encode_basestring_ascii as _qs  # type: ignore[attr-defined]
from typing import Any

from .message import Message


def _q(v: str | None) -> str:
    return "null" if v is None else _qs(v)


def _n(v: float | int | None) -> str:
    return "null" if v is None else repr(v)


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

    def finalize(self) -> None:
        """Merge message flags into the exchange's flags (called once, when it is emitted)."""
        req, resp = self.request, self.response
        if req is not None and resp is not None and not req.flags and not resp.flags and not req.interim:
            return  # the common, clean exchange
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


def json_line(ex: Exchange) -> str:
    """`json.dumps(ex.summary())`, written out by hand: it runs once per exchange and the
    generic encoder costs as much as parsing the exchange did. Tests keep the two equal."""
    req, resp = ex.request, ex.response
    flags = ", ".join(_qs(f) for f in sorted(ex.flags)) if ex.flags else ""
    if req is not None:
        r = (f'"method": {_q(req.method)}, "target": {_q(req.target)}, "version": {_q(req.version)}, ')
        rb = f'"req_body_len": {req.body_len}, '
        rt = f'"t_req_start": {req.t_start!r}, "t_req_end": {req.t_end!r}, '
        interim = json.dumps(req.interim) if req.interim else "[]"
    else:
        v = _q(resp.version) if resp is not None else "null"
        r = f'"method": null, "target": null, "version": {v}, '
        rb = '"req_body_len": null, '
        rt = '"t_req_start": null, "t_req_end": null, '
        interim = "[]"
    if resp is not None:
        s = f'"status": {_n(resp.status)}, "reason": {_q(resp.reason)}, '
        sb = f'"resp_body_len": {resp.body_len}, '
        st = f'"t_resp_start": {resp.t_start!r}, "t_resp_end": {resp.t_end!r}, '
    else:
        s = '"status": null, "reason": null, '
        sb = '"resp_body_len": null, '
        st = '"t_resp_start": null, "t_resp_end": null, '
    return (f'{{"id": "{ex.id}", "conn": "{ex.conn}", "index": {ex.index}, "client": "{ex.client}", '
            f'"server": "{ex.server}", {r}{s}{rb}{sb}{rt}{st}"interim": {interim}, '
            f'"flags": [{flags}], "error": {_q(ex.error())}}}')


def body_bytes(m: Message | None) -> bytes | None:
    if m is None:
        return None
    return m.body[0] if len(m.body) == 1 else b"".join(m.body)
