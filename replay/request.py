"""The bytes sent to a shadow: the captured request, with only what must change changed.

Method, target, version, header order and case and the body are the captured ones. What
changes: the Host (the shadow rule, a literal, or nothing), the framing (bodies are stored
de-chunked, so Transfer-Encoding becomes a Content-Length) and the user's own header edits.

The other hop-by-hop headers (Connection, Keep-Alive, TE) are sent as captured, although a
proxy would drop them: the primary saw them, a shadow that echoes its request headers would
otherwise differ from the primary for no reason, and the pool honours `Connection: close`
(it opens a new connection, as the captured client did). Pure: data in, bytes out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .authority import shadow_host

_shadow_host = lru_cache(maxsize=4096)(shadow_host)  # a capture holds a handful of hosts

# Methods that change nothing at the server (RFC 9110 §9.2.1): sent without --allow-writes.
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))


@dataclass(frozen=True)
class HostRule:
    """`suffix` (Envoy's default), `keep` (disable_shadow_host_suffix_append) or `literal`."""

    mode: str = "suffix"
    literal: str = ""
    suffix: str = "-shadow"

    def apply(self, host: str) -> str:
        if self.mode == "suffix":
            return _shadow_host(host, self.suffix)
        if self.mode == "literal":
            return self.literal
        return host


@dataclass(frozen=True)
class Edits:
    host: HostRule = HostRule()
    set_headers: tuple[tuple[str, str], ...] = ()  # replace every occurrence, or append
    drop_headers: frozenset[str] = field(default_factory=frozenset)  # lower-case names


def _absolute_form(target: str, rule: HostRule) -> str:
    """`GET http://httpbin:8000/x`: a server takes the authority from the target, not from
    Host (RFC 9112 §3.2.2), so the rule applies there too."""
    for scheme in ("http://", "https://"):
        if target[: len(scheme)].lower() == scheme:
            rest = target[len(scheme):]
            cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
            return target[: len(scheme)] + rule.apply(rest[:cut]) + rest[cut:]
    return target


def build(method: str, target: str, version: str, headers: list[tuple[str, str]], body: bytes | None,
          edits: Edits) -> tuple[bytes, str | None]:
    """The request's bytes and the Host it carries (None when it carries none)."""
    drop = edits.drop_headers
    sets = {k.lower(): (k, v) for k, v in edits.set_headers}
    placed: set[str] = set()  # user-set headers already written
    if edits.host.mode != "keep" and "://" in target[:8]:
        target = _absolute_form(target, edits.host)
    out: list[str] = [f"{method} {target} {version}\r\n"]
    host: str | None = None
    framed = False
    body = body or b""
    for k, v in headers:
        lk = k.lower()
        if lk in drop or lk in placed:
            continue
        if lk in sets:  # the first occurrence takes the user's value, in its captured place
            placed.add(lk)
            k, v = sets[lk]
            if lk == "host":
                host = v
            out.append(f"{k}: {v}\r\n")
        elif lk == "host":
            if host is not None:
                continue  # a second Host is a smuggling sign: send one
            host = edits.host.apply(v)
            out.append(f"{k}: {host}\r\n")
        elif lk == "content-length" or lk == "transfer-encoding":
            if not framed:  # bodies are stored de-chunked: one Content-Length frames them
                framed = True
                out.append(f"{'Content-Length' if lk == 'transfer-encoding' else k}: {len(body)}\r\n")
        else:
            out.append(f"{k}: {v}\r\n")
    for lk, (k, v) in sets.items():
        if lk not in placed:
            if lk == "host":
                host = v
            out.append(f"{k}: {v}\r\n")
    if host is None and edits.host.mode == "literal" and "host" not in drop:
        host = edits.host.literal
        out.insert(1, f"Host: {host}\r\n")
    if body and not framed:
        out.append(f"Content-Length: {len(body)}\r\n")
    out.append("\r\n")
    head = "".join(out).encode("latin-1")
    return (head + body if body else head), host
