"""The differences between two answers to the same request, as field paths.

    status                  the status code
    header.<name>           a response header (lower-case name), duplicates joined
    body                    a body as a whole (text: the first differing line; bytes: size and hash)
    body.items[3].price     a field inside a JSON body

Most pairs are equal, so equality is decided first and cheaply (the decoded bytes, then a
canonical JSON dump); only pairs that differ are walked field by field (DeepDiff's paths, which
the tests hold it to). Pure: answers in, differences out.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .bodies import Body

# Hop-by-hop, framing, and values that differ on every answer by nature (DESIGN.md).
DEFAULT_IGNORED_HEADERS = frozenset((
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "date", "server", "x-request-id", "x-correlation-id", "traceparent", "tracestate",
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
    "x-amzn-trace-id", "x-cloud-trace-context", "uber-trace-id", "x-envoy-upstream-service-time",
    "age", "via",
))

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Rules:
    ignore_headers: frozenset[str] = DEFAULT_IGNORED_HEADERS
    ignore_fields: tuple[re.Pattern[str], ...] = ()  # matched against the whole path
    unordered: tuple[re.Pattern[str], ...] = ()  # arrays at these paths are compared as multisets
    tolerance: tuple[tuple[re.Pattern[str], float], ...] = ()  # |a - b| <= t is equal

    def ignored(self, path: str) -> bool:
        return any(p.fullmatch(path) for p in self.ignore_fields)

    def tolerated(self, path: str, a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return False
        return any(p.fullmatch(path) and abs(a - b) <= t for p, t in self.tolerance)


def path_pattern(text: str) -> re.Pattern[str]:
    """`body.items[*].price` or `header.x-*`: `*` matches within one step, `[*]` any index;
    a text that is not a path is taken as a regular expression over paths."""
    if re.fullmatch(r"(status|body|header)[^\s]*", text) and not any(c in text for c in "()|+?\\^$"):
        rx = re.escape(text).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", r"[^.\[]*")
        return re.compile(rx)
    return re.compile(text)


@dataclass
class Answer:
    status: int | None
    headers: list[tuple[str, str]]
    body: Body


@dataclass
class Diff:
    path: str
    a: Any
    b: Any
    artifact: bool = False  # b is a with the replayer's Host rewrite applied
    volatile: bool | None = None  # text bodies: every differing line differs only by volatile tokens


_IP = r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]+)"


@dataclass
class HostRewrite:
    """What mirroring itself changes in a request, so that echoes of it are artifacts, not
    regressions: the Host (httpbin:8000 → httpbin-shadow:8000) and the client's address (the
    shadow sees the replayer's, not the captured client's)."""

    captured: str | None
    sent: str | None
    client_ip: str | None = None

    def explains(self, a: Any, b: Any) -> bool:
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        c, s, ip = self.captured, self.sent, self.client_ip
        if c and s and c != s and c in a:
            a = a.replace(c, s)
            if a == b:
                return True
        if ip and ip in a:
            rx = _IP.join(re.escape(part) for part in a.split(ip))
            return re.fullmatch(rx, b) is not None
        return False


@dataclass
class Comparison:
    diffs: list[Diff] = field(default_factory=list)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _step(key: Any) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    k = str(key)
    return f".{k}" if _IDENT.match(k) else f"[{json.dumps(k, ensure_ascii=False)}]"


def json_path(steps: list[Any], root: str = "body") -> str:
    return root + "".join(_step(s) for s in steps)


def _sorted_unordered(value: Any, rules: Rules, path: str = "body") -> Any:
    """Arrays at --unordered paths, sorted canonically, so that order alone is no difference."""
    if isinstance(value, dict):
        return {k: _sorted_unordered(v, rules, path + _step(k)) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted_unordered(v, rules, f"{path}[{i}]") for i, v in enumerate(value)]
        if any(p.fullmatch(path) for p in rules.unordered):
            items.sort(key=canonical)
        return items
    return value


def compare(a: Answer, b: Answer, rules: Rules, host: HostRewrite) -> list[Diff]:
    diffs: list[Diff] = []
    if a.status != b.status:
        diffs.append(Diff("status", a.status, b.status))
    diffs.extend(_headers(a.headers, b.headers, rules, host))
    diffs.extend(_bodies(a.body, b.body, rules, host))
    return [d for d in diffs if not rules.ignored(d.path)]


def _header_map(headers: list[tuple[str, str]], ignored: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers:
        lk = k.lower()
        if lk in ignored:
            continue
        out[lk] = f"{out[lk]}, {v}" if lk in out else v
    return out


def _headers(a: list[tuple[str, str]], b: list[tuple[str, str]], rules: Rules, host: HostRewrite) -> list[Diff]:
    ha, hb = _header_map(a, rules.ignore_headers), _header_map(b, rules.ignore_headers)
    if ha == hb:
        return []
    out = []
    for name in sorted(set(ha) | set(hb)):
        va, vb = ha.get(name), hb.get(name)
        if va != vb:
            out.append(Diff(f"header.{name}", va, vb, host.explains(va, vb)))
    return out


def _bodies(a: Body, b: Body, rules: Rules, host: HostRewrite) -> list[Diff]:
    if a.raw == b.raw:
        return []
    a.resolve()
    b.resolve()
    if a.kind == "json" and b.kind == "json":
        return _json(a.value, b.value, rules, host)
    if a.kind == b.kind == "text" or {a.kind, b.kind} <= {"text", "empty"}:
        ta, tb = a.raw.decode("utf-8", "replace"), b.raw.decode("utf-8", "replace")
        la, lb = ta.splitlines(), tb.splitlines()
        differing = [i for i in range(max(len(la), len(lb))) if (la[i] if i < len(la) else None) != (lb[i] if i < len(lb) else None)]
        if not differing:
            return []
        i = differing[0]
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        quiet = len(la) == len(lb) and all(_volatile_line(la[j], lb[j]) for j in differing)
        return [Diff("body", f"line {i + 1}: {x}" if x is not None else None,
                     f"line {i + 1}: {y}" if y is not None else None, host.explains(ta, tb), quiet)]
    return [Diff("body", _summary(a), _summary(b), volatile=False)]


def _volatile_line(x: str, y: str) -> bool:
    """Two lines that differ only in tokens volatile by nature (a timestamp in a log line)."""
    from .noise import volatile

    ta, tb = x.split(), y.split()
    return len(ta) == len(tb) and all(p == q or (volatile(p) and volatile(q)) for p, q in zip(ta, tb))


def _summary(body: Body) -> str:
    if body.kind == "empty":
        return "(empty)"
    return f"{len(body.raw)} bytes {body.kind}, sha256 {hashlib.sha256(body.raw).hexdigest()[:16]}"


def _json(a: Any, b: Any, rules: Rules, host: HostRewrite) -> list[Diff]:
    if rules.unordered:
        a, b = _sorted_unordered(a, rules), _sorted_unordered(b, rules)
    if canonical(a) == canonical(b):
        return []
    out: list[Diff] = []
    _walk(a, b, "body", out, rules, host)
    out.sort(key=lambda d: d.path)
    return out


def _scalars(items: list[Any]) -> bool:
    return all(not isinstance(x, (dict, list)) for x in items)


def _aligned(a: list[Any], b: list[Any], path: str, out: list[Diff], rules: Rules, host: HostRewrite) -> None:
    """Lists of scalars of different lengths: aligned first (a tag inserted at the front is
    one added item, not a change at every index), as DeepDiff does with difflib."""
    ca, cb = [canonical(x) for x in a], [canonical(x) for x in b]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ca, cb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                _walk(a[i1 + k], b[j1 + k], f"{path}[{i1 + k}]", out, rules, host)
            continue
        if op == "replace":
            common = min(i2 - i1, j2 - j1)
            for k in range(common):
                _walk(a[i1 + k], b[j1 + k], f"{path}[{i1 + k}]", out, rules, host)
            i1, j1 = i1 + common, j1 + common
        for i in range(i1, i2):
            out.append(Diff(f"{path}[{i}]", a[i], None))
        for j in range(j1, j2):
            out.append(Diff(f"{path}[{j}]", None, b[j]))


def _walk(a: Any, b: Any, path: str, out: list[Diff], rules: Rules, host: HostRewrite) -> None:
    """Field paths where two JSON documents differ, as DeepDiff reports them without
    ignore_order: changed values and types, keys added or removed, list items by index.
    Its own walk, because DeepDiff costs a millisecond a pair, as much as comparing
    every pair with it would (tests/analyze/test_diff.py checks that both agree)."""
    if type(a) is not type(b):  # 1, 1.0 and true are three different values in JSON
        out.append(Diff(path, a, b, host.explains(a, b)))
    elif isinstance(a, dict):
        for k, v in a.items():
            p = path + _step(k)
            if k in b:
                w = b[k]
                if v is not w and not (type(v) is type(w) and v == w and type(v) not in (dict, list)):
                    _walk(v, w, p, out, rules, host)
            else:
                out.append(Diff(p, v, None))
        for k, w in b.items():
            if k not in a:
                out.append(Diff(path + _step(k), None, w))
    elif isinstance(a, list):
        if len(a) != len(b) and _scalars(a) and _scalars(b):
            _aligned(a, b, path, out, rules, host)
        else:  # objects in a list are paired by position
            n, m = len(a), len(b)
            for i in range(min(n, m)):
                _walk(a[i], b[i], f"{path}[{i}]", out, rules, host)
            for i in range(m, n):
                out.append(Diff(f"{path}[{i}]", a[i], None))
            for i in range(n, m):
                out.append(Diff(f"{path}[{i}]", None, b[i]))
    elif a != b:
        if not rules.tolerated(path, a, b):
            out.append(Diff(path, a, b, host.explains(a, b)))
