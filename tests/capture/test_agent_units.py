"""The capture agent's pieces without a live interface: filters and command lines, file names,
the Python engine's rotating writer, and the follower that reads files as they are written."""
from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest

from capture import rotation
from capture.engines import CaptureOptions, EngineStats, build_filter, pyengine_argv, tcpdump_argv
from capture.follow import Follower
from capture.pcapfile import CaptureDecoder
from capture.rotation import RotatingWriter, file_name, sort_key


def test_filter_from_port_host_and_expression() -> None:
    assert build_filter([], [], []) == ""
    assert build_filter([8000], [], []) == "tcp and port 8000"
    assert build_filter([8000], ["10.0.0.7"], []) == "tcp and host 10.0.0.7 and port 8000"
    assert build_filter([80, 8080], [], []) == "tcp and (port 80 or port 8080)"
    assert build_filter([], [], ["udp", "or", "icmp"]) == "udp or icmp"
    assert build_filter([80], [], ["not", "host", "1.2.3.4"]) == "tcp and port 80 and (not host 1.2.3.4)"


def test_tcpdump_argv_is_never_shell_and_never_options() -> None:
    opts = CaptureOptions("eth0", "/d", filter="-r /etc/passwd; rm -rf /", size_mb=5, ring=3, count=9)
    argv = tcpdump_argv(opts, 0.0, "root")
    assert argv[0] == "tcpdump" and "-U" in argv and "-W" not in argv  # the agent keeps the ring
    assert argv[-2:] == ["--", "-r /etc/passwd; rm -rf /"]  # one argument, after the options
    assert argv[argv.index("-w") + 1] == "shadowtap-19700101T000000Z.pcap"  # relative: cwd is DIR
    assert argv[argv.index("-C") + 1] == "5" and argv[argv.index("-c") + 1] == "9"
    assert argv[argv.index("-Z") + 1] == "root"  # no silent drop to Debian's `tcpdump` user
    timed = tcpdump_argv(CaptureOptions("eth0", "/d", seconds=60), 0.0, "nobody")
    assert timed[timed.index("-w") + 1] == "shadowtap-%Y%m%dT%H%M%SZ.pcap"
    assert tcpdump_argv(CaptureOptions("lo", "/d", netns="ns1"), 0.0, "root")[:5] == ["ip", "netns", "exec", "ns1", "tcpdump"]
    assert tcpdump_argv(CaptureOptions("lo", "/d", pid=42), 0.0, "root")[:5] == ["nsenter", "--target=42", "--net", "--", "tcpdump"]
    py = pyengine_argv(CaptureOptions("lo", "/d", size_mb=2, netns="ns1", filter="tcp"))
    assert py[py.index("-C") + 1] == "2000000" and py[-2:] == ["--", "tcp"] and "--netns=ns1" in py
    assert "-ilo" in py  # `-iNAME`: an interface named "-x" cannot read as an option


def test_pending_packets_from_counters() -> None:
    assert EngineStats().pending() is None
    assert EngineStats(captured=10, received=12, dropped=1).pending() == 1


def test_names_sort_in_capture_order() -> None:
    names = ["shadowtap-20240101T000000Z.pcap10", "shadowtap-20240101T000001Z.pcap",
             "shadowtap-20240101T000000Z.pcap", "shadowtap-20240101T000000Z.pcap9", "capture.json",
             "shadowtap-20240101T000000Z.pcap.tmp"]
    keyed = sorted((k, n) for n in names if (k := sort_key(n)) is not None)
    assert [n for _, n in keyed] == ["shadowtap-20240101T000000Z.pcap", "shadowtap-20240101T000000Z.pcap9",
                                     "shadowtap-20240101T000000Z.pcap10", "shadowtap-20240101T000001Z.pcap"]
    assert file_name("pcapng", 0.0, 3) == "shadowtap-19700101T000000Z.pcapng3"


def _records(path: Path) -> list[tuple[float, int, bytes, int]]:
    dec = CaptureDecoder()
    recs = dec.feed(path.read_bytes())
    assert dec.leftover() == 0 and dec.error is None
    return recs


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_writer_rotates_by_size_like_tcpdump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.chdir(tmp_path)
    w = RotatingWriter(fmt, 1, 262144, "eth0", size_limit=1000, clock=lambda: 100.0)
    pkts = [(100_000_000_123 + i, bytes([i]) * 300, 1500) for i in range(10)]
    w.write(pkts[:4])
    w.write(pkts[4:])
    w.close()
    assert len(w.names) >= 3 and w.names == [file_name(fmt, 100, i) for i in range(len(w.names))]
    got = []
    for name in w.names:
        p = tmp_path / name
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert p.stat().st_size <= 1000 + 300 + 32  # over the limit by one record at most
        assert name == w.names[-1] or p.stat().st_size > 1000  # rotated only once over it
        got += _records(p)
    assert [(r[2], r[3]) for r in got] == [(d, o) for _, d, o in pkts]
    assert got[0][0] == pytest.approx(100.000000123) and got[0][1] == 1


