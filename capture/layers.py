"""Packet decoding: link layer, tunnels and IP down to a TCP segment (sans-I/O).

One function, `decode`, because it is the per-packet hot path: a call per layer would cost
more than the work. It returns a `Segment` tuple or, for anything that is not TCP, a short
reason string that the manifest counts. Checksums are never checked: captures taken on a veth
or a NIC with offloads carry invalid ones, and segments may be far larger than the MTU.
"""
from __future__ import annotations

import struct

# (src ip bytes, dst ip bytes, src port, dst port, seq, ack, tcp flags, payload, bytes not captured)
Segment = tuple[bytes, bytes, int, int, int, int, int, bytes, int]

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

LINKTYPE_NAMES = {
    0: "null",
    1: "ethernet",
    101: "raw",
    104: "c-hdlc",
    108: "loop",
    113: "linux-sll",
    127: "ieee802.11-radiotap",
    105: "ieee802.11",
    129: "arcnet-linux",
    228: "ipv4",
    229: "ipv6",
    239: "nflog",
    276: "linux-sll2",
}

VXLAN_PORT = 4789
TEREDO_PORT = 3544

_TCP = struct.Struct("!HHIIBB")
_H = struct.Struct("!H")
_LEH = struct.Struct("<H")
_IPV6_EXT = {0, 43, 44, 60, 51}
_MAX_DEPTH = 4  # tunnels inside tunnels: bounded so a crafted packet cannot recurse forever


def linktype_name(lt: int) -> str:
    return LINKTYPE_NAMES.get(lt, f"linktype-{lt}")


def decode(linktype: int, data: bytes, origlen: int) -> Segment | str:
    """Decode one captured frame to a TCP segment, or return why it is not one."""
    if linktype == 1:
        return _ether(data, 0, origlen, 0)
    if linktype in (101, 228, 229, 12, 14):
        return _ip(data, 0, origlen, 0)
    if linktype == 113:  # Linux cooked v1: protocol at 14
        return _ethertype(_H.unpack_from(data, 14)[0], data, 16, origlen, 0) if len(data) >= 16 else "short"
    if linktype == 276:  # Linux cooked v2: protocol at 0
        return _ethertype(_H.unpack_from(data, 0)[0], data, 20, origlen, 0) if len(data) >= 20 else "short"
    if linktype == 0 or linktype == 108:
        return _null(data, origlen)
    if linktype == 104:  # Cisco HDLC: address, control, protocol
        return _ethertype(_H.unpack_from(data, 2)[0], data, 4, origlen, 0) if len(data) >= 4 else "short"
    if linktype == 239:
        return _nflog(data, origlen)
    if linktype == 127:
        return _radiotap(data, origlen)
    return "linktype:" + linktype_name(linktype)


def _null(data: bytes, origlen: int) -> Segment | str:
    if len(data) < 5:
        return "short"
    fam = data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24
    if fam > 0xFFFF:  # written in the other byte order
        fam = data[3] | data[2] << 8
    if fam == 2 or fam in (24, 28, 30):
        return _ip(data, 4, origlen, 0)
    return "non-ip"


def _nflog(data: bytes, origlen: int) -> Segment | str:
    p = 4
    n = len(data)
    while p + 4 <= n:
        tlen, ttype = struct.unpack_from("<HH", data, p)
        if tlen < 4:
            return "corrupt-nflog"
        if ttype == 9:  # NFULA_PAYLOAD
            return _ip(data[p + 4 : p + tlen], 0, origlen, 0)
        p += (tlen + 3) & ~3
    return "non-ip"


def _radiotap(data: bytes, origlen: int) -> Segment | str:
    if len(data) < 4:
        return "short"
    p = _LEH.unpack_from(data, 2)[0]
    if len(data) < p + 24:
        return "short"
    fc0, fc1 = data[p], data[p + 1]
    if (fc0 >> 2) & 3 != 2:  # not a data frame
        return "non-ip"
    hdr = 30 if (fc1 & 3) == 3 else 24
    if fc0 & 0x80:  # QoS data
        hdr += 2
    q = p + hdr
    if data[q : q + 6] != b"\xaa\xaa\x03\x00\x00\x00":
        return "non-ip"
    if len(data) < q + 8:
        return "short"
    return _ethertype(_H.unpack_from(data, q + 6)[0], data, q + 8, origlen, 0)


def _ether(data: bytes, off: int, origlen: int, depth: int) -> Segment | str:
    if len(data) < off + 14:
        return "short"
    return _ethertype(data[off + 12] << 8 | data[off + 13], data, off + 14, origlen, depth)


