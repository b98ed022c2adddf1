"""The native engine's shell: `read_capture` and `Extractor` for `extract --jsonl`, in C.

capture._native (built from capture/native/*.c) decodes capture bytes, reassembles TCP, parses
HTTP/1.x and writes the JSON lines itself, so a 1 MiB chunk of capture costs one call and one
bytes object instead of a Python object per packet. This module only opens the input (a path,
gzip, or '-' for stdin, exactly as read_capture does) and keeps the same InputReport, warnings
and errors. The Python engine (extract.py) stays the specification: tests/capture/test_native.py
holds the two to byte-identical lines and equal counts.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from .extract import InputReport, read_capture


def load() -> Any | None:
    """The compiled module, or None when it is not built (SHADOWTAP_PURE=1, a plain checkout)."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _native


class NativeExtractor:
    """Extractor's twin: capture bytes in, JSON lines (bytes) out, the same counts()."""

    def __init__(self, native: Any, ports: Iterable[int] = (), servers: Iterable[tuple[bytes, int]] = (),
                 max_body: int = 64 << 20, idle_timeout: float = 300.0) -> None:
        self.engine = native.Engine(list(ports), list(servers), max_body, idle_timeout)
        self._handed = 0

    def _lines(self, lines: bytes) -> tuple[bytes, int]:
        """The engine's lines and how many they are (it counts them; no need to search)."""
        total = self.engine.exchanges
        n, self._handed = total - self._handed, total
        return lines, n

    def read(self, path: str, report: InputReport) -> Iterator[tuple[bytes, int]]:
        """read_capture for one input: the JSON lines each chunk with records completes, and
        their number (the same input handling, reports and errors as the Python engine's)."""
        return read_capture(path, report, lambda: _Input(self))

    def finish(self) -> tuple[bytes, int]:
        """End of all input: the lines that closing every connection completes."""
        return self._lines(self.engine.finish())

    def counts(self) -> dict[str, object]:
        return self.engine.counts()  # type: ignore[no-any-return]


class _Input:
    """The engine as read_capture's decoder for one input (a new capture stream; connections
    carry over from the inputs before it)."""

    def __init__(self, owner: NativeExtractor) -> None:
        self.owner = owner
        self.engine = owner.engine
        self.engine.new_input()

    def feed(self, data: bytes) -> tuple[bytes, int] | None:
        before = self.engine.input_records
        lines = self.engine.feed(data)
        return self.owner._lines(lines) if self.engine.input_records != before else None

    @property
    def records(self) -> int:
        return self.engine.input_records  # type: ignore[no-any-return]

    @property
    def unknown_blocks(self) -> int:
        return self.engine.input_unknown_blocks  # type: ignore[no-any-return]

    @property
    def error(self) -> str | None:
        return self.engine.input_error  # type: ignore[no-any-return]

    def leftover(self) -> int:
        return self.engine.input_leftover  # type: ignore[no-any-return]
