"""The native engine (capture._native, C) against its specification, the Python modules.

Every part is compared on the same input: pcapfile.CaptureDecoder with _native.Decoder,
layers.decode with _native.decode (every packet of the corpus and the fixtures, crafted edge
cases, and seeded mutations of real packets), and the whole engine: `extract --jsonl` must write
byte-identical lines and equal manifest counts with either engine. The Python modules have their
own tests of what the answers should be; here the answers only have to be the same.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

import capture.pcapfile
from capture import cli
from capture.exchange import json_line
from capture.extract import Extractor, InputReport, read_capture
from capture.layers import decode
from capture.pcapfile import CaptureDecoder, CaptureError, NotACapture
from tests.capture.craft import Conv, get, ok, pcap_bytes

# A build with mypyc has the native engine too (setup.py); only SHADOWTAP_PURE=1 has neither.
if capture.pcapfile.__file__.endswith(".py"):
    _native = pytest.importorskip("capture._native", reason="a pure-Python install (SHADOWTAP_PURE=1)")
else:
    from capture import _native  # type: ignore[attr-defined]
from capture.native_extract import NativeExtractor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("SHADOWTAP_CORPUS", REPO.parent / "shared" / "corpus")) / "pcaps"
FILES = sorted(CORPUS.glob("*")) + sorted((REPO / "fixtures").glob("*.pcap"))
IDS = [f.name for f in FILES]
CLI = [sys.executable, "-m", "capture.cli"]


def test_the_corpus_and_fixtures_are_there() -> None:
    assert len(FILES) > 100, f"expected the corpus at {CORPUS}"


def capture_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


# -- pcap.c: CaptureDecoder ------------------------------------------------------------------
def run_decoder(dec: Any, chunks: list[bytes]) -> list[object]:
    """Everything a decoder shows, step by step: records or the exception, then its state."""
    seen: list[object] = []
    for c in chunks:
        try:
            seen.append(dec.feed(c))
        except CaptureError as e:
            seen.append((type(e).__name__, str(e)))
        seen.append((dec.records, dec.unknown_blocks, dec.leftover(), dec.error))
    return seen


def same_decoding(chunks: list[bytes]) -> list[object]:
    py = run_decoder(CaptureDecoder(), chunks)
    assert run_decoder(_native.Decoder(), chunks) == py
    return py


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_records_and_decoding_match_python_on_every_packet(path: Path) -> None:
    data = capture_bytes(path)
    py = same_decoding([data])
    same_decoding(pieces(data, 4093))
    recs = py[0]
    if not isinstance(recs, list):
        return
    assert recs == _native.read_records(data)
    for ts, lt, frame, orig in recs:
        assert _native.decode(lt, frame, orig) == decode(lt, frame, orig), (ts, frame.hex())


PKTS = [(1700000000.25, b"\x01" * 60), (1700000001.5, b"\x02" * 1514), (1700000002.000001, b"\x03" * 42),
        (4294967295.999999, b"\x04" * 70)]


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_byte_orders_resolutions_and_any_chunking(nano: bool, big: bool) -> None:
    data = pcap_bytes(PKTS, nano=nano, big=big)
    recs = same_decoding([data])[0]
    assert isinstance(recs, list) and len(recs) == 4
    for size in (1, 7, 24, 25, 100):
        same_decoding(pieces(data, size))


def test_pcap_truncation_corruption_and_not_a_capture() -> None:
    data = pcap_bytes(PKTS)
    same_decoding([data[:-10]])  # truncated last record: left over
    same_decoding([data[:20], data[20:23]])  # not even a header yet
    same_decoding([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])  # NotACapture
    same_decoding([b"GET / HT", b"TP/1.1\r\nHost: x\r\n\r\n", b"more"])
    bad = bytearray(data)
    struct.pack_into("<I", bad, 24 + 16 + 60 + 8, 10_000_000)  # the second record's length
    seen = same_decoding([bytes(bad), b"more"])
    assert seen[1][3] is not None and "corrupt record at byte 100" in seen[1][3]  # type: ignore[index]
    # corruption in the first record of a feed: raised at once, nothing kept sticky
    same_decoding(pieces(bytes(bad), 100) + [b"x"])
    big = pcap_bytes([(1.0, b"\x05" * 300_000)], snaplen=400_000)  # snaplen above MAX_RECORD
    assert len(same_decoding([big])[0]) == 1  # type: ignore[arg-type]
    fcs = bytearray(data)
    struct.pack_into("<I", fcs, 20, 1 | 0x10000000)  # FCS length bits above the link type
    assert {r[1] for r in same_decoding([bytes(fcs)])[0]} == {1}  # type: ignore[union-attr]


def block(btype: int, body: bytes, e: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def idb(lt: int, res: int | None = None, snaplen: int = 0, e: str = "<") -> bytes:
    opts = b""
    if res is not None:
        opts = struct.pack(e + "HHB3x", 9, 1, res) + struct.pack(e + "HH", 0, 0)
    return block(1, struct.pack(e + "HHI", lt, 0, snaplen) + opts, e)


def epb(iface: int, ticks: int, data: bytes, orig: int | None = None, e: str = "<") -> bytes:
    return block(6, struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                                len(data) if orig is None else orig) + data, e)


def spb(data: bytes, orig: int, e: str = "<") -> bytes:
    return block(3, struct.pack(e + "I", orig) + data, e)


def opb(iface: int, ticks: int, data: bytes, e: str = "<") -> bytes:
    return block(2, struct.pack(e + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data, e)


PCAPNG_CASES = {
    "interfaces": shb() + idb(1) + idb(113, 9) + idb(101, 0x80 | 20) + idb(228, 3)
    + epb(0, 1_700_000_000_500_000, b"a" * 20) + epb(1, 1_700_000_000_250_000_001, b"b" * 30)
    + epb(2, (1_700_000_000 << 20) + 12345, b"c" * 33, orig=99) + epb(3, 1_700_000_000_123, b"d" * 1),
    "big-endian": shb(">") + idb(1, 6, e=">") + epb(0, 1_700_000_000_123_456, b"x" * 21, e=">"),
    "simple-and-obsolete": shb() + idb(1, snaplen=10) + spb(b"s" * 40, 40) + spb(b"t" * 8, 200)
    + opb(0, 1_700_000_000_000_001, b"o" * 17) + block(5, b"\0" * 20) + block(0xBAD, b""),
    "sections": shb() + idb(1) + epb(0, 1, b"a" * 20) + shb(">") + idb(113, e=">") + epb(0, 2, b"b" * 20, e=">")
    + shb() + epb(0, 3, b"c" * 20),
    "unknown-interface": shb() + idb(1) + epb(0, 1, b"a" * 20) + epb(3, 2, b"b" * 20),
    "unknown-interface-first": shb() + epb(0, 1, b"a" * 20),
    "bad-bom": shb() + idb(1) + epb(0, 1, b"a" * 20) + b"\x0a\x0d\x0d\x0a" + b"\x1c\0\0\0" + b"\x01\x02\x03\x04" + b"\0" * 16,
    "bad-length": shb() + idb(1) + epb(0, 1, b"a" * 20) + struct.pack("<II", 6, 35) + b"\0" * 40,
    "huge-length": shb() + idb(1) + epb(0, 1, b"a" * 20) + struct.pack("<II", 6, 32 << 20) + b"\0" * 40,
    "too-short-for-type": shb() + idb(1) + epb(0, 1, b"a" * 20) + block(6, b"\0" * 12),
    "captured-past-block": shb() + idb(1) + epb(0, 1, b"a" * 20)
    + block(6, struct.pack("<IIIII", 0, 0, 0, 400, 400) + b"z" * 8),
    "truncated": (shb() + idb(1) + epb(0, 1, b"a" * 20) + epb(0, 2, b"b" * 50))[:-7],
}


@pytest.mark.parametrize("name", PCAPNG_CASES)
def test_pcapng_blocks_and_their_errors(name: str) -> None:
    data = PCAPNG_CASES[name]
    seen = same_decoding([data, b"\0" * 4])
    for size in (1, 12, 29, 64):
        same_decoding(pieces(data, size) + [b"\0" * 4])
    if name == "interfaces":
        assert [r[1] for r in seen[0]] == [1, 113, 101, 228]  # type: ignore[union-attr]


def test_decoder_fuzz_on_mutated_files() -> None:
    rng = random.Random(20261126)
    files = [capture_bytes(f)[:30_000] for f in FILES[::3]]
    for _ in range(400):
        data = bytearray(rng.choice(files))
        for _ in range(rng.randint(0, 3)):
            j = rng.randrange(len(data))
            data[j] = rng.randrange(256)
        chunks, p = [], 0
        while p < len(data):
            k = rng.choice([1, 13, 512, 4096, 1 << 20])
            chunks.append(bytes(data[p : p + k]))
            p += k
        same_decoding(chunks)


# -- layers.c: decode --------------------------------------------------------------------------
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
SEG = TCP(sport=40000, dport=80, seq=7, ack=9, flags="PA") / Raw(b"GET / HTTP/1.1\r\n\r\n")
IP4 = IP(src="10.1.1.1", dst="10.1.1.2") / SEG
IP6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / SEG


def _frames() -> dict[str, tuple[int, bytes, int | None]]:
    """name -> (linktype, frame, origlen or None for len(frame))."""
    ip4, ip6 = bytes(IP4), bytes(IP6)
    outer = IP(src="1.1.1.1", dst="2.2.2.2")
    f: dict[str, tuple[int, bytes, int | None]] = {
        "ether": (1, bytes(Ether(**MAC) / IP4), None),
        "vlan": (1, bytes(Ether(**MAC) / Dot1Q(vlan=5) / IP4), None),
        "qinq": (1, bytes(Ether(**MAC) / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP4), None),
        "mpls": (1, bytes(Ether(**MAC) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / IP4), None),
        "pppoe": (1, bytes(Ether(**MAC) / PPPoE(sessionid=1) / PPP(proto=0x21) / IP4), None),
        "pppoe-compressed": (1, bytes(Ether(**MAC, type=0x8864)) + b"\x11\0\0\x01\0\x20\x21" + ip4, None),
        "vxlan": (1, bytes(Ether(**MAC) / outer / UDP(sport=5000, dport=4789) / VXLAN(vni=7) / Ether(**MAC) / IP4), None),
        "gre": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x0800) / IP4), None),
        "gre-key-seq": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x0800, key_present=1, key=5, seqnum_present=1,
                                                           chksum_present=1)) + ip4, None),
        "gre-teb": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x6558) / Ether(**MAC) / IP4), None),
        "erspan2": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x88BE)) + b"\0" * 8 + bytes(Ether(**MAC) / IP4), None),
        "erspan3": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x22EB)) + b"\0" * 12 + bytes(Ether(**MAC) / IP4), None),
        "erspan3-platform": (1, bytes(Ether(**MAC) / outer / GRE(proto=0x22EB)) + b"\0" * 11 + b"\x01" + b"\0" * 8
                             + bytes(Ether(**MAC) / IP4), None),
        "ipip": (1, bytes(Ether(**MAC) / outer / IP4), None),
        "6in4": (1, bytes(Ether(**MAC) / outer / IP6), None),
        "teredo": (1, bytes(Ether(**MAC) / outer / UDP(sport=3544, dport=3544)) + b"\0\x01\x02\x01" + b"a" * 16
                   + b"\0\0" + b"\0" * 6 + ip6, None),
        "teredo-short": (1, bytes(Ether(**MAC) / outer / UDP(sport=3544, dport=9)) + b"\0\x01\x02", None),
        "too-deep": (1, bytes(Ether(**MAC) / outer / outer / outer / outer / outer / IP4), None),
        "ipv6-ext": (1, bytes(Ether(**MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
                              / IPv6ExtHdrDestOpt() / SEG), None),
        "ipv6-ah": (229, bytes(IPv6(src="::1", dst="::2", nh=51)) [:40] + bytes([6, 1, 0, 0]) + b"\0" * 8 + bytes(SEG), None),
        "ipv6-atomic-fragment": (229, bytes(IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment(nh=6) / SEG), None),
        "ipv6-fragment": (229, bytes(IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment(nh=6, offset=3) / SEG), None),
        "ipv6-no-plen": (229, bytes(IPv6(src="::1", dst="::2", plen=0) / SEG), 200),
        "ipv4-tso": (101, bytes(IP(src="10.1.1.1", dst="10.1.1.2", len=0) / SEG), 5000),
        "ipv4-options": (228, bytes(IP(src="10.1.1.1", dst="10.1.1.2", ihl=7, options=b"\x01" * 8) / SEG), None),
        "ipv4-fragment": (101, bytes(IP(src="1.1.1.1", dst="2.2.2.2", flags="MF") / Raw(b"x" * 20)), None),
        "snaplen-cut": (1, bytes(Ether(**MAC) / IP4)[:-5], len(bytes(Ether(**MAC) / IP4))),
        "header-past-cut": (101, bytes(IP(src="1.1.1.1", dst="2.2.2.2", len=60) / TCP(dataofs=15))[:48], 300),
        "padding": (1, bytes(Ether(**MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP()) + b"\0" * 6, None),
        "sll": (113, bytes(CookedLinux(proto=0x0800) / IP4), 0),
        "sll2": (276, struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\0" * 8) + ip4, None),
        "null-le": (0, struct.pack("<I", 2) + ip4, 0),
        "null-be": (0, struct.pack(">I", 24) + ip6, 0),
        "loop": (108, struct.pack(">I", 30) + ip6, 0),
        "null-other": (0, struct.pack("<I", 7) + ip4, 0),
        "c-hdlc": (104, b"\x0f\x00\x08\x00" + ip4, 0),
        "nflog": (239, b"\x02\0\0\0" + struct.pack("<HH", 8, 1) + b"\0" * 4
                  + struct.pack("<HH", 4 + len(ip4), 9) + ip4, None),
        "nflog-cut": (239, b"\x02\0\0\0" + struct.pack("<HH", 4 + len(ip4) + 50, 9) + ip4, None),
        "nflog-corrupt": (239, b"\x02\0\0\0" + struct.pack("<HH", 2, 9) + ip4, None),
        "nflog-nothing": (239, b"\x02\0\0\0" + struct.pack("<HH", 8, 1) + b"\0" * 4, None),
        "radiotap": (127, struct.pack("<BBHI", 0, 0, 8, 0) + bytes([0x08, 0x01]) + b"\0" * 22
                     + b"\xaa\xaa\x03\0\0\0\x08\x00" + ip4, None),
        "radiotap-qos-4addr": (127, struct.pack("<BBHI", 0, 0, 8, 0) + bytes([0x88, 0x03]) + b"\0" * 30
                               + b"\xaa\xaa\x03\0\0\0\x86\xdd" + ip6, None),
        "radiotap-mgmt": (127, struct.pack("<BBHI", 0, 0, 8, 0) + bytes([0x80, 0]) + b"\0" * 40, None),
        "radiotap-no-llc": (127, struct.pack("<BBHI", 0, 0, 8, 0) + bytes([0x08, 0x01]) + b"\0" * 22 + b"\xaa\xaa", None),
        "arp": (1, bytes(Ether(**MAC) / ARP()), None),
        "udp": (1, bytes(Ether(**MAC) / IP() / UDP(sport=1, dport=53) / Raw(b"x")), None),
        "icmp6": (229, bytes(IPv6(src="::1", dst="::2", nh=58)) + b"\0" * 8, None),
        "sctp": (228, bytes(IP(src="1.1.1.1", dst="2.2.2.2", proto=132)) + b"\0" * 12, None),
        "non-ip": (1, bytes(Ether(**MAC, type=0x88CC)) + b"\0" * 40, None),
        "ip-version-5": (101, b"\x55" + b"\0" * 40, None),
        "unknown-linktype": (147, b"\0" * 40, None),
        "arcnet": (129, b"\0" * 40, None),
        "empty": (1, b"", None),
    }
    for lt in (1, 101, 113, 276, 0, 104, 239, 127):
        f[f"short-{lt}"] = (lt, b"\x08" * 3, None)
    return f


FRAMES = _frames()


@pytest.mark.parametrize("name", FRAMES)
def test_decode_crafted_frames_like_python(name: str) -> None:
    lt, frame, orig = FRAMES[name]
    o = len(frame) if orig is None else orig
    want = decode(lt, frame, o)
    assert _native.decode(lt, frame, o) == want
    for cut in range(0, len(frame), 3):  # every truncation of it too (a snap length)
        assert _native.decode(lt, frame[:cut], o) == decode(lt, frame[:cut], o), cut


def test_decode_fuzz_on_mutated_packets() -> None:
    rng = random.Random(7)
    pkts = []
    for f in FILES[::2]:
        try:
            recs = CaptureDecoder().feed(capture_bytes(f))
        except CaptureError:
            continue
        pkts += [(lt, frame, orig) for _, lt, frame, orig in recs[:200]]
    pkts += [(lt, frame, len(frame) if orig is None else orig) for lt, frame, orig in FRAMES.values()]
    linktypes = [0, 1, 12, 14, 101, 104, 108, 113, 127, 228, 229, 239, 276]
    for _ in range(40_000):
        lt, frame, orig = rng.choice(pkts)
        b = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            if b:
                j = rng.randrange(min(len(b), 90)) if rng.random() < 0.85 else rng.randrange(len(b))
                b[j] = rng.randrange(256)
        if rng.random() < 0.2:
            b = b[: rng.randrange(len(b) + 1)]
        if rng.random() < 0.1:
            lt = rng.choice(linktypes)
        if rng.random() < 0.1:
            orig = rng.randrange(70_000)
        data = bytes(b)
        assert _native.decode(lt, data, orig) == decode(lt, data, orig), (lt, orig, data.hex())


def test_float_repr_is_pythons() -> None:
    """Timestamps are written by a fast path that must agree with repr(float) everywhere."""
    rng = random.Random(3)
    values = [0.0, -0.0, 1.0, 9.999999999999998, 10.0, 1e15, 1e15 - 0.125, 999999999999999.9, 1e16, 0.5,
              1e-5, 123.0, 2.0**52, 2.0**53, float("inf"), float("-inf"), 1700000000.1, 4294967295.999999]
    for _ in range(60_000):
        sec = rng.randrange(1 << 32)
        values += [sec + rng.randrange(10**6) * 1e-6, sec + rng.randrange(10**9) * 1e-9,
                   struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0],
                   rng.randrange(1, 10**15) / 10 ** rng.randrange(12), rng.uniform(1, 1e15)]
    for v in values:
        assert _native.float_repr(v) == repr(v)
    assert _native.float_repr(float("nan")) == "nan"


# -- the whole engine ------------------------------------------------------------------------
def python_lines(paths: list[str], **kw: Any) -> tuple[bytes, dict[str, object], list[dict[str, object]]]:
    ex = Extractor(**kw)
    out, reports = [], []
    for p in paths:
        rep = InputReport(p)
        reports.append(vars(rep))
        for recs in read_capture(p, rep):
            out += [json_line(e) + "\n" for e in ex.feed(recs)]
    out += [json_line(e) + "\n" for e in ex.finish()]
    return "".join(out).encode(), ex.counts(), reports


def native_lines(paths: list[str], **kw: Any) -> tuple[bytes, dict[str, object], list[dict[str, object]]]:
    nx = NativeExtractor(_native, **kw)
    out, reports = [], []
    n = 0
    for p in paths:
        rep = InputReport(p)
        reports.append(vars(rep))
        for lines, k in nx.read(p, rep):
            out.append(lines)
            n += k
    lines, k = nx.finish()
    out.append(lines)
    data = b"".join(out)
    assert n + k == data.count(b"\n")
    return data, nx.counts(), reports


def assert_same_extraction(paths: list[str], **kw: Any) -> bytes:
    want, counts, reports = python_lines(paths, **kw)
    got, ncounts, nreports = native_lines(paths, **kw)
    assert got.decode().splitlines() == want.decode().splitlines()  # a readable diff first
    assert got == want
    assert json.dumps(ncounts) == json.dumps(counts)  # same keys, same order, same values
    assert nreports == reports
    return want


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_extraction_is_byte_identical(path: Path) -> None:
    assert_same_extraction([str(path)])


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_the_tcp_and_http_part_on_pythons_decoding(path: Path) -> None:
    """feed_segments: tcp.c, http1.c and pairing.c fed with layers.decode's own results."""
    want, counts, _ = python_lines([str(path)])
    eng = _native.Engine([], [], 64 << 20, 300.0)
    got = b""
    for recs in read_capture(str(path), InputReport(str(path))):
        got += eng.feed_segments([(ts, lt, decode(lt, d, o)) for ts, lt, d, o in recs])
    got += eng.finish()
    assert got == want
    assert json.dumps(eng.counts()) == json.dumps(counts)


