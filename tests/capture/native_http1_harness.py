"""Differential harness: capture/native/http1.c against capture/http1.py's Parser.

The C parser has no Python face of its own in `capture._native` (module.c exposes only the
Engine), so this harness drives it through a throwaway extension that wraps http1.c + util.c.
Build the wrapper, then run the harness:

    tests/capture/native_http1_harness.py --build /tmp/h1test     # writes and compiles the wrapper
    PYTHONPATH=/tmp/h1test .venv/bin/python tests/capture/native_http1_harness.py --random 20000
    PYTHONPATH=/tmp/h1test .venv/bin/python tests/capture/native_http1_harness.py --pcaps fixtures/*.pcap

Both parsers sit in a cut-down owner (MiniPair) that behaves toward them as pairing.py does:
a response's on_head answers with the method of the request it pairs with (so HEAD and
CONNECT change framing), an HTTP/0.9 request makes the response parser expect a headless
answer, an upgrade kills both parsers, and a response with nothing pending takes the request
parser's `dropped`. After every operation the harness compares, exactly: every callback so
far (a snapshot of the message at that moment: strings, status, flags, body_len, stored,
t_start, t_end, ack, head_end, done, identity) and each parser's skipped, errors, dropped,
pending_flags, offset, state and message in progress.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class _SourceFirst:
    """Import capture.* from its .py sources, not the mypyc-compiled modules: the source is
    the specification, and the capture harness below wraps pairing's Parser."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
        import importlib.util

        if name.startswith("capture.") and name.count(".") == 1:
            src = ROOT / "capture" / (name.split(".")[1] + ".py")
            if src.exists():
                return importlib.util.spec_from_file_location(name, src)
        return None


def use_sources() -> None:
    """Run the harness on the .py sources (call before anything imports capture.*)."""
    sys.meta_path.insert(0, _SourceFirst)  # type: ignore[arg-type]

# ---- the two implementations behind one face --------------------------------------------


class PyImpl:
    """capture.http1.Parser, reporting snapshot dicts like the wrapper does."""

    def __init__(self, is_request: bool, on_head: Callable, on_end: Callable, max_body: int) -> None:
        from capture.http1 import Parser

        self.ids: dict[int, int] = {}
        self.keep: list[Any] = []
        self.p = Parser(is_request, lambda m: on_head(self.snap(m)), lambda m: on_end(self.snap(m)), max_body)

    def snap(self, m: Any) -> dict[str, Any]:
        i = self.ids.get(id(m))
        if i is None:
            i = self.ids[id(m)] = len(self.ids)
            self.keep.append(m)
        return {"id": i, "is_request": int(m.is_request), "method": m.method, "target": m.target,
                "version": m.version, "status": m.status, "reason": m.reason, "error": m.error,
                "body_len": m.body_len, "stored": m.stored, "flags": sorted(m.flags), "t_start": m.t_start,
                "t_end": m.t_end, "ack": m.ack, "head_end": m.head_end, "interim": list(m.interim),
                "done": m.done}

    def feed(self, data: bytes, ts: float, ack: int) -> None: self.p.feed(data, ts, ack)
    def gap(self, n: int, ts: float, cause: str) -> bool: return self.p.gap(n, ts, cause)
    def eof(self, ts: float) -> None: self.p.eof(ts)
    def kill(self) -> None: self.p.kill()
    def resync(self) -> None: self.p.resync()
    def expect_headless(self, ts: float) -> None: self.p.expect_headless(ts)
    def add_pending(self, name: str) -> None: self.p.pending_flags.add(name)
    def clear_dropped(self) -> None: self.p.dropped = None

    def flag_msg(self, name: str) -> bool:
        if self.p.msg is None:
            return False
        self.p.msg.flags.add(name)
        return True

    def state(self) -> dict[str, Any]:
        p = self.p
        return {"skipped": p.skipped, "errors": dict(p.errors), "dropped": p.dropped,
                "pending_flags": sorted(p.pending_flags), "offset": p.offset, "state": p.state,
                "msg": self.snap(p.msg) if p.msg is not None else None}


