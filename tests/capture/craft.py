"""Crafted TCP conversations (scapy) for testing the cores with bytes alone.

A `Conv` tracks both sides' sequence numbers so a test can say what happened on the wire —
"the client sent this, the server's next segment was lost, the capture saw them out of
order" — and get exactly those packets back.
"""
from __future__ import annotations

import struct
from typing import Iterable

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from capture.exchange import Exchange
from capture.extract import Extractor

Pkt = tuple[float, bytes]


class Conv:
    """One TCP connection between a client and a server, as packets."""

    def __init__(self, cport: int = 40000, sport: int = 80, client: str = "10.0.0.1",
                 server: str = "10.0.0.2", t0: float = 1000.0, v6: bool = False,
                 cseq: int = 1000, sseq: int = 5000) -> None:
        self.cport, self.sport = cport, sport
        self.client, self.server = client, server
        self.v6 = v6
        self.t = t0
        self.cseq, self.sseq = cseq, sseq
        self.pkts: list[Pkt] = []

    def _ip(self, from_client: bool) -> Packet:
        a, b = (self.client, self.server) if from_client else (self.server, self.client)
        return IPv6(src=a, dst=b) if self.v6 else IP(src=a, dst=b)

    def packet(self, from_client: bool, data: bytes = b"", flags: str = "PA", seq: int | None = None,
               ack: int | None = None) -> Pkt:
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        s = seq if seq is not None else (self.cseq if from_client else self.sseq)
        a = ack if ack is not None else (self.sseq if from_client else self.cseq)
        # Explicit MACs: left empty, scapy would resolve them by ARP/ND on the real network.
        macs = ("02:00:00:00:00:01", "02:00:00:00:00:02")
        src, dst = macs if from_client else macs[::-1]
        p = Ether(src=src, dst=dst) / self._ip(from_client) / TCP(sport=sp, dport=dp, seq=s & 0xFFFFFFFF,
                                                  ack=a & 0xFFFFFFFF, flags=flags)
        if data:
            p = p / Raw(data)
        self.t += 0.001
        return (self.t, bytes(p))

    def handshake(self) -> "Conv":
        self.pkts.append(self.packet(True, flags="S", ack=0))
        self.cseq += 1
        self.pkts.append(self.packet(False, flags="SA"))
        self.sseq += 1
        self.pkts.append(self.packet(True, flags="A"))
        return self

    def c(self, data: bytes, lost: bool = False, flags: str = "PA") -> Pkt:
        """The client sends `data`; `lost=True` advances the sequence without capturing it."""
        p = self.packet(True, data, flags)
        self.cseq += len(data)
        if not lost:
            self.pkts.append(p)
        return p

    def s(self, data: bytes, lost: bool = False, flags: str = "PA") -> Pkt:
        p = self.packet(False, data, flags)
        self.sseq += len(data)
        if not lost:
            self.pkts.append(p)
        return p

    def ack_c(self) -> None:
        """The client acknowledges everything the server sent so far."""
        self.pkts.append(self.packet(True, flags="A"))

    def ack_s(self) -> None:
        self.pkts.append(self.packet(False, flags="A"))

    def fin(self) -> "Conv":
        self.pkts.append(self.packet(True, flags="FA"))
        self.cseq += 1
        self.pkts.append(self.packet(False, flags="FA"))
        self.sseq += 1
        self.pkts.append(self.packet(True, flags="A"))
        return self


def pcap_bytes(pkts: Iterable[Pkt], linktype: int = 1, nano: bool = False, big: bool = False,
               snaplen: int = 262144) -> bytes:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in pkts:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        cap = data[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(cap), len(data)) + cap)
    return b"".join(out)


def extract(pkts: Iterable[Pkt], linktype: int = 1, **kw: object) -> list[Exchange]:
    ex = Extractor(**kw)  # type: ignore[arg-type]
    out = ex.feed([(ts, linktype, data, len(data)) for ts, data in pkts])
    return out + ex.finish()


def get(path: str = "/", host: str = "h", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def ok(body: bytes = b"hello", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