OPTIONS = [
    {"ports": [80, 8080], "servers": []},
    {"servers": [(bytes([10, 0, 0, 2]), 80), (bytes(16), 8000)]},
    {"max_body": 10},
    {"max_body": 0},
    {"idle_timeout": 0.05},
]


@pytest.mark.parametrize("opts", OPTIONS, ids=["ports", "servers", "max_body", "no-body", "idle"])
def test_options_give_the_same_extraction(opts: dict[str, Any]) -> None:
    for path in FILES[::4]:
        assert_same_extraction([str(path)], **opts)


def test_several_inputs_share_the_connections(tmp_path: Path) -> None:
    """Files are read one after another into one reassembly (a rotated capture)."""
    data = capture_bytes(REPO / "fixtures" / "nginx_pipelined.pcap")
    recs = CaptureDecoder().feed(data)
    cut = len(recs) // 2
    paths = []
    for i, part in enumerate((recs[:cut], recs[cut:])):
        p = tmp_path / f"part{i}.pcap"
        p.write_bytes(pcap_bytes([(ts, frame) for ts, _, frame, _ in part]))
        paths.append(str(p))
    whole = assert_same_extraction(paths)
    assert whole.count(b"\n") > 2
    gz = tmp_path / "part1.pcap.gz"
    gz.write_bytes(gzip.compress(Path(paths[1]).read_bytes()))
    assert_same_extraction([paths[0], str(gz)])
    assert_same_extraction([paths[0], paths[0]])


