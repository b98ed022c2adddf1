"""The extraction pipeline: capture records in, exchanges out, with the accounting.

`Extractor` is the pure core (records in, exchanges out); `read_capture` is the thin shell
that turns a path, a gzip file or stdin into records. Every packet and every stream is
counted somewhere, so the manifest can say where each captured byte went.
"""
from __future__ import annotations

import gzip
import ipaddress
import os
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol, TypeVar

from .exchange import Exchange
from .http1 import DEFAULT_MAX_BODY
from .layers import decode, linktype_name
from .pairing import Context, HttpConnection
from .pcapfile import CaptureDecoder, CaptureError, NotACapture, Record, sniff_format
from .tcp import Reassembler

CHUNK = 1 << 20
T = TypeVar("T", covariant=True)


def parse_server(spec: str) -> tuple[bytes, int]:
    """`HOST:PORT` or `[V6]:PORT` → (packed address, port)."""
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).packed, int(port)
    except ValueError:
        raise ValueError(f"--server wants an IP address and port, like 10.0.0.7:8000, not {spec!r}") from None


class Extractor:
    """Packets to exchanges. Feed it records from any number of files, then `finish`."""

    def __init__(
        self,
        ports: Iterable[int] = (),
        servers: Iterable[tuple[bytes, int]] = (),
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = 300.0,
    ) -> None:
        self.ctx = Context(ports=frozenset(ports), servers=frozenset(servers), max_body=max_body)
        ctx = self.ctx
        self.reasm = Reassembler(lambda conn: HttpConnection(conn, ctx), idle_timeout)
        self.packets = 0
        self.linktypes: Counter[int] = Counter()
        self.not_tcp: Counter[str] = Counter()
        self.exchanges = 0
        self.flags: Counter[str] = Counter()

    def feed(self, records: list[Record]) -> list[Exchange]:
        """Process a batch of records; return the exchanges they completed."""
        segment = self.reasm.segment
        not_tcp = self.not_tcp
        lts = self.linktypes
        last_lt = -1
        run = 0
        for ts, lt, data, orig in records:
            if lt != last_lt:
                if run:
                    lts[last_lt] += run
                last_lt, run = lt, 0
            run += 1
            seg = decode(lt, data, orig)
            if type(seg) is str:
                not_tcp[seg] += 1
            else:
                segment(ts, seg)  # type: ignore[arg-type]
        if run:
            lts[last_lt] += run
        self.packets += len(records)
        return self._drain()

    def finish(self) -> list[Exchange]:
        """End of all input: close every connection and return what that completes."""
        self.reasm.flush()
        return self._drain()

    def _drain(self) -> list[Exchange]:
        out = self.ctx.out
        if not out:
            return []
        self.ctx.out = []
        self.exchanges += len(out)
        flags = self.flags
        for ex in out:
            if ex.flags:
                flags.update(ex.flags)
        return out

    def counts(self) -> dict[str, object]:
        """The manifest's accounting section."""
        ctx = self.ctx
        st = self.reasm.stats
        return {
            "packets": self.packets,
            "packets_by_linktype": {linktype_name(k): v for k, v in sorted(self.linktypes.items())},
            "not_tcp": dict(sorted(self.not_tcp.items())),
            "tcp_connections": st.connections,
            "http_connections": ctx.http_connections,
            "non_http_connections": dict(sorted(ctx.non_http.items())),
            "exchanges": self.exchanges,
            "exchanges_by_flag": dict(sorted(self.flags.items())),
            "requests_without_response": self.flags["no_response"],
            "responses_without_request": self.flags["no_request"],
            "parse_errors": dict(sorted(ctx.parse_errors.items())),
            "bytes_skipped_resync": ctx.skipped_bytes,
            "tcp": {k: v for k, v in st.as_dict().items() if k != "connections"},
        }


@dataclass
class InputReport:
    """What reading one input file produced, for the manifest and the user."""

    path: str
    format: str | None = None
    compressed: bool = False
    records: int = 0
    bytes: int = 0
    truncated_bytes: int = 0
    skipped_blocks: int = 0  # pcapng blocks of types that hold no packets for us
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def _open(path: str) -> tuple[BinaryIO, bytes, bool]:
    """Open a path or '-' and return the stream, its first bytes, and whether it was gzipped."""
    raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    head = _read(raw, 4)
    if sniff_format(head) == "gzip":
        gz = gzip.GzipFile(fileobj=_Prefixed(head, raw))  # type: ignore[arg-type]
        try:
            first = _read(gz, 4)  # type: ignore[arg-type]
        except (OSError, EOFError, zlib.error) as e:
            raise NotACapture(f"{path}: gzip data is corrupt ({e})") from None
        return gz, first, True  # type: ignore[return-value]
    return raw, head, False


def _read(f: BinaryIO, n: int) -> bytes:
    read1 = getattr(f, "read1", None)
    return read1(n) if read1 is not None else f.read(n)


class _Prefixed:
    """A stream with some already-read bytes put back in front (stdin cannot seek)."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self.head = head
        self.f = f

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.f.read(n)
        if n < 0:
            h, self.head = self.head, b""
            return h + self.f.read()
        h, self.head = self.head[:n], self.head[n:]
        return h + self.f.read(n - len(h)) if n > len(h) else h


class Decoder(Protocol[T]):
    """What read_capture drives: CaptureDecoder, or the native engine (native_extract)."""

    records: int
    unknown_blocks: int
    error: str | None

    def feed(self, data: bytes) -> T | None: ...  # a batch, or nothing new (falsy)
    def leftover(self) -> int: ...


def read_capture(path: str, report: InputReport,
                 decoder: Callable[[], Decoder[T]] = CaptureDecoder) -> Iterator[T]:  # type: ignore[assignment]
    """Yield batches of records (or what `decoder` makes of them) from one input, recording
    trouble in `report`.

    Raises NotACapture when the input is not a capture at all. A corrupt record mid-file ends
    the file (report.error); a truncated last record is a warning: what came before is used.
    """
    f, head, compressed = _open(path)
    report.compressed = compressed
    try:
        fmt = sniff_format(head)
        if fmt not in ("pcap", "pcapng"):
            raise NotACapture(f"{path} is not a pcap or pcapng file")
        report.format = fmt
        dec = decoder()
        data = head
        while True:
            try:
                recs = dec.feed(data)
            except CaptureError as e:
                report.error = f"{path}: {e}; stopped reading this file"
                report.records = dec.records
                return
            if recs:
                yield recs
            if dec.error is not None:
                report.error = f"{path}: {dec.error}; stopped reading this file"
                report.records = dec.records
                return
            report.bytes += len(data)
            try:
                data = _read(f, CHUNK)
            except (OSError, EOFError, zlib.error) as e:
                report.error = f"{path}: read failed after {report.bytes} bytes ({e}); kept what came before"
                report.records = dec.records
                return
            if not data:
                break
        report.records = dec.records
        report.skipped_blocks = dec.unknown_blocks
        left = dec.leftover()
        if left:
            report.truncated_bytes = left
            report.warnings.append(
                f"{path}: last record truncated ({left} bytes ignored); {dec.records} records used"
            )
    finally:
        if path != "-":
            f.close()


def input_size(path: str) -> int | None:
    try:
        return os.path.getsize(path) if path != "-" else None
    except OSError:
        return None
