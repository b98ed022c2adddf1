"""Endpoints: a method and a path template, so that `/users/123` and `/users/456` are counted
together as `GET /users/{id}`.

A segment is an id when it looks like one (a number, a UUID, a long hex or mixed token); user
patterns (`--endpoint 'GET /users/{id}'`) are tried first and win. The query string is not part
of the endpoint. Pure: strings in, strings out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,}$")


def is_id(segment: str) -> bool:
    """Numbers, UUIDs, hex ids of 8+ characters with a digit, and long random-looking tokens."""
    if _NUMBER.match(segment) or _UUID.match(segment):
        return True
    if _HEX.match(segment) and any(c.isdigit() for c in segment):
        return True
    return bool(_TOKEN.match(segment)) and any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)


@dataclass(frozen=True)
class Pattern:
    """A user's `METHOD /path/{name}` (`*` for any method); `{name}` matches one segment."""

    text: str
    method: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        method, sep, path = text.strip().partition(" ")
        if not sep or not path.startswith("/"):
            raise ValueError(f"--endpoint wants 'METHOD /path/{{id}}', not {text!r}")
        parts = re.split(r"(\{[^}/]*\})", path.strip())
        rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p)
        return cls(f"{method.upper()} {path.strip()}", method.upper(), re.compile(f"^{rx}/?$"))

    def match(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and bool(self.regex.match(path))


class Endpoints:
    def __init__(self, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.patterns = [Pattern.parse(p) for p in patterns]
        self._cache: dict[tuple[str, str], str] = {}

    def of(self, method: str | None, target: str | None) -> str:
        key = (method or "?", target or "")
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._template(*key)
            if len(self._cache) > 100_000:
                self._cache.clear()
        return hit

    def _template(self, method: str, target: str) -> str:
        path = _path(target)
        for p in self.patterns:
            if p.match(method, path):
                return p.text if p.method != "*" else f"{method} {p.text.partition(' ')[2]}"
        return f"{method} {template(path)}"


def _path(target: str) -> str:
    """The path of an origin-form or absolute-form target, without query or fragment."""
    if "://" in target[:8]:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    return target.split("?", 1)[0].split("#", 1)[0] or "/"


@lru_cache(maxsize=65536)
def template(path: str) -> str:
    return "/".join("{id}" if seg and is_id(seg) else seg for seg in path.split("/"))
