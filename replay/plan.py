"""Which captured exchanges are sent, and as what: every exchange gets one decision.

A decision is a Job (send these bytes, due at this capture time) or a skip with its reason,
so the run can account for every exchange it read. Pure: records in, decisions out.

Skip reasons, in the order they are decided:
  no_request    a response whose request was not captured
  incomplete    the captured request lacks bytes (gap, cut by snaplen, truncated, unparsed):
                sending what we have would be a different request
  upgrade       CONNECT or an Upgrade handshake: a tunnel, not a request/response
  http09        an HTTP/0.9 request (no headers, no Host to rewrite)
  method        not one of --method
  path          excluded by --include-path / --exclude-path
  sampled_out   not in the --percent sample
  write         a method that changes state, without --allow-writes
  done          already sent by an earlier run into the same recording (resume)
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Union

from .request import SAFE_METHODS, Edits, build
from .sampling import Sampler

SKIP_REASONS = ("no_request", "incomplete", "upgrade", "http09", "method", "path", "sampled_out",
                "write", "done")
_UNUSABLE_FLAGS = frozenset(("gap", "incomplete", "snaplen", "body_truncated", "parse_error"))


@dataclass(slots=True)
class Captured:
    """The parts of a captured exchange that replay needs (from a recording row or from an
    Exchange extracted on the fly)."""

    id: str
    server: str
    method: str | None
    target: str | None
    version: str | None
    headers: list[tuple[str, str]]
    body: bytes | None
    t: float | None  # capture time of the request's first byte
    flags: list[str]


COLUMNS = ["id", "server", "method", "target", "version", "req_headers", "req_body", "t_req_start",
           "flags"]


@dataclass(slots=True)
class Job:
    id: str
    method: str
    target: str
    t: float  # capture time, for pacing
    data: bytes
    host: str | None  # the Host sent
    server: str  # the captured primary's address
    close: bool = False  # the request asks for its connection to close after the answer


def asks_close(version: str, headers: list[tuple[str, str]]) -> bool:
    """Does the request end its connection (RFC 9112 §9.3)? Sent as captured, it will."""
    tokens = ",".join(v for k, v in headers if k.lower() == "connection").lower()
    if "close" in tokens:
        return True
    return version == "HTTP/1.0" and "keep-alive" not in tokens


@dataclass(slots=True)
class Skip:
    id: str
    reason: str
    method: str | None


Decision = Union[Job, Skip]


def count_skip(skip: Skip, reasons: "Counter[str]", writes: "Counter[str]") -> None:
    """Tally a skip for the summary: by reason, and writes by method (they are named there)."""
    reasons[skip.reason] += 1
    if skip.reason == "write":
        writes[skip.method or "?"] += 1


class Planner:
    def __init__(self, edits: Edits, sampler: Sampler, methods: Iterable[str] = (),
                 include: Iterable[str] = (), exclude: Iterable[str] = (), allow_writes: bool = False,
                 done: frozenset[str] | set[str] = frozenset()) -> None:
        self.edits = edits
        self.sampler = sampler
        self.methods = frozenset(m.upper() for m in methods)
        self.include = [re.compile(p) for p in include]
        self.exclude = [re.compile(p) for p in exclude]
        self.allow_writes = allow_writes
        self.done = done

    def admit(self, c: Captured) -> Skip | None:
        """Why `c` is not sent, or None: every check, and none of the cost of building."""
        m = c.method
        if m is None or c.target is None or c.version is None:
            return Skip(c.id, "no_request", m)
        if c.flags and not _UNUSABLE_FLAGS.isdisjoint(c.flags):
            return Skip(c.id, "incomplete", m)
        if m == "CONNECT" or any(k.lower() == "upgrade" for k, _ in c.headers):
            return Skip(c.id, "upgrade", m)
        if c.version == "HTTP/0.9":
            return Skip(c.id, "http09", m)
        if self.methods and m not in self.methods:
            return Skip(c.id, "method", m)
        if self.include and not any(p.search(c.target) for p in self.include):
            return Skip(c.id, "path", m)
        if self.exclude and any(p.search(c.target) for p in self.exclude):
            return Skip(c.id, "path", m)
        if not self.sampler.keep(c.id, c.headers):
            return Skip(c.id, "sampled_out", m)
        if m not in SAFE_METHODS and not self.allow_writes:
            return Skip(c.id, "write", m)
        if c.id in self.done:
            return Skip(c.id, "done", m)
        return None

    def job(self, c: Captured) -> Job:
        """The request to send for an admitted exchange."""
        assert c.method is not None and c.target is not None and c.version is not None
        data, host = build(c.method, c.target, c.version, c.headers, c.body, self.edits)
        return Job(c.id, c.method, c.target, c.t or 0.0, data, host, c.server, asks_close(c.version, c.headers))

    def decide(self, c: Captured) -> Decision:
        return self.admit(c) or self.job(c)