class CImpl:
    """http1.c through the throwaway wrapper (h1wrap, see --build)."""

    def __init__(self, is_request: bool, on_head: Callable, on_end: Callable, max_body: int) -> None:
        import h1wrap  # type: ignore[import-not-found]

        self.p = h1wrap.Parser(is_request, on_head, on_end, max_body)

    def feed(self, data: bytes, ts: float, ack: int) -> None: self.p.feed(data, ts, ack)
    def gap(self, n: int, ts: float, cause: str) -> bool: return self.p.gap(n, ts, cause)
    def eof(self, ts: float) -> None: self.p.eof(ts)
    def kill(self) -> None: self.p.kill()
    def resync(self) -> None: self.p.resync()
    def expect_headless(self, ts: float) -> None: self.p.expect_headless(ts)
    def add_pending(self, name: str) -> None: self.p.add_pending(name)
    def clear_dropped(self) -> None: self.p.clear_dropped()
    def flag_msg(self, name: str) -> bool: return self.p.flag_msg(name)

    def state(self) -> dict[str, Any]:
        s = self.p.state()
        s["dropped"] = tuple(s["dropped"]) if s["dropped"] is not None else None
        return s


def _interim(m: dict[str, Any]) -> bool:
    st = m["status"]
    return st is not None and 100 <= st < 200 and st != 101 and "interim_with_body" not in m["flags"]


