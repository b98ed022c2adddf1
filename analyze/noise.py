"""Telling a change from noise.

With a baseline (a second copy of the primary), Diffy's method: per endpoint and field path,
count raw differences (primary vs shadow) and noise differences (primary vs baseline); a field
is a change only when raw clearly exceeds noise. Without one, values that are volatile by
nature (UUIDs, timestamps, nonces) are reported as probable noise, never hidden.
"""
from __future__ import annotations

import re
import time
from typing import Any

RELATIVE = 20.0  # Diffy's defaults, in percent
ABSOLUTE = 0.03

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_TOKEN = re.compile(r"^[A-Za-z0-9+/_=-]{20,}$")


_TIME_NAME = re.compile(r"time|date|stamp|epoch|expires|created|updated|generated|issued|(^|_)(at|ts)$", re.I)


def volatile(value: Any, name: str = "") -> bool:
    """A value that differs between two answers to the same request by nature. A number is
    one only under a time-like name (`generated_at_epoch`, `ts`): sizes and ids near today's
    epoch are not."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, (int, float)):
        if not _TIME_NAME.search(name):
            return False
        try:
            v = float(value)
        except OverflowError:
            return False
        now, years = time.time(), 10 * 365 * 86400
        return abs(v - now) < years or abs(v / 1000 - now) < years
    if not isinstance(value, str):
        return False
    v = value.strip()
    if _UUID.match(v) or _ISO.match(v) or _HTTP_DATE.match(v):
        return True
    if _HEX.match(v) and any(c in "abcdefABCDEF" for c in v):  # all digits is a number, not a nonce
        return True
    return bool(_TOKEN.match(v)) and any(c.isdigit() for c in v) and any(c.isupper() for c in v) \
        and any(c.islower() for c in v)


def diffy_change(raw: int, noise: int, total: int, relative: float = RELATIVE, absolute: float = ABSOLUTE) -> bool:
    """Diffy's DifferencesFilter: more raw than noise, by enough of both kinds of margin."""
    if raw <= noise or total <= 0:
        return False
    rel = abs(raw - noise) / (raw + noise) * 100.0
    absd = abs(raw - noise) / total * 100.0
    return rel > relative and absd > absolute


def classify(raw: int, noise: int, total: int, artifacts: int, volatile_pairs: int, has_baseline: bool,
             relative: float = RELATIVE, absolute: float = ABSOLUTE) -> str:
    """`artifact` when every raw difference is the replayer's own Host rewrite; with a
    baseline, Diffy decides change or noise; without, volatile values are probable noise."""
    if raw and artifacts == raw:
        return "artifact"
    real = raw - artifacts
    if has_baseline:
        return "change" if diffy_change(real, noise, total, relative, absolute) else "noise"
    if real and volatile_pairs >= real:
        return "probable_noise"
    return "change"