def test_writer_rotates_by_time_and_restarts_the_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    now = [100.2]
    w = RotatingWriter("pcap", 1, 65535, size_limit=500, seconds=2, clock=lambda: now[0])
    w.write([(0, b"x" * 400, 400), (0, b"y" * 400, 400)])  # 440 bytes before y: not over 500 yet
    now[0] = 101.9
    w.write([(0, b"z", 1)])  # same window, but the file is over the limit: .pcap1
    now[0] = 102.0
    w.write([(0, b"w", 1)])  # 2 whole seconds: a new window, counter back to none
    w.close()
    assert w.names == [file_name("pcap", 100), file_name("pcap", 100, 1), file_name("pcap", 102)]
    assert [len(_records(tmp_path / n)) for n in w.names] == [2, 1, 1]


def test_writer_keeps_whole_records_when_the_disk_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    w = RotatingWriter("pcap", 1, 65535)
    w.write([(0, b"a" * 100, 100)])
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:50]))  # half a record reaches the disk...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then nothing more

    monkeypatch.setattr(rotation.os, "write", short_then_full)
    with pytest.raises(rotation.DiskFull):
        w.write([(0, b"b" * 100, 100), (0, b"c" * 100, 100)])
    monkeypatch.undo()
    w.close()
    assert [r[2] for r in _records(tmp_path / w.names[0])] == [b"a" * 100]


def _pcap(records: list[bytes]) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    return head + b"".join(struct.pack("<IIII", 1, 0, len(r), len(r)) + r for r in records)


def test_follower_reads_growing_files_across_rotation(tmp_path: Path) -> None:
    (tmp_path / "shadowtap-20000101T000000Z.pcap").write_bytes(_pcap([b"old"]))  # a previous run
    seen: list[bytes] = []
    f = Follower(str(tmp_path), ignore=os.listdir(tmp_path), sink=lambda recs: seen.extend(r[2] for r in recs))
    first = tmp_path / "shadowtap-20240101T000000Z.pcap"
    data = _pcap([b"p1", b"p2-longer", b"p3"])
    first.write_bytes(data[:30])  # header and part of the first record
    assert f.poll() == 0
    with open(first, "ab") as out:
        out.write(data[30:])
    assert f.poll() == 3 and seen == [b"p1", b"p2-longer", b"p3"]
    (tmp_path / "shadowtap-20240101T000000Z.pcap1").write_bytes(_pcap([b"p4"])[:-1])  # cut by a kill
    assert f.poll() == 0  # the newest is still being written: its partial record waits
    assert f.files[0].done and not f.files[1].done
    f.poll(final=True)
    assert seen[-1:] == [b"p3"] and f.files[1].truncated == 17 and f.packets == 3
    assert [x.name for x in f.files] == ["shadowtap-20240101T000000Z.pcap", "shadowtap-20240101T000000Z.pcap1"]
    assert any("truncated" in w for w in f.warnings)


def test_ring_prunes_oldest_and_never_the_open_file(tmp_path: Path) -> None:
    f = Follower(str(tmp_path))
    for i in range(5):
        (tmp_path / file_name("pcap", 0, i)).write_bytes(_pcap([b"x"]))
    f.scan()
    assert f.prune(2) == [file_name("pcap", 0, i) for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == [file_name("pcap", 0, 3), file_name("pcap", 0, 4)]
    f.poll(final=True)
    assert f.packets == 2 and sum(x.skipped for x in f.files) == 3  # removed before they were read
    assert f.prune(0) == [file_name("pcap", 0, 3)]  # the newest always stays


def test_follower_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO or a symbolic link dropped into the directory must neither hang the agent
    (open() blocks on a FIFO) nor be followed (root would read where the link points)."""
    os.mkfifo(tmp_path / "shadowtap-20991231T000000Z.pcap")
    (tmp_path / "target.pcap").write_bytes(b"")
    os.symlink(tmp_path / "target.pcap", tmp_path / "shadowtap-20991231T000001Z.pcap")
    f = Follower(str(tmp_path))
    f.poll(final=True)
    assert f.packets == 0 and len(f.warnings) == 2, f.warnings


def test_host_must_be_one_address() -> None:
    from capture.errors import UserError

    assert build_filter([80], ["10.0.0.7"], []) == "tcp and host 10.0.0.7 and port 80"
    with pytest.raises(UserError):
        build_filter([80], ["1.2.3.4 or port 22"], [])