class MiniPair:
    """Owner of a request parser and a response parser, acting toward them as pairing.py does."""

    def __init__(self, impl: type, max_body: int, overrides: list[str | None] | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.methods: deque[str | None] = deque()
        self.overrides = overrides or []
        self.nresp = 0
        self.req = impl(True, self.on_req_head, self.on_req_end, max_body)
        self.resp = impl(False, self.on_resp_head, self.on_resp_end, max_body)
        self.parsers = (self.req, self.resp)

    def on_req_head(self, m: dict[str, Any]) -> None:
        self.events.append(("req_head", m))
        self.methods.append(m["method"])
        if m["version"] == "HTTP/0.9":
            self.resp.expect_headless(m["t_start"])
        return None

    def on_req_end(self, m: dict[str, Any]) -> None:
        self.events.append(("req_end", m))

    def on_resp_head(self, m: dict[str, Any]) -> str | None:
        self.events.append(("resp_head", m))
        if _interim(m):
            return None
        k = self.nresp
        self.nresp += 1
        if self.methods:
            method = self.methods.popleft()
        else:
            dropped = self.req.state()["dropped"]
            self.events.append(("dropped", dropped))
            if dropped is not None:
                self.req.clear_dropped()
            method = None
        if k < len(self.overrides) and self.overrides[k] is not None:
            method = self.overrides[k]
        return method

    def on_resp_end(self, m: dict[str, Any]) -> None:
        self.events.append(("resp_end", m))
        if not _interim(m) and "upgrade" in m["flags"]:
            for p in self.parsers:
                p.kill()

    def apply(self, op: tuple) -> None:
        kind, d = op[0], op[1]
        p = self.parsers[d]
        if kind == "feed":
            p.feed(op[2], op[3], op[4])
        elif kind == "gap":
            self.events.append(("gap", p.gap(op[2], op[3], op[4])))
        elif kind == "eof":
            p.eof(op[2])
        elif kind == "flag":
            self.events.append(("flag", p.flag_msg(op[2])))
        elif kind == "midstream":
            for q in self.parsers:
                q.resync()
                q.add_pending("midstream")
        elif kind == "pending":
            p.add_pending(op[2])
        else:
            raise ValueError(kind)

    def snapshot(self) -> tuple:
        return (self.req.state(), self.resp.state())


def run_case(ops: list[tuple], max_body: int, overrides: list[str | None] | None = None) -> str | None:
    """Run ops through both implementations; None when they agree, else a description."""
    a = MiniPair(PyImpl, max_body, overrides)
    b = MiniPair(CImpl, max_body, overrides)
    for i, op in enumerate(ops):
        a.apply(op)
        b.apply(op)
        if a.events != b.events:
            n = len(a.events) if len(a.events) == len(b.events) else min(len(a.events), len(b.events))
            j = next((k for k in range(n) if a.events[k] != b.events[k]), n)
            return (f"op {i} {op[:2]}: events differ at {j}:\n  py: {a.events[j] if j < len(a.events) else None}"
                    f"\n  c:  {b.events[j] if j < len(b.events) else None}")
        sa, sb = a.snapshot(), b.snapshot()
        if sa != sb:
            return f"op {i} {op[:2]}: parser state differs:\n  py: {sa}\n  c:  {sb}"
    return None


# ---- random streams --------------------------------------------------------------------

SPECIAL = [b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"\xff", b"\x85", b"\xa0", b"\x0b", b"\x1c", b",", b";",
           b"\r\n", b"\n\n", b"\r\n\r\n", b"HTTP/1.1 ", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"0", b"A"]

CL_VALUES = ["5", "0", "00", "5, 5", "5,5", "5, 6", " 5 ", "+5", "-1", "1_000", "", "\x0b5", "5\x0b", "²",
             "\xb2", "99999999999999999999999", "5 ,5", "0x5", "5\t", "abc", "ABC", ",5", "5,", "3", "12"]
TE_VALUES = ["chunked", "Chunked", "CHUNKED", "gzip, chunked", "chunked, gzip", "gzip,chunked", "gzip", "",
             " chunked", "chun ked", "gzip,\tchunked", "identity", "x,", "chunked;q=1"]


def _eol(rng: random.Random) -> bytes:
    return rng.choice([b"\r\n"] * 12 + [b"\n", b"\r\r\n", b"\n\r"])


def gen_headers(rng: random.Random, eol: bytes) -> tuple[list[bytes], str | None, str | None]:
    lines: list[bytes] = []
    cl = te = None
    for _ in range(rng.randrange(0, 6)):
        r = rng.random()
        if r < 0.3:
            lines.append(rng.choice([b"Host: example.com", b"User-Agent: x/1", b"Accept: */*", b"X-A:b",
                                     b"X-E:", b"X-Sp:  v  ", b"X-\xe9: \xc9t\xe9"]))
        elif r < 0.4:
            lines.append(rng.choice([b"no colon here", b"", b" folded: x", b"\tfolded", b"X-Long: one",
                                     b"Content-Length : 5", b" content-length: 3", b"\x0c"]))
        elif r < 0.7:
            v = rng.choice(CL_VALUES)
            cl = cl if cl is not None else v
            name = rng.choice([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Content-length"])
            lines.append(name + b":" + rng.choice([b" ", b"", b"\t", b"  "]) + v.encode("latin-1")
                         + rng.choice([b"", b"", b" ", b"\t", b"\r"]))
        else:
            v = rng.choice(TE_VALUES)
            te = v if te is None else te + ", " + v
            name = rng.choice([b"Transfer-Encoding", b"transfer-encoding", b"TRANSFER-ENCODING"])
            lines.append(name + b": " + v.encode("latin-1") + rng.choice([b"", b"", b" ", b"\r"]))
    return lines, cl, te


def gen_chunked(rng: random.Random, eol: bytes) -> bytes:
    out = b""
    for _ in range(rng.randrange(0, 4)):
        n = rng.choice([1, 3, 10, 16, 200])
        size = rng.choice([f"{n:x}", f"{n:X}", f"00{n:x}", f"{n:x} ", f"{n:x};ext=1", f"{n:x} ; a"])
        out += size.encode() + eol + bytes(rng.randrange(256) for _ in range(n)) + rng.choice([eol] * 8 + [b"", b"xx\r\n"])
    if rng.random() < 0.1:
        out += rng.choice([b"zz", b"", b"-1", b"0x5", b" ", b"1" * 5000, b"f" * 24, b"0" * 30 + b"1", b"\x0b3",
                           b"3\x1c", b"+3", b"3 3"]) + eol
    out += rng.choice([b"0", b"000", b"0;x=y"]) + eol
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        out += rng.choice([b"X-Trailer: t", b"Trailer-no-colon", b"Y:  v "]) + eol
    return out + rng.choice([eol] * 6 + [b""])


def _framed_body(rng: random.Random, cl: str | None, te: str | None, eol: bytes) -> bytes:
    if te is not None and te.lower().replace(" ", "").split(",")[-1] == "chunked" and rng.random() < 0.9:
        return gen_chunked(rng, eol)
    if cl is not None:
        try:
            n = int(cl.strip().split(",")[0])
        except ValueError:
            n = rng.randrange(0, 8)
        n = min(n, 5000)
        return bytes(rng.randrange(256) for _ in range(n))
    return b""


def gen_request(rng: random.Random) -> bytes:
    eol = _eol(rng)
    method = rng.choice([b"GET"] * 5 + [b"POST"] * 3 + [b"HEAD", b"PUT", b"CONNECT", b"DELETE", b"OPTIONS",
                                                       b"M-SEARCH", b"get", b"A" * 33, b"G\x00T", b"GET_1", b"Z9"])
    target = rng.choice([b"/", b"/a?b=1", b"/a b", b"/a  b", b"http://x/y", b"*", b"/\xe9", b"", b"/x\ty",
                         b"host:443", b"/" + b"p" * 100])
    version = rng.choice([b" HTTP/1.1"] * 8 + [b" HTTP/1.0", b"", b" HTTP/2.0", b" HTTX/1.1", b" HTTP/1.1 x",
                                               b" http/1.1", b" HTTP/1.1\r", b"  HTTP/1.1"])
    if version == b"" and rng.random() < 0.7:  # HTTP/0.9: a single line
        return method + b" " + target + rng.choice([b"\r\n", b"\n", b" \r\n"])
    lines, cl, te = gen_headers(rng, eol)
    if rng.random() < 0.02:
        lines.append(b"X-Huge: " + b"h" * rng.choice([65000, 70000]))
    head = method + b" " + target + version + eol + b"".join(h + eol for h in lines) + rng.choice([eol] * 10 + [b"\n", b"\r\n"])
    return head + _framed_body(rng, cl, te, eol)


def gen_response(rng: random.Random) -> bytes:
    if rng.random() < 0.03:
        return rng.choice([b"<html>old</html>", b"HT", b"HTTP", b"body\r\n\r\n"])  # headless
    eol = _eol(rng)
    status = rng.choice([b"200"] * 6 + [b"100", b"101", b"102", b"103", b"204", b"206", b"301", b"304", b"400",
                                        b"404", b"500", b"2x0", b"99", b"0200", b"\xb200", b"000"])
    version = rng.choice([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2", b"HTTX/1.1", b"http/1.1"])
    reason = rng.choice([b" OK", b" OK", b"", b" ", b" Not  Found", b" \xe9"])
    lines, cl, te = gen_headers(rng, eol)
    head = version + b" " + status + reason + eol + b"".join(h + eol for h in lines) + rng.choice([eol] * 10 + [b"\n"])
    return head + _framed_body(rng, cl, te, eol)


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(b) + 1)
        r = rng.random()
        s = rng.choice(SPECIAL)
        if r < 0.4:
            b[i:i] = s
        elif r < 0.7:
            b[i:i + len(s)] = s
        else:
            del b[i:i + rng.randrange(1, 20)]
    return bytes(b)


SOUP = [b"\r", b"\n", b"\r\n", b"a", b" ", b":", b"\t", b"X: y", b"content-length: 2", b"transfer-encoding: chunked",
        b"0", b"2", b"HTTP/1.1", b" HTTP/1.1", b"GET /", b"HTTP/1.1 200 OK", b"HTTP/1.0 100 C", b";", b"\x0b"]


def gen_soup(rng: random.Random) -> bytes:
    """A start line, then line-ending soup: exercises where heads end and how lines split."""
    start = rng.choice([b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET /x", b"HTTP/1.1 200 OK", b"HTTP/1.1 101 S",
                        b"HTTP/1.1 103 E", b"", b"G"])
    return start + b"".join(rng.choice(SOUP) for _ in range(rng.randrange(1, 40)))


def gen_stream(rng: random.Random, gen: Callable[[random.Random], bytes]) -> bytes:
    if rng.random() < 0.15:
        return b"".join(gen_soup(rng) for _ in range(rng.randrange(1, 6)))
    out = b""
    for _ in range(rng.randrange(0, 6)):
        if rng.random() < 0.1:
            out += rng.choice([b"\r\n", b"\r\n\r\n", b"junk\r\n", b"\x00\x01\x02", b"more junk", b"\n"])
        out += gen(rng)
    if rng.random() < 0.25 and out:
        out = mutate(rng, out)
    return out


def segments(rng: random.Random, data: bytes) -> list[tuple[str, Any]]:
    """Split data into ("data", bytes) and ("gap", (nbytes, cause)) pieces."""
    out: list[tuple[str, Any]] = []
    pos = 0
    style = rng.random()
    while pos < len(data):
        if style < 0.2:
            n = rng.randrange(1, 4)
        elif style < 0.5:
            n = rng.randrange(1, 40)
        else:
            n = rng.randrange(1, 1500)
        piece = data[pos:pos + n]
        pos += n
        if rng.random() < 0.04:
            out.append(("gap", (len(piece), rng.choice(["gap", "gap", "snaplen"]))))
        else:
            out.append(("data", piece))
        if rng.random() < 0.01:
            out.append(("gap", (rng.randrange(0, 100000), "gap")))
    return out


def gen_case(rng: random.Random) -> tuple[list[tuple], int, list[str | None]]:
    req = gen_stream(rng, gen_request)
    resp = gen_stream(rng, gen_response)
    pieces = [deque(segments(rng, req)), deque(segments(rng, resp))]
    ops: list[tuple] = []
    if rng.random() < 0.1:
        ops.append(("midstream", 0))
    ts = 1000.0
    while pieces[0] or pieces[1]:
        d = rng.choice([x for x in (0, 1) if pieces[x]])
        kind, v = pieces[d].popleft()
        ts += rng.choice([0.0, 0.001, 0.5])
        if kind == "data":
            ops.append(("feed", d, v, ts, rng.choice([-1, 0, rng.randrange(0, 10000)])))
        else:
            ops.append(("gap", d, v[0], ts, v[1]))
        if rng.random() < 0.01:
            ops.append(("flag", d, "overlap_conflict"))
        if rng.random() < 0.005:
            ops.append(("pending", d, "after_gap"))
    ends = [0, 1]
    rng.shuffle(ends)
    for d in ends:
        if rng.random() < 0.9:
            ops.append(("eof", d, ts + 1))
    if rng.random() < 0.05:
        ops.append(("feed", 0, b"GET / HTTP/1.1\r\n\r\n", ts + 2, -1))
    max_body = rng.choice([64 * 1024 * 1024, 0, 1, 5, 100, 1000])
    overrides = [rng.choice([None] * 6 + ["HEAD", "CONNECT", "GET"]) for _ in range(8)] if rng.random() < 0.3 else []
    return ops, max_body, overrides


def run_random(n: int, seed: int, show: int = 3) -> int:
    bad = 0
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        ops, max_body, overrides = gen_case(rng)
        err = run_case(ops, max_body, overrides)
        if err:
            bad += 1
            if bad <= show:
                print(f"case seed={seed} i={i}: {err}")
    print(f"random: {n - bad}/{n} agree (seed {seed})")
    return bad


# ---- the inputs of tests/capture/test_http1.py, and hand-picked corners ----------------

PIPELINE = (
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n"
    b"\r\nDELETE /d HTTP/1.0\r\n\r\n"
)


def _fed(d: int, data: bytes, step: int | None = None, t0: float = 1.0) -> list[tuple]:
    if step is None:
        return [("feed", d, data, t0, -1)]
    return [("feed", d, data[i:i + step], t0 + i, -1) for i in range(0, len(data), step)]


def unit_cases() -> list[tuple[str, list[tuple], int, list[str | None]]]:
    out: list[tuple[str, list[tuple], int, list[str | None]]] = []
    for step in (None, 1, 2, 7, 64):
        out.append((f"pipeline/{step}", _fed(0, PIPELINE, step), 1000, []))
    for method, status, has_body in (("HEAD", 200, False), ("GET", 204, False), ("GET", 304, False),
                                     ("GET", 200, True)):
        head = f"HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\n".encode()
        nxt = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        out.append((f"framing/{method}/{status}", _fed(1, head + (b"body" if has_body else b"") + nxt), 1000,
                    [method] * 4))
    out.append(("interim+close", _fed(1, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: s\r\n\r\n"
                                         b"until close", 3) + [("eof", 1, 9.0)], 1000, ["POST"] * 4))
    out.append(("gap in body", [("feed", 0, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", 1.0, -1),
                                ("gap", 0, 3, 2.0, "gap"), ("feed", 0, b"789GET /next HTTP/1.1\r\n\r\n", 3.0, -1)],
                1000, []))
    out.append(("gap in head", [("feed", 0, b"GET /lost HTTP/1.1\r\nHo", 1.0, -1), ("gap", 0, 50, 2.0, "gap"),
                                ("feed", 0, b"rest of something\r\n\r\nGET /found HTTP/1.1\r\nHost: y\r\n\r\n",
                                 3.0, -1)], 1000, []))
    out.append(("garbage", _fed(0, b"\x00\x01garbage\r\nmore junk\r\nGET /ok HTTP/1.1\r\n\r\n"), 1000, []))
    out.append(("bad chunk", _fed(0, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                                     b"GET /n HTTP/1.1\r\n\r\n"), 1000, []))
    out.append(("over limit", _fed(0, b"POST / HTTP/1.1\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000, 500),
                1000, []))
    out.append(("folded", _fed(0, b"GET /a b HTTP/1.1\r\nX-Long: one\r\n two\r\nContent-Length: 1\r\n"
                                  b"Content-Length: 2\r\n\r\nx"), 1000, []))
    out.append(("http09", _fed(0, b"GET /old\r\n"), 1000, []))
    out.append(("http09 answer", _fed(0, b"GET /old\r\n") + _fed(1, b"<html>", 1, 2.0) + [("eof", 1, 3.0)], 1000, []))
    out.append(("http09 answered", _fed(0, b"GET /old\r\n") + _fed(1, b"HT", None, 2.0) +
                _fed(1, b"TP/1.0 400 Bad\r\n\r\n", None, 3.0) + [("eof", 1, 4.0)], 1000, []))
    out.append(("eof mid body", [("feed", 1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 1.0, -1),
                                 ("eof", 1, 2.0)], 1000, ["GET"]))
    out.append(("upgrade", _fed(1, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
                1000, ["GET"]))
    out.append(("connect", _fed(0, b"CONNECT h:443 HTTP/1.1\r\n\r\n") +
                _fed(1, b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01", None, 2.0), 1000, []))
    out.append(("huge head", _fed(0, b"GET / HTTP/1.1\r\nX: " + b"h" * 70000 + b"\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
                                  1460), 1000, []))
    out.append(("head cut by eof", _fed(1, b"HTTP/1.1 404 Nope\r\nServer") + [("eof", 1, 2.0)], 1000, []))
    out.append(("bare LF + CRLF", _fed(0, b"X\n\r\n\r\nGET / HTTP/1.1\n\n"), 1000, []))
    out.append(("chunk line too long", _fed(0, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                            b"1" * 5000 + b"\r\nGET /n HTTP/1.1\r\n\r\n", 1000), 1000, []))
    out.append(("trailer too long", _fed(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " +
                                         b"t" * 5000, 1000) + [("eof", 1, 9.0)], 1000, ["GET"]))
    out.append(("unterminated at eof", _fed(0, b"GET /old\r\n") + _fed(1, b"HT", None, 2.0) + [("eof", 1, 3.0)],
                1000, []))
    out.append(("resync across feeds", [("midstream", 0)] + _fed(0, b"xx\r\nGET /a HT", 1) +
                _fed(0, b"TP/1.1\r\n\r\nzz\nGET /b HTTP/1.1\r\n\r\n", 3) + [("eof", 0, 9.0)], 1000, []))
    for cl in ("5, 5", "+5", "1_000", "\u00b2", " 5", "\x0b5", "-1", "", "5,6", "99999999999999999999999"):
        out.append((f"cl {cl!r}", _fed(0, b"POST / HTTP/1.1\r\nContent-Length: " + cl.encode("latin-1") +
                                       b"\r\n\r\nhello"), 1000, []))
    return out


def run_units() -> int:
    bad = 0
    cases = unit_cases()
    for name, ops, max_body, overrides in cases:
        err = run_case(ops, max_body, overrides)
        if err:
            bad += 1
            print(f"{name}: {err}")
    print(f"units: {len(cases) - bad}/{len(cases)} agree")
    return bad


# ---- the HTTP streams of real captures -------------------------------------------------


def pcap_cases(paths: list[str]) -> list[tuple[str, list[tuple]]]:
    """Each HTTP connection of the captures, as the parser-level operations pairing.py made
    (recorded by wrapping pairing's Parser), replayable through MiniPair."""
    import capture.pairing as pairing
    from capture.extract import Extractor
    from capture.pcapfile import CaptureDecoder

    real_parser = pairing.Parser
    owners: dict[int, list[tuple]] = {}

    def make(is_request: bool, on_head: Callable, on_end: Callable, max_body: int) -> Any:
        p = real_parser(is_request, on_head, on_end, max_body)
        ops = owners.setdefault(id(on_head.__self__), [])
        d = 0 if is_request else 1  # MiniPair's numbering
        orig_feed, orig_gap, orig_eof, orig_resync = p.feed, p.gap, p.eof, p.resync

        def feed(data: bytes, ts: float, ack: int = -1) -> None:
            ops.append(("feed", d, bytes(data), ts, ack))
            orig_feed(data, ts, ack)

        def gap(nbytes: int, ts: float, cause: str = "gap") -> bool:
            ops.append(("gap", d, nbytes, ts, cause))
            return orig_gap(nbytes, ts, cause)

        def eof(ts: float) -> None:
            ops.append(("eof", d, ts))
            orig_eof(ts)

        def resync() -> None:
            if not ops or ops[-1][0] != "midstream":
                ops.append(("midstream", 0))
            orig_resync()

        p.feed, p.gap, p.eof, p.resync = feed, gap, eof, resync
        return p

    recorded: list[tuple[str, list[tuple]]] = []
    pairing.Parser = make  # type: ignore[misc,assignment]
    try:
        for path in paths:
            owners.clear()
            ex = Extractor()
            dec = CaptureDecoder()
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        ex.feed(dec.feed(chunk))
            except Exception as e:  # noqa: BLE001 - a corrupt capture still gives its connections
                print(f"{path}: {type(e).__name__}: {e}")
            ex.finish()
            recorded.extend((path, ops) for ops in owners.values())
    finally:
        pairing.Parser = real_parser  # type: ignore[misc]
    return recorded


def resplit(rng: random.Random, ops: list[tuple]) -> list[tuple]:
    """The same streams cut differently: each feed split at random points, some pieces lost."""
    out: list[tuple] = []
    for op in ops:
        if op[0] != "feed" or len(op[2]) < 2:
            out.append(op)
            continue
        data, pos = op[2], 0
        while pos < len(data):
            n = rng.choice([1, 2, 7, 100, 1000, len(data)])
            piece = data[pos:pos + n]
            pos += n
            if rng.random() < 0.01:
                out.append(("gap", op[1], len(piece), op[3], "gap"))
            else:
                out.append(("feed", op[1], piece, op[3], op[4]))
    return out


def run_pcaps(paths: list[str], resplits: int = 0) -> int:
    cases = pcap_cases(paths)
    bad = total = 0
    for path, ops in cases:
        variants = [(ops, 64 * 1024 * 1024)]
        rng = random.Random(len(ops))
        variants += [(resplit(rng, ops), rng.choice([64 * 1024 * 1024, 0, 100])) for _ in range(resplits)]
        for v, max_body in variants:
            total += 1
            err = run_case(v, max_body)
            if err:
                bad += 1
                print(f"{path}: {err}")
    print(f"captures: {total - bad}/{total} connection runs agree ({len(cases)} connections, {len(paths)} files, "
          f"{resplits} re-cuts each)")
    return bad


# ---- building the wrapper ----------------------------------------------------------------

WRAPPER = Path(__file__).with_name("native_http1_wrapper.c")


def build(where: str) -> None:
    os.makedirs(where, exist_ok=True)
    import sysconfig

    inc = sysconfig.get_paths()["include"]
    ext = sysconfig.get_config_var("EXT_SUFFIX")
    native = ROOT / "capture" / "native"
    cmd = ["gcc", "-O1", "-g", "-Wall", "-shared", "-fPIC", *os.environ.get("CFLAGS", "").split(), f"-I{inc}",
           f"-I{native}", str(WRAPPER), str(native / "http1.c"), str(native / "util.c"),
           "-o", os.path.join(where, "h1wrap" + ext)]
    subprocess.run(cmd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", metavar="DIR")
    ap.add_argument("--random", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pcaps", nargs="*", default=[])
    ap.add_argument("--units", action="store_true")
    ap.add_argument("--resplits", type=int, default=0, help="with --pcaps: also replay each connection re-cut")
    a = ap.parse_args()
    use_sources()
    if a.build:
        build(a.build)
        return 0
    bad = 0
    if a.units:
        bad += run_units()
    if a.random:
        bad += run_random(a.random, a.seed)
    if a.pcaps:
        bad += run_pcaps(a.pcaps, a.resplits)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
