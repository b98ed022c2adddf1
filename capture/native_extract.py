"""The native engine's shell: `read_capture` and `Extractor` for `extract --jsonl`, in C.

capture._native (built from capture/native/*.c) decodes capture bytes, reassembles TCP, parses
HTTP/1.x and writes the JSON lines itself, so a 1 MiB chunk of capture costs one call and one
bytes object instead of a Python object per packet. This module only opens the input (a path,
gzip, or '-' for stdin, exactly as read_capture does) and keeps the same InputReport, warnings
and errors. The Python engine (extract.py) stays the specification: tests/capture/test_native.py
holds the two to byte-identical lines and equal counts.
"""
from __future__ import annotations

import zlib
from typing import Any, Iterable, Iterator

from .extract import CHUNK, InputReport, _open, _read
from .pcapfile import CaptureError, NotACapture, sniff_format


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
        """read_capture for one input: yield the JSON lines each chunk with records completes,
        and their number.

        Raises NotACapture when the input is not a capture at all. A corrupt record mid-file
        ends the file (report.error); a truncated last record is a warning.
        """
        eng = self.engine
        f, head, compressed = _open(path)
        report.compressed = compressed
        try:
            fmt = sniff_format(head)
            if fmt not in ("pcap", "pcapng"):
                raise NotACapture(f"{path} is not a pcap or pcapng file")
            report.format = fmt
            eng.new_input()
            data = head
            while True:
                before = eng.input_records
                try:
                    lines = eng.feed(data)
                except CaptureError as e:
                    report.error = f"{path}: {e}; stopped reading this file"
                    report.records = eng.input_records
                    return
                if eng.input_records != before:  # read_capture yields batches that hold records
                    yield self._lines(lines)
                if eng.input_error is not None:
                    report.error = f"{path}: {eng.input_error}; stopped reading this file"
                    report.records = eng.input_records
                    return
                report.bytes += len(data)
                try:
                    data = _read(f, CHUNK)
                except (OSError, EOFError, zlib.error) as e:
                    report.error = f"{path}: read failed after {report.bytes} bytes ({e}); kept what came before"
                    report.records = eng.input_records
                    return
                if not data:
                    break
            report.records = eng.input_records
            report.skipped_blocks = eng.input_unknown_blocks
            left = eng.input_leftover
            if left:
                report.truncated_bytes = left
                report.warnings.append(
                    f"{path}: last record truncated ({left} bytes ignored); {eng.input_records} records used"
                )
        finally:
            if path != "-":
                f.close()

    def finish(self) -> tuple[bytes, int]:
        """End of all input: the lines that closing every connection completes."""
        return self._lines(self.engine.finish())

    def counts(self) -> dict[str, object]:
        return self.engine.counts()  # type: ignore[no-any-return]
