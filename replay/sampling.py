"""Which requests are mirrored: Istio's `mirrorPercentage`, made repeatable.

Istio draws a random number per request, so two runs mirror different requests. Here the
decision is a keyed hash of the request's sampling key (the exchange id, or a header such as
x-request-id so that a user's or a trace's requests stay together) compared with the
percentage: the same seed gives the same sample on every run, every shard and every machine.
"""
from __future__ import annotations

from hashlib import blake2b

_SCALE = float(1 << 64)


class Sampler:
    def __init__(self, percent: float = 100.0, seed: str = "", header: str | None = None) -> None:
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"percent must be between 0 and 100, not {percent}")
        self.percent = percent
        self.header = header.lower() if header else None
        self.key = blake2b(seed.encode(), digest_size=16).digest()  # any seed text, fixed length (the hash key)
        self.limit = percent / 100.0

    def position(self, key: str) -> float:
        """Where `key` falls in [0, 1): uniform over keys, fixed for a seed."""
        h = blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=self.key).digest()
        return int.from_bytes(h, "big") / _SCALE

    def key_of(self, exchange_id: str, headers: list[tuple[str, str]] | None) -> str:
        """The sampling key: the chosen header's value when the request has it, else the id."""
        if self.header is not None and headers:
            for name, value in headers:
                if name.lower() == self.header:
                    return "h:" + value
        return "id:" + exchange_id

    def keep(self, exchange_id: str, headers: list[tuple[str, str]] | None = None) -> bool:
        if self.limit >= 1.0:
            return True
        if self.limit <= 0.0:
            return False
        return self.position(self.key_of(exchange_id, headers)) < self.limit
