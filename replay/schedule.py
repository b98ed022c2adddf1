"""When each request is due: the pacing modes, on an absolute schedule.

A due time is computed from the first request's capture time, never from the previous
send, so a late send does not push every later one back: lag cannot accumulate, and what the
run reports as lag is the whole of it. Pure: capture times in, due offsets out.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable, Iterator, TypeVar


class Pacer:
    """`captured` (scaled by `speed`), `rate` (a fixed number per second), `fast`, or `live`
    (mirror: sent on arrival; the lag reported is then how far behind the capture it ran)."""

    def __init__(self, mode: str = "captured", speed: float = 1.0, rate: float | None = None) -> None:
        if rate is not None:
            mode = "rate"
        if mode not in ("captured", "rate", "fast", "live"):
            raise ValueError(f"unknown pace {mode!r}")
        if speed <= 0 or (rate is not None and rate <= 0):
            raise ValueError("speed and rate must be positive")
        self.mode = mode
        self.speed = speed
        self.rate = rate
        self.t0: float | None = None
        self.n = 0

    def offset(self, t: float) -> float:
        """Seconds after the run's start at which the request captured at `t` is due."""
        n = self.n
        self.n += 1
        if self.mode == "fast" or self.mode == "live":
            return 0.0
        if self.mode == "rate":
            assert self.rate is not None
            return n / self.rate
        if self.t0 is None:
            self.t0 = t
        return max(0.0, (t - self.t0) / self.speed)


T = TypeVar("T")


def in_time_order(items: Iterable[T], key: Callable[[T], float], window: int = 4096,
                  horizon: float = 2.0) -> Iterator[T]:
    """Restore capture-time order within a bounded window.

    Extraction emits an exchange when its response ends, so a slow answer's request comes
    out after faster ones that started later. Holding up to `window` items, or until the
    newest is `horizon` capture-seconds ahead, puts them back in order with bounded memory;
    anything later than that is sent late, and shows as lag.
    """
    heap: list[tuple[float, int, T]] = []
    newest = float("-inf")
    for seq, item in enumerate(items):
        t = key(item)
        if t > newest:
            newest = t
        heapq.heappush(heap, (t, seq, item))
        while heap and (len(heap) > window or heap[0][0] <= newest - horizon):
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]