def test_truncated_and_corrupt_inputs(tmp_path: Path) -> None:
    data = capture_bytes(REPO / "fixtures" / "nginx_wrk.pcap")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-30])
    bad = bytearray(data)
    off = 24
    for _ in range(200):
        off += 16 + struct.unpack_from("<I", bad, off + 8)[0]
    struct.pack_into("<I", bad, off + 8, 50_000_000)
    corrupt = tmp_path / "corrupt.pcap"
    corrupt.write_bytes(bytes(bad))
    assert_same_extraction([str(cut)])
    assert_same_extraction([str(corrupt), str(cut)])
    _, _, reports = native_lines([str(corrupt), str(cut)])
    assert "corrupt record" in str(reports[0]["error"]) and reports[1]["truncated_bytes"] > 30
    assert "last record truncated" in str(reports[1]["warnings"])


def test_engine_feed_errors() -> None:
    eng = _native.Engine([], [], 1 << 20, 300.0)
    with pytest.raises(NotACapture, match="not a pcap or pcapng file"):
        eng.feed(b"x" * 30)
    eng.new_input()
    bad = bytearray(pcap_bytes(PKTS))
    struct.pack_into("<I", bad, 24 + 16 + 60 + 8, 10_000_000)
    assert eng.feed(bytes(bad)) == b""
    assert eng.input_records == 1 and "corrupt record at byte 100" in eng.input_error
    with pytest.raises(CaptureError, match="corrupt record"):
        eng.feed(b"more")
    eng.new_input()
    assert eng.input_error is None
    eng.feed(pcap_bytes(PKTS)[:-5])
    assert (eng.input_records, eng.input_leftover) == (3, 16 + 70 - 5)
    assert eng.counts()["packets"] == 4


