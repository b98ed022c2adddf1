"""Capture-file decoding: pcap in both byte orders and resolutions, pcapng, bad files."""
from __future__ import annotations

import struct

import pytest

from capture.pcapfile import CaptureDecoder, CaptureError, NotACapture
from tests.capture.craft import pcap_bytes

PKTS = [(1700000000.25, b"\x01" * 60), (1700000001.5, b"\x02" * 1514), (1700000002.000001, b"\x03" * 42)]


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_byte_orders_and_resolutions(nano: bool, big: bool) -> None:
    recs = CaptureDecoder().feed(pcap_bytes(PKTS, nano=nano, big=big))
    assert [r[2] for r in recs] == [p[1] for p in PKTS]
    assert [r[0] for r in recs] == pytest.approx([p[0] for p in PKTS], abs=2e-6)
    assert {r[1] for r in recs} == {1}


def test_any_chunking_gives_the_same_records() -> None:
    data = pcap_bytes(PKTS)
    whole = CaptureDecoder().feed(data)
    dec = CaptureDecoder()
    pieces = []
    for i in range(0, len(data), 7):
        pieces += dec.feed(data[i : i + 7])
    assert pieces == whole and dec.leftover() == 0


def test_truncated_last_record_is_left_over() -> None:
    data = pcap_bytes(PKTS)[:-10]
    dec = CaptureDecoder()
    assert len(dec.feed(data)) == 2
    assert dec.leftover() == 16 + 42 - 10


def test_corrupt_length_mid_file_raises() -> None:
    data = bytearray(pcap_bytes(PKTS))
    struct.pack_into("<I", data, 24 + 16 + 60 + 8, 10_000_000)  # second record's incl_len
    dec = CaptureDecoder()
    assert len(dec.feed(bytes(data))) == 1  # what came before the corruption is kept
    assert dec.error is not None and "corrupt record" in dec.error
    with pytest.raises(CaptureError, match="corrupt record"):
        dec.feed(b"more")


def test_not_a_capture() -> None:
    with pytest.raises(NotACapture):
        CaptureDecoder().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng(interfaces: list[tuple[int, int | None]], packets: list[tuple[int, int, bytes]]) -> bytes:
    """interfaces: (linktype, if_tsresol or None); packets: (iface, ticks, data)."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt, res in interfaces:
        opts = b""
        if res is not None:
            opts = struct.pack("<HHB3x", 9, 1, res) + struct.pack("<HH", 0, 0)
        out.append(_block(1, struct.pack("<HHI", lt, 0, 0) + opts))
    for iface, ticks, data in packets:
        out.append(_block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data))
    return b"".join(out)


def test_pcapng_interfaces_have_their_own_linktype_and_resolution() -> None:
    data = pcapng([(1, None), (113, 9)], [(0, 1_700_000_000_500_000, b"a" * 20), (1, 1_700_000_000_250_000_000, b"b" * 30)])
    recs = CaptureDecoder().feed(data)
    assert [(r[1], len(r[2])) for r in recs] == [(1, 20), (113, 30)]
    assert recs[0][0] == pytest.approx(1_700_000_000.5)
    assert recs[1][0] == pytest.approx(1_700_000_000.25)


def test_pcapng_packet_naming_an_unknown_interface_is_corrupt() -> None:
    with pytest.raises(CaptureError, match="interface 3"):
        CaptureDecoder().feed(pcapng([(1, None)], [(3, 0, b"x" * 20)]))
