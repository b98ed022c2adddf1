"""Capture file names and the pcap/pcapng writer with tcpdump's rotation rules.

Both engines name files the same way, so the agent can follow, list and prune them without
knowing which engine wrote them. The names are what tcpdump itself produces for
`-w shadowtap-%Y%m%dT%H%M%SZ.pcap` (strftime at each time rotation, in UTC so that a clock
change to or from summer time can never reuse a name), with tcpdump's size-rotation counter
appended: `…Z.pcap`, `…Z.pcap1`, `…Z.pcap2`, then `…(next second)Z.pcap` after a -G rotation.

`RotatingWriter` is the scapy engine's file writer. It copies tcpdump's semantics exactly: a
size rotation happens before writing a packet when the file already holds more than -C bytes
(so a file exceeds -C by at most one record), a time rotation at the first packet -G whole
seconds after the file was opened. Each batch of records is written with whole records only,
so a killed engine leaves a file that is valid up to its last whole packet.
"""
from __future__ import annotations

import errno
import os
import re
import struct
import time
from typing import Callable

TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^shadowtap-(\d{8}T\d{6}Z)\.(pcap|pcapng)(\d*)$")

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_NAMES = {LINKTYPE_ETHERNET: "EN10MB (Ethernet)", LINKTYPE_RAW: "RAW (Raw IP)"}


def template(fmt: str) -> str:
    """The strftime template tcpdump gets with -G (fmt is 'pcap' or 'pcapng')."""
    return f"shadowtap-{TIME_FORMAT}.{fmt}"


def file_name(fmt: str, when: float, seq: int = 0) -> str:
    """The name of the file opened at `when` (tcpdump: no number for the first of a window)."""
    name = time.strftime(f"shadowtap-{TIME_FORMAT}.{fmt}", time.gmtime(when))
    return name + str(seq) if seq else name


def sort_key(name: str) -> tuple[str, int] | None:
    """Capture order of a file written by either engine; None for any other file."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return m.group(1), int(m.group(3) or 0)


# -- formats ------------------------------------------------------------------------------
def pcap_header(linktype: int, snaplen: int) -> bytes:
    """A nanosecond pcap header (magic a1b23c4d): the kernel gives ns timestamps, keep them."""
    return struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype)


_PCAP_REC = struct.Struct("<IIII")


def pcap_record(ts_ns: int, data: bytes, orig: int) -> bytes:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return _PCAP_REC.pack(sec, ns, len(data), orig) + data


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng_header(linktype: int, snaplen: int, ifname: str) -> bytes:
    """Section header + one interface (if_name, if_tsresol = 9: nanoseconds)."""
    end = b"\0\0\0\0"
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(4, b"shadowtap capture") + end
    idb = (struct.pack("<HHI", linktype, 0, snaplen) + _option(2, ifname.encode()) + _option(9, b"\x09")
           + end)
    return _block(0x0A0D0D0A, shb) + _block(1, idb)


_EPB = struct.Struct("<IIIIIII")


def pcapng_record(ts_ns: int, data: bytes, orig: int) -> bytes:
    pad = -len(data) % 4
    n = 32 + len(data) + pad
    return (_EPB.pack(6, n, 0, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), orig) + data
            + b"\0" * pad + struct.pack("<I", n))


# -- the writer ---------------------------------------------------------------------------
class DiskFull(OSError):
    """ENOSPC while writing: the file was cut back to its last whole record."""


class RotatingWriter:
    """Writes records to rotated capture files in the current directory, mode 0600."""

    def __init__(self, fmt: str, linktype: int, snaplen: int, ifname: str = "",
                 size_limit: int | None = None, seconds: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if fmt == "pcapng":
            self._header = pcapng_header(linktype, snaplen, ifname)
            self._record = pcapng_record
        else:
            self._header = pcap_header(linktype, snaplen)
            self._record = pcap_record
        self.fmt = fmt
        self.size_limit = size_limit
        self.seconds = seconds
        self.clock = clock
        self.window = int(clock())  # tcpdump's Gflag_time: whole seconds
        self.seq = 0
        self.fd = -1
        self.size = 0
        self.name = ""
        self.names: list[str] = []
        self._open()

    def _open(self) -> None:
        self.name = file_name(self.fmt, self.window, self.seq)
        self.fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.size = 0
        self.names.append(self.name)
        self._write([self._header])

    def _rotate(self, by_time: bool) -> None:
        os.close(self.fd)
        self.fd = -1
        if by_time:
            self.seq = 0
        else:
            self.seq += 1
        self._open()

    def write(self, records: list[tuple[int, bytes, int]]) -> None:
        """Append (timestamp ns, bytes, original length) records, rotating as tcpdump would."""
        parts: list[bytes] = []
        pending = 0
        record = self._record
        limit = self.size_limit
        for ts, data, orig in records:
            if self.seconds is not None:
                now = int(self.clock())
                if now - self.window >= self.seconds:
                    self._write(parts)
                    parts, pending = [], 0
                    self.window = now
                    self._rotate(by_time=True)
            if limit is not None and self.size + pending > limit:
                self._write(parts)
                parts, pending = [], 0
                self._rotate(by_time=False)
            rec = record(ts, data, orig)
            parts.append(rec)
            pending += len(rec)
        self._write(parts)

    def _write(self, parts: list[bytes]) -> None:
        if not parts:
            return
        buf = memoryview(b"".join(parts))
        start = self.size
        try:
            while buf:
                n = os.write(self.fd, buf)
                buf = buf[n:]
                self.size += n
        except OSError as e:
            if e.errno == errno.ENOSPC:
                # Keep the file valid: drop the partial batch rather than leave half a record.
                try:
                    os.ftruncate(self.fd, start)
                    self.size = start
                except OSError:
                    pass
                raise DiskFull(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name) from None
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