def _ethertype(et: int, data: bytes, off: int, origlen: int, depth: int) -> Segment | str:
    while et in (0x8100, 0x88A8, 0x9100):  # 802.1Q / QinQ
        if len(data) < off + 4:
            return "short"
        et = data[off + 2] << 8 | data[off + 3]
        off += 4
    if et == 0x0800 or et == 0x86DD:
        return _ip(data, off, origlen, depth)
    if et == 0x8847 or et == 0x8848:  # MPLS: labels until bottom of stack
        while off + 4 <= len(data):
            bos = data[off + 2] & 1
            off += 4
            if bos:
                return _ip(data, off, origlen, depth)
        return "short"
    if et == 0x8864:  # PPPoE session: 6-byte header, then the PPP protocol
        if len(data) < off + 8:
            return "short"
        if data[off + 6] & 1:  # protocol-field compression: one byte (RFC 1661 6.5)
            proto, start = data[off + 6], off + 7
        else:
            proto, start = data[off + 6] << 8 | data[off + 7], off + 8
        if proto in (0x21, 0x57):
            return _ip(data, start, origlen, depth)
        return "non-ip"
    if et == 0x0806:
        return "arp"
    return "non-ip"


def _ip(data: bytes, off: int, origlen: int, depth: int) -> Segment | str:
    if len(data) < off + 20:
        return "short"
    v = data[off] >> 4
    if v == 4:
        ihl = (data[off] & 0x0F) * 4
        total = data[off + 2] << 8 | data[off + 3]
        if data[off + 6] & 0x3F or data[off + 7]:  # MF flag or fragment offset
            return "ip-fragment"
        proto = data[off + 9]
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        start = off + ihl
        # total == 0 happens with TSO on the sending host: trust the captured length then.
        end = off + total if total else len(data) + (origlen - len(data))
    elif v == 6:
        if len(data) < off + 40:
            return "short"
        plen = data[off + 4] << 8 | data[off + 5]
        proto = data[off + 6]
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        start = off + 40
        end = start + plen if plen else len(data) + (origlen - len(data))
        while proto in _IPV6_EXT:
            if len(data) < start + 8:
                return "short"
            if proto == 44:
                if (data[start + 2] << 8 | data[start + 3]) & 0xFFF9:
                    return "ip-fragment"
                nxt, hlen = data[start], 8
            elif proto == 51:
                nxt, hlen = data[start], (data[start + 1] + 2) * 4
            else:
                nxt, hlen = data[start], (data[start + 1] + 1) * 8
            proto = nxt
            start += hlen
    else:
        return "non-ip"
    if proto == 6:
        return _tcp(data, start, end, src, dst)
    if depth < _MAX_DEPTH:
        if proto == 17:
            return _udp(data, start, end, origlen, depth)
        if proto == 4 or proto == 41:  # IP-in-IP, 6in4
            return _ip(data, start, origlen, depth + 1)
        if proto == 47:
            return _gre(data, start, origlen, depth)
    return "udp" if proto == 17 else "icmp" if proto in (1, 58) else f"ip-proto-{proto}"


def _tcp(data: bytes, start: int, end: int, src: bytes, dst: bytes) -> Segment | str:
    if len(data) < start + 20:
        return "short"
    sport, dport, seq, ack, doff, flags = _TCP.unpack_from(data, start)
    pstart = start + (doff >> 4) * 4
    have = len(data)
    if end <= have:
        return (src, dst, sport, dport, seq, ack, flags, data[pstart:end], 0)
    # Snaplen cut the payload: say how much is missing so the stream records a gap (none when
    # the cut fell inside a TCP header that claims to reach past the IP end: nothing to miss).
    return (src, dst, sport, dport, seq, ack, flags, data[pstart:have], max(0, end - max(have, pstart)))


def _udp(data: bytes, start: int, end: int, origlen: int, depth: int) -> Segment | str:
    if len(data) < start + 8:
        return "short"
    sport = data[start] << 8 | data[start + 1]
    dport = data[start + 2] << 8 | data[start + 3]
    p = start + 8
    if dport == VXLAN_PORT or sport == VXLAN_PORT:
        if len(data) >= p + 8 and data[p] & 0x08:
            return _ether(data, p + 8, origlen, depth + 1)
    elif dport == TEREDO_PORT or sport == TEREDO_PORT:
        # Teredo: optional authentication (0x0001) and origin indication (0x0000) headers.
        while len(data) >= p + 2 and data[p] == 0:
            if data[p + 1] == 1:
                if len(data) < p + 4:
                    return "short"
                p += 13 + data[p + 2] + data[p + 3]
            elif data[p + 1] == 0:
                p += 8
            else:
                break
        if len(data) > p and data[p] >> 4 == 6:
            return _ip(data, p, origlen, depth + 1)
    return "udp"


def _gre(data: bytes, start: int, origlen: int, depth: int) -> Segment | str:
    if len(data) < start + 4:
        return "short"
    flags = data[start]
    proto = data[start + 2] << 8 | data[start + 3]
    p = start + 4
    if flags & 0x80:  # checksum present
        p += 4
    if flags & 0x20:  # key present
        p += 4
    if flags & 0x10:  # sequence present
        p += 4
    if proto == 0x88BE:  # ERSPAN type II: 8-byte header, then Ethernet
        return _ether(data, p + 8, origlen, depth + 1)
    if proto == 0x22EB:  # ERSPAN type III: 12 bytes (+8 with the platform sub-header)
        return _ether(data, p + (20 if len(data) > p + 11 and data[p + 11] & 1 else 12), origlen, depth + 1)
    if proto == 0x6558:
        return _ether(data, p, origlen, depth + 1)
    return _ethertype(proto, data, p, origlen, depth + 1)
