"""Capture-file decoding: pcap and pcapng bytes in, packet records out (sans-I/O).

The decoder is fed arbitrary chunks (a file read, a pipe from `tcpdump -w -`) and returns
whole records; it never touches a file. Truncation and corruption are told apart because
users need different answers: a truncated last record is normal for a capture that is still
being written or was killed (use everything before it), while a nonsense length in the middle
means the rest of the file cannot be trusted (stop, keep what was read).
"""
from __future__ import annotations

import struct
from typing import NamedTuple

# A record is (timestamp seconds, link type, captured bytes, original length).
Record = tuple[float, int, bytes, int]

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# libpcap refuses records larger than this (MAXIMUM_SNAPLEN); anything larger is corruption.
MAX_RECORD = 262144
MAX_BLOCK = 16 * 1024 * 1024

_PCAP_FIELDS = {e: struct.Struct(e + "IIII") for e in "<>"}
_U32 = {e: struct.Struct(e + "I") for e in "<>"}
_U16 = {e: struct.Struct(e + "H") for e in "<>"}
_EPB = {e: struct.Struct(e + "IIIII") for e in "<>"}
# The smallest length each block type can have (header, fixed fields, trailing length).
_MIN_BLOCK = {6: 32, 2: 32, 3: 16, 1: 20, 0x0A0D0D0A: 28}


class CaptureError(Exception):
    """The bytes cannot be read as a capture past this point."""


class NotACapture(CaptureError):
    """The first bytes are neither a pcap nor a pcapng header."""


class Interface(NamedTuple):
    linktype: int
    tsunit: float  # seconds per timestamp tick
    snaplen: int


