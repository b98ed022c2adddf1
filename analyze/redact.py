"""Secrets out of reports: captured traffic carries credentials, reports get shared.

Headers and JSON fields whose names say they hold a secret are replaced whole; bearer tokens
and basic credentials inside any other string are cut. Applied to every value a report shows.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "[redacted]"
_SECRET_NAMES = frozenset(("authorization", "proxy-authorization", "cookie", "cookies", "set-cookie", "x-api-key",
                           "api-key", "apikey", "x-auth-token", "x-csrf-token", "x-xsrf-token", "auth", "pwd",
                           "passphrase", "credentials", "sid", "private_key", "privatekey", "private-key"))
_SECRET_PART = re.compile(r"token|secret|passw|api[-_]?key|session", re.IGNORECASE)
_KEY_VALUE = re.compile(r"(?<![\w-])([\w.-]+)=([^&\s;,\"']*)")
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def secret_name(name: str) -> bool:
    n = name.lower()
    return n in _SECRET_NAMES or bool(_SECRET_PART.search(n))


def text(value: str) -> str:
    """Bearer and basic credentials, and `name=value` pairs with a secret's name (query
    strings, form bodies, cookies and log lines in text) are masked."""
    value = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", value)
    if "=" in value:
        value = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}" if secret_name(m.group(1)) else m.group(0), value)
    return value


def headers(pairs: list[tuple[str, str]] | None) -> list[list[str]]:
    return [[k, MASK if secret_name(k) else text(v)] for k, v in (pairs or [])]


def value(v: Any, name: str | None = None) -> Any:
    """A JSON-like value with secret fields masked (the field's name decides)."""
    if name is not None and secret_name(name) and v is not None:
        return MASK
    if isinstance(v, str):
        return text(v)
    if isinstance(v, dict):
        return {k: value(x, str(k)) for k, x in v.items()}
    if isinstance(v, list):
        return [value(x) for x in v]
    return v


def path_value(path: str, v: Any) -> Any:
    """A value shown for a field path: masked if any name on the path is a secret's
    (`body.tokens[0]` is inside `tokens`)."""
    names = [n for n in re.split(r"[.\[\]\"]+", path) if n and not n.isdigit()]
    if any(secret_name(n) for n in names[1:]):
        return MASK if v is not None else None
    return value(v)