# -- the CLI ---------------------------------------------------------------------------------
def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = Conv(sport=8000).handshake()
    for i in range(5):
        c.c(get(f"/item/{i}", host="httpbin:8000"))
        c.s(ok(b"x" * (10 * i), extra="Content-Type: text/plain\r\n"))
        c.ack_c()
    c.c(get("/pending"))
    path = tmp_path_factory.mktemp("native") / "c.pcap"
    path.write_bytes(pcap_bytes(c.pkts))
    return path


@pytest.mark.parametrize("extra", [[], ["--limit", "0"], ["--limit", "2"], ["--limit", "6"], ["--limit", "60"],
                                   ["--port", "8000", "--max-body", "3"]],
                         ids=["plain", "limit0", "limit2", "limit6", "limit60", "options"])
def test_cli_engines_agree(conv: Path, extra: list[str]) -> None:
    py = run("extract", str(conv), str(conv), "--engine", "python", *extra)
    nat = run("extract", str(conv), str(conv), "--engine", "native", *extra)
    assert (nat.returncode, nat.stdout, nat.stderr) == (py.returncode, py.stdout, py.stderr)
    assert py.returncode == 0 and b"extracted" in py.stderr


def test_cli_engines_agree_on_bad_inputs(conv: Path, tmp_path: Path) -> None:
    data = conv.read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[:-30])
    bad = bytearray(data)
    struct.pack_into("<I", bad, 24 + 8, 50_000_000)
    (tmp_path / "bad.pcap").write_bytes(bytes(bad))
    (tmp_path / "notes.txt").write_text("not a capture\n")
    (tmp_path / "c.pcap.gz").write_bytes(gzip.compress(data))
    for args in (["cut.pcap"], ["bad.pcap", "cut.pcap"], ["notes.txt"], ["c.pcap.gz"], ["missing.pcap"]):
        paths = [str(tmp_path / a) for a in args]
        py = run("extract", *paths, "--engine", "python")
        nat = run("extract", *paths, "--engine", "native")
        assert (nat.returncode, nat.stdout, nat.stderr) == (py.returncode, py.stdout, py.stderr), args
    py = run("extract", "-", "--engine", "python", stdin=gzip.compress(data))
    nat = run("extract", "-", "--engine", "native", stdin=gzip.compress(data))
    assert (nat.returncode, nat.stdout, nat.stderr) == (py.returncode, py.stdout, py.stderr)
    assert nat.stdout.count(b"\n") == 6