def sniff_format(head: bytes) -> str | None:
    """'pcap', 'pcapng', 'gzip' or None, from a file's first four bytes."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if head[:4] == PCAPNG_SHB:
        return "pcapng"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return None


class CaptureDecoder:
    """Incremental decoder for one capture stream (pcap or pcapng, chosen by its magic)."""

    def __init__(self) -> None:
        self._buf = b""
        self._fmt: str | None = None
        self._endian = "<"
        self._tsunit = 1e-6
        self._linktype = 0
        self.snaplen = 0
        self.interfaces: list[Interface] = []
        self.records = 0
        self.bytes_consumed = 0
        self.unknown_blocks = 0
        self.error: str | None = None  # set once corruption is found; nothing more is decoded


    def feed(self, data: bytes) -> list[Record]:
        """Decode as many whole records as `data` completes; keep the remainder.

        At corrupt data the records before it are returned and `error` is set; a further
        feed raises CaptureError.
        """
        if self.error is not None:
            raise CaptureError(self.error)
        buf = self._buf + data if self._buf else data
        if self._fmt is None:
            if len(buf) < 24:
                self._buf = buf
                return []
            off = self._start(buf)
        else:
            off = 0
        out: list[Record] = []
        try:
            if self._fmt == "pcap":
                off = self._pcap_records(buf, off, out)
            else:
                off = self._pcapng_blocks(buf, off, out)
        except CaptureError as e:
            if not out:
                raise
            self.error = str(e)
            self.records += len(out)
            self._buf = b""
            return out
        self.bytes_consumed += off
        self._buf = buf[off:]
        self.records += len(out)
        return out

    def leftover(self) -> int:
        """Bytes of an incomplete record at end of input (a truncated file when nonzero)."""
        return len(self._buf)

    # -- pcap -------------------------------------------------------------------------
    def _start(self, buf: bytes) -> int:
        magic = buf[:4]
        if magic in PCAP_MAGICS:
            self._fmt = "pcap"
            self._endian, self._tsunit = PCAP_MAGICS[magic]
            snaplen, network = struct.unpack_from(self._endian + "II", buf, 16)
            # The upper bits of `network` carry FCS length flags (pcap-linktype(7)).
            self._linktype = network & 0x0FFFFFFF
            self.snaplen = snaplen
            self.interfaces = [Interface(self._linktype, self._tsunit, snaplen)]
            return 24
        if magic == PCAPNG_SHB:
            self._fmt = "pcapng"
            return 0
        raise NotACapture("not a pcap or pcapng file")

    def _pcap_records(self, buf: bytes, off: int, out: list[Record]) -> int:
        unpack = _PCAP_FIELDS[self._endian].unpack_from
        unit = self._tsunit
        lt = self._linktype
        n = len(buf)
        limit = max(MAX_RECORD, self.snaplen)
        append = out.append
        while off + 16 <= n:
            sec, frac, incl, orig = unpack(buf, off)
            if incl > limit:
                raise CaptureError(
                    f"corrupt record at byte {self.bytes_consumed + off}: captured length {incl}"
                )
            end = off + 16 + incl
            if end > n:
                break
            append((sec + frac * unit, lt, buf[off + 16 : end], orig))
            off = end
        return off

    # -- pcapng -----------------------------------------------------------------------
    def _pcapng_blocks(self, buf: bytes, off: int, out: list[Record]) -> int:
        n = len(buf)
        while off + 12 <= n:
            if buf[off : off + 4] == PCAPNG_SHB:
                bom = buf[off + 8 : off + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    self._endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    self._endian = ">"
                else:
                    raise CaptureError(f"corrupt section header at byte {self.bytes_consumed + off}")
            e = self._endian
            btype, blen = struct.unpack_from(e + "II", buf, off)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise CaptureError(
                    f"corrupt block at byte {self.bytes_consumed + off}: length {blen}"
                )
            if off + blen > n:
                break
            body = off + 8
            if blen < _MIN_BLOCK.get(btype, 12):
                raise CaptureError(
                    f"corrupt block at byte {self.bytes_consumed + off}: type {btype} cannot be {blen} bytes"
                )
            if btype == 6:  # Enhanced Packet Block
                iface, hi, lo, cap, orig = _EPB[e].unpack_from(buf, body)
                if cap > blen - 32:
                    raise CaptureError(f"corrupt packet block at byte {self.bytes_consumed + off}")
                ifc = self._iface(iface, off)
                out.append(
                    ((hi << 32 | lo) * ifc.tsunit, ifc.linktype, buf[body + 20 : body + 20 + cap], orig)
                )
            elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
                orig = _U32[e].unpack_from(buf, body)[0]
                ifc = self._iface(0, off)
                cap = min(orig, blen - 16, ifc.snaplen or orig)
                out.append((0.0, ifc.linktype, buf[body + 4 : body + 4 + cap], orig))
            elif btype == 2:  # obsolete Packet Block
                iface = _U16[e].unpack_from(buf, body)[0]
                hi, lo, cap, orig = struct.unpack_from(e + "IIII", buf, body + 4)
                if cap > blen - 32:
                    raise CaptureError(f"corrupt packet block at byte {self.bytes_consumed + off}")
                ifc = self._iface(iface, off)
                out.append(
                    ((hi << 32 | lo) * ifc.tsunit, ifc.linktype, buf[body + 20 : body + 20 + cap], orig)
                )
            elif btype == 1:  # Interface Description Block
                self.interfaces.append(self._parse_idb(buf, body, off + blen - 4))
            elif btype == 0x0A0D0D0A:  # a new section: interfaces are per section
                self.interfaces = []
            else:
                self.unknown_blocks += 1
            off += blen
        return off

    def _iface(self, idx: int, off: int) -> Interface:
        try:
            return self.interfaces[idx]
        except IndexError:
            raise CaptureError(
                f"packet at byte {self.bytes_consumed + off} names interface {idx}, which was never described"
            ) from None

    def _parse_idb(self, buf: bytes, body: int, end: int) -> Interface:
        e = self._endian
        linktype, _, snaplen = struct.unpack_from(e + "HHI", buf, body)
        tsunit = 1e-6
        p = body + 8
        while p + 4 <= end:
            code, olen = struct.unpack_from(e + "HH", buf, p)
            if code == 0:
                break
            if code == 9 and olen >= 1:  # if_tsresol
                r = buf[p + 4]
                tsunit = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
            p += 4 + ((olen + 3) & ~3)
        return Interface(linktype, tsunit, snaplen)
