"""Link layers, tunnels and IP down to TCP, on packets scapy builds."""
from __future__ import annotations

import struct

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from capture.layers import decode

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
SEG = TCP(sport=40000, dport=80, seq=7, ack=9, flags="PA") / Raw(b"GET / HTTP/1.1\r\n\r\n")
IP4 = IP(src="10.1.1.1", dst="10.1.1.2") / SEG


def check(seg: object, payload: bytes = b"GET / HTTP/1.1\r\n\r\n") -> None:
    assert isinstance(seg, tuple), seg
    assert (seg[2], seg[3], seg[4], seg[5]) == (40000, 80, 7, 9)
    assert seg[7] == payload and seg[8] == 0


@pytest.mark.parametrize("frame", [
    Ether(**MAC) / IP4,
    Ether(**MAC) / Dot1Q(vlan=5) / IP4,
    Ether(**MAC) / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP4,
    Ether(**MAC) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / IP4,
    Ether(**MAC) / PPPoE(sessionid=1) / PPP(proto=0x21) / IP4,
    Ether(**MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=5000, dport=4789) / VXLAN(vni=7) / Ether(**MAC) / IP4,
    Ether(**MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / GRE(proto=0x0800) / IP4,
    Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / SEG,
], ids=["ether", "vlan", "qinq", "mpls", "pppoe", "vxlan", "gre", "ipv6-ext"])
def test_ethernet_family(frame: object) -> None:
    check(decode(1, bytes(frame), len(bytes(frame))))  # type: ignore[arg-type]


def test_other_link_types() -> None:
    ip = bytes(IP4)
    check(decode(101, ip, len(ip)))
    check(decode(228, ip, len(ip)))
    check(decode(113, bytes(CookedLinux(proto=0x0800) / IP4), 0))
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\0" * 8) + ip
    check(decode(276, sll2, len(sll2)))
    check(decode(0, struct.pack("<I", 2) + ip, 0))
    check(decode(0, struct.pack(">I", 2) + ip, 0))
    check(decode(104, b"\x0f\x00\x08\x00" + ip, 0))


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(Ether(**MAC) / IP(src="10.1.1.1", dst="10.1.1.2") / TCP(sport=40000, dport=80, seq=7, ack=9, flags="A"))
    seg = decode(1, frame + b"\0" * 6, len(frame) + 6)
    assert isinstance(seg, tuple) and seg[7] == b""


def test_snaplen_cut_reports_missing_bytes() -> None:
    frame = bytes(Ether(**MAC) / IP4)
    seg = decode(1, frame[:-5], len(frame))
    assert isinstance(seg, tuple)
    assert seg[7] == b"GET / HTTP/1.1\r\n\r\n"[:-5]
    assert seg[8] == 5


def test_reasons_for_what_is_not_tcp() -> None:
    assert decode(1, bytes(Ether(**MAC) / ARP()), 42) == "arp"
    udp = bytes(Ether(**MAC) / IP() / UDP(sport=1, dport=53) / Raw(b"x"))
    assert decode(1, udp, len(udp)) == "udp"
    frag = bytes(Ether(**MAC) / IP(flags="MF", frag=0) / Raw(b"x" * 20))
    assert decode(1, frag, len(frag)) == "ip-fragment"
    assert decode(147, b"\0" * 40, 40) == "linktype:linktype-147"