@pytest.mark.parametrize("other", [["-o", "REC"], ["--har", "x.har"], ["--table", "-"]])
def test_cli_native_writes_only_json_lines(conv: Path, tmp_path: Path, other: list[str]) -> None:
    other = [str(tmp_path / "rec") if a == "REC" else str(tmp_path / a) if a == "x.har" else a for a in other]
    r = run("extract", str(conv), "--engine", "native", *other)
    assert r.returncode == 2
    assert r.stderr.decode() == ("error: --engine native writes JSON lines only: drop -o/--har/--table, "
                                 "or use --engine python\n")
    assert r.stdout == b""


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which engine cmd_extract builds: 'native' or 'python'."""
    import capture.native_extract as ne

    used: list[str] = []
    real_native, real_python = ne.NativeExtractor, cli.Extractor

    def native(*a: Any, **k: Any) -> Any:
        used.append("native")
        return real_native(*a, **k)

    def python(*a: Any, **k: Any) -> Any:
        used.append("python")
        return real_python(*a, **k)

    monkeypatch.setattr(ne, "NativeExtractor", native)
    monkeypatch.setattr(cli, "Extractor", python)
    return used


@pytest.mark.parametrize("args,engine", [
    (["--jsonl", "OUT"], "native"),
    (["--jsonl", "OUT", "--engine", "python"], "python"),
    (["--jsonl", "OUT", "--har", "HAR"], "python"),
    (["--table", "HAR"], "python"),
    (["--jsonl", "OUT", "--engine", "native"], "native"),
])
def test_cli_auto_takes_native_for_json_lines_only(conv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   args: list[str], engine: str) -> None:
    used = _spy(monkeypatch)
    out = tmp_path / "out.jsonl"
    args = [str(out) if a == "OUT" else str(tmp_path / "x") if a == "HAR" else a for a in args]
    assert cli.main(["extract", str(conv), *args]) == 0
    assert used == [engine]
    if "--jsonl" in args:
        assert out.read_bytes().count(b"\n") == 6
        assert os.stat(out).st_mode & 0o777 == 0o600


def test_cli_without_the_native_module(conv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import capture.native_extract as ne

    used = _spy(monkeypatch)
    monkeypatch.setattr(ne, "load", lambda: None)
    out = tmp_path / "out.jsonl"
    assert cli.main(["extract", str(conv), "--jsonl", str(out)]) == 0
    assert used == ["python"] and out.read_bytes().count(b"\n") == 6
    assert cli.main(["extract", str(conv), "--engine", "native"]) == 2
    assert "capture._native is not built" in capsys.readouterr().err


def test_cli_native_to_a_text_only_stdout(conv: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """main() called in-process with stdout captured: the lines still arrive, as text."""
    assert cli.main(["extract", str(conv), "--engine", "native"]) == 0
    native = capsys.readouterr().out
    assert cli.main(["extract", str(conv), "--engine", "python"]) == 0
    assert capsys.readouterr().out == native and native.count("\n") == 6


def test_a_stale_native_build_refuses_to_import(tmp_path: Path) -> None:
    """capture/__init__.py's guard covers capture._native: built from native/*.c and *.h."""
    import shutil
    import time

    import capture as pkg

    (tmp_path / "setup.py").write_text("")  # a source checkout
    root = tmp_path / "capture"
    (root / "native").mkdir(parents=True)
    shutil.copy(Path(pkg.__file__), root / "__init__.py")
    so = root / "_native.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    old = time.time() - 100
    os.utime(so, (old, old))
    scratch = root / "native" / "_stubs.c"  # '_' files are a developer's scratch, never built
    scratch.write_text("")

    def imports() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "import capture"], cwd=tmp_path, capture_output=True, text=True)

    assert imports().returncode == 0
    (root / "native" / "pcap.c").write_text("")
    r = imports()
    assert r.returncode != 0 and "pcap.c changed after" in r.stderr and "make venv" in r.stderr
    os.utime(so, None)
    assert imports().returncode == 0
    (root / "native" / "native.h").write_text("")
    os.utime(so, (old, old))
    assert "native.h changed after" in imports().stderr


def test_a_tcp_header_past_the_ip_end_of_a_cut_packet(tmp_path: Path) -> None:
    c = Conv(sport=80).handshake()
    c.c(get("/a"))
    c.s(ok(b"hi"))
    ts, frame = c.packet(True, b"", flags="PA")
    p = Ether(frame)
    p[IP].len = 60
    p[TCP].dataofs = 15
    cut = bytes(p)[:62]
    assert decode(1, cut, 74)[8] == 0  # type: ignore[index]  (it was -20: nothing is missing)
    c.c(get("/b"))
    c.s(ok(b"yo"))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for t, data in [*c.pkts[:5], (ts, cut), *c.pkts[5:]]:
        out.append(struct.pack("<IIII", int(t), round(t % 1 * 1e6), len(data), 74 if data is cut else len(data)) + data)
    path = tmp_path / "cut.pcap"
    path.write_bytes(b"".join(out))
    assert_same_extraction([str(path)])
