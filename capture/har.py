"""HAR 1.2 output, streamed entry by entry (browser devtools, k6 and others import it).

A HAR file is one JSON document, so entries are written as they come between a fixed
prologue and epilogue instead of building the whole list in memory.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from .exchange import Exchange, body_bytes
from .message import Message

_TEXTUAL = ("text/", "application/json", "application/xml", "application/javascript",
            "application/x-www-form-urlencoded", "+json", "+xml")


def _iso(ts: float) -> str:
    try:
        dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):  # a corrupt capture's timestamp
        dt = datetime.fromtimestamp(0, tz=timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _query(url: str) -> list[dict[str, str]]:
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. a Host header with an unbalanced "["
        query = url.partition("?")[2].partition("#")[0]
    return [{"name": k, "value": v} for k, v in parse_qsl(query, keep_blank_values=True)]


def _headers(m: Message) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in m.headers]


def _content(m: Message) -> tuple[str, dict[str, Any]]:
    mime = m.header("content-type") or ""
    raw = body_bytes(m) or b""
    textual = any(t in mime for t in _TEXTUAL) and not m.header("content-encoding")
    if textual:
        try:
            return mime, {"text": raw.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return mime, {"text": base64.b64encode(raw).decode("ascii"), "encoding": "base64"} if raw else {}


def _url(req: Message, server: str) -> str:
    target = req.target or "/"
    if "://" in target:
        return target
    if req.method == "CONNECT":
        return "https://" + target
    host = req.header("host") or server
    return f"http://{host}{target}"


def _ms(a: float | None, b: float | None) -> float:
    return round(max(0.0, (b - a) * 1000.0), 3) if a is not None and b is not None else -1


def entry(ex: Exchange) -> dict[str, Any] | None:
    req, resp = ex.request, ex.response
    if req is None:
        return None  # HAR has no place for a response without its request
    url = _url(req, ex.server)
    mime, text = _content(req)
    request: dict[str, Any] = {
        "method": req.method,
        "url": url,
        "httpVersion": req.version,
        "headers": _headers(req),
        "queryString": _query(url),
        "cookies": [],
        "headersSize": -1,
        "bodySize": req.body_len,
    }
    if req.body_len:
        request["postData"] = {"mimeType": mime, "text": text.get("text", "")}
        if "encoding" in text:
            request["postData"]["encoding"] = text["encoding"]  # HAR 1.3 draft; widely read
    if resp is not None:
        rmime, rtext = _content(resp)
        response: dict[str, Any] = {
            "status": resp.status or 0,
            "statusText": resp.reason or "",
            "httpVersion": resp.version,
            "headers": _headers(resp),
            "cookies": [],
            "content": {"size": resp.body_len, "mimeType": rmime, **rtext},
            "redirectURL": resp.header("location") or "",
            "headersSize": -1,
            "bodySize": resp.body_len,
        }
    else:
        response = {"status": 0, "statusText": "", "httpVersion": "", "headers": [], "cookies": [],
                    "content": {"size": 0, "mimeType": ""}, "redirectURL": "", "headersSize": -1,
                    "bodySize": -1}
    send = _ms(req.t_start, req.t_end)
    wait = _ms(req.t_end, resp.t_start) if resp else -1
    receive = _ms(resp.t_start, resp.t_end) if resp else -1
    total = sum(x for x in (send, wait, receive) if x > 0)
    return {
        "startedDateTime": _iso(req.t_start),
        "time": round(total, 3),
        "request": request,
        "response": response,
        "cache": {},
        "timings": {"send": send, "wait": wait, "receive": receive},
        "serverIPAddress": ex.server.rsplit(":", 1)[0].strip("[]"),
        "connection": ex.conn,
        "_id": ex.id,
        "_flags": sorted(ex.flags),
    }


class HarWriter:
    def __init__(self, f: IO[str], version: str) -> None:
        self.f = f
        self.n = 0
        creator = json.dumps({"name": "shadowtap", "version": version})
        f.write('{"log": {"version": "1.2", "creator": ' + creator + ', "pages": [], "entries": [\n')

    def add(self, ex: Exchange) -> None:
        e = entry(ex)
        if e is None:
            return
        self.f.write((",\n" if self.n else "") + json.dumps(e))
        self.n += 1

    def close(self) -> None:
        self.f.write("\n]}}\n")
