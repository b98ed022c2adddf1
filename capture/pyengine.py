"""The `scapy` capture engine: pure Python on an AF_PACKET socket, for hosts without tcpdump.

Run by the agent as `python -m capture.pyengine` (a process of its own, so capture never
waits for extraction). It speaks tcpdump's stderr protocol (see capture.engines) and follows
tcpdump's order of operations: enter the network namespace (setns, before any socket exists),
open the socket and attach the filter, drop privileges (-Z), then create files.

libpcap (through scapy's ctypes binding) only compiles the BPF filter; the kernel runs it on
the socket. Like libpcap, a reject-all filter is attached until the socket is bound and its
queue drained, so no packet from another interface slips in. Per packet the kernel gives the
nanosecond timestamp (SO_TIMESTAMPNS), the original length and any VLAN tag it stripped
(PACKET_AUXDATA; the tag is put back, as libpcap does). Kernel counters come from
PACKET_STATISTICS, which resets on each read, so they are summed.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import os
import pwd
import select
import signal
import socket
import struct
import sys
import time

from .rotation import LINKTYPE_ETHERNET, LINKTYPE_NAMES, LINKTYPE_RAW, DiskFull, RotatingWriter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
CLONE_NEWNET = 0x40000000
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
DLT_EN10MB, DLT_RAW = 1, 12
LINKTYPE_LINUX_SLL = 113
BATCH = 4096

_AUX = struct.Struct("IIIHHHH")
_TS = struct.Struct("qq")
_SLL = struct.Struct(">HHH8sH")


class EngineFailure(Exception):
    """A one-line reason to stop (printed as `shadowtap-engine: …`, exit 1)."""


def enter_netns(path: str) -> None:
    """setns(2) into the network namespace at `path` (/run/netns/NAME, /proc/PID/ns/net)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise EngineFailure(f"cannot open network namespace {path}: {e.strerror}") from None
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise EngineFailure(f"cannot enter network namespace {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def compile_filter(expr: str, dlt: int, snaplen: int) -> bytes:
    """BPF bytecode for `expr`, compiled by libpcap exactly as tcpdump would."""
    try:
        from scapy.libs import winpcapy as pcap
        from scapy.libs.structures import bpf_program
    except (ImportError, OSError) as e:
        raise EngineFailure(f"compiling a filter needs scapy and libpcap ({e})") from None

    handle = pcap.pcap_open_dead(dlt, snaplen)
    prog = bpf_program()
    try:
        if pcap.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) == -1:
            err = pcap.pcap_geterr(handle)
            msg = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            prefix = "can't parse filter expression: "  # what tcpdump says; libpcap may say it already
            raise EngineFailure(msg if msg.startswith(prefix) else prefix + msg)
        code = ctypes.string_at(prog.bf_insns, prog.bf_len * 8)
        pcap.pcap_freecode(ctypes.byref(prog))
        return code
    finally:
        pcap.pcap_close(handle)


def attach(sock: socket.socket, code: bytes) -> None:
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _ret(k: int) -> bytes:
    return struct.pack("HBBI", 0x06, 0, 0, k)  # BPF_RET|BPF_K


class Capture:
    """The socket: opened, filtered, bound; then read in batches."""

    def __init__(self, iface: str, expr: str, snaplen: int, bufsize: int) -> None:
        self.iface = iface
        self.snaplen = snaplen
        hatype = ARPHRD_NONE if iface == "any" else self._hatype(iface)
        # Ethernet (and loopback, which has a fake Ethernet header) keeps its link header;
        # anything else is read from the network header on: raw IP for tun-like devices,
        # Linux cooked headers (SLL) rebuilt from the socket address otherwise.
        self.raw = hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        # On loopback every packet is seen leaving and arriving; libpcap keeps the arrival only.
        self.loopback = hatype == ARPHRD_LOOPBACK
        if self.raw:
            self.linktype = LINKTYPE_ETHERNET
        else:
            self.linktype = LINKTYPE_RAW if hatype == ARPHRD_NONE and iface != "any" else LINKTYPE_LINUX_SLL
        code = compile_filter(expr, DLT_EN10MB if self.raw else DLT_RAW, snaplen) if expr else _ret(snaplen)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW if self.raw else socket.SOCK_DGRAM,
                          socket.htons(ETH_P_ALL))
        self.sock = s
        attach(s, _ret(0))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, bufsize)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        if iface != "any":
            s.bind((iface, ETH_P_ALL))
            mreq = struct.pack("iHH8s", socket.if_nametoindex(iface), PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        s.setblocking(False)
        while True:  # what queued before bind is from any interface: drop it
            try:
                s.recv(1)
            except BlockingIOError:
                break
        attach(s, code)
        self.received = 0
        self.dropped = 0

    @staticmethod
    def _hatype(iface: str) -> int:
        probe = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            probe.bind((iface, 0))
            return int(probe.getsockname()[3])
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENXIO):
                raise EngineFailure(f"{iface}: No such device exists") from None
            raise EngineFailure(f"{iface}: {e.strerror}") from None
        finally:
            probe.close()

    def read(self, limit: int = BATCH) -> list[tuple[int, bytes, int]]:
        """Up to `limit` packets already queued: (timestamp ns, bytes, original length)."""
        out: list[tuple[int, bytes, int]] = []
        recvmsg = self.sock.recvmsg
        snap = self.snaplen
        raw = self.raw
        sll = self.linktype == LINKTYPE_LINUX_SLL
        loopback = self.loopback
        append = out.append
        for _ in range(limit):
            try:
                data, anc, _flags, addr = recvmsg(snap, 128)
            except BlockingIOError:
                break
            if loopback and addr[2] == PACKET_OUTGOING:
                continue
            ts = 0
            orig = len(data)
            for level, kind, val in anc:
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, ns = _TS.unpack_from(val)
                    ts = sec * 1_000_000_000 + ns
                elif kind == PACKET_AUXDATA and level == SOL_PACKET:
                    status, orig, _snap, _mac, _net, tci, tpid = _AUX.unpack_from(val)
                    if raw and status & TP_STATUS_VLAN_VALID:
                        tag = struct.pack(">HH", tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci)
                        data = (data[:12] + tag + data[12:])[:snap]
                        orig += 4
            if sll:
                hdr = _SLL.pack(addr[2], addr[3], len(addr[4]), addr[4][:8], addr[1])
                data = (hdr + data)[:snap]
                orig += 16
            if not ts:
                ts = time.time_ns()
            append((ts, data, orig))
        return out

    def update_counters(self) -> None:
        try:
            packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return
        self.received += packets  # the kernel adds drops in; libpcap's ps_recv is the same
        self.dropped += drops


def drop_privileges(user: str) -> None:
    """-Z: become USER (its groups too) once the socket is open, as tcpdump does."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise EngineFailure(f"no such user: {user}") from None
    if os.geteuid() != 0:
        return
    os.initgroups(user, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shadowtap-engine")
    p.add_argument("-i", dest="iface", required=True)
    p.add_argument("--format", choices=("pcap", "pcapng"), default="pcap")
    p.add_argument("-s", dest="snaplen", type=int, default=262144)
    p.add_argument("-B", dest="buffer_kib", type=int, default=32768)
    p.add_argument("-C", dest="size", type=int, help="rotate after this many bytes")
    p.add_argument("-G", dest="seconds", type=int)
    p.add_argument("-c", dest="count", type=int)
    p.add_argument("-Z", dest="user")
    p.add_argument("--netns")
    p.add_argument("--pid", type=int)
    p.add_argument("filter", nargs="?", default="")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = {"stop": False, "stats": False}
    rd, wr = os.pipe()
    os.set_blocking(rd, False)
    os.set_blocking(wr, False)
    signal.set_wakeup_fd(wr)

    def on_stop(*_: object) -> None:
        flags["stop"] = True

    def on_stats(*_: object) -> None:
        flags["stats"] = True

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_stats)
    written = 0
    cap: Capture | None = None
    writer: RotatingWriter | None = None
    status = 0
    try:
        if args.netns:
            enter_netns(os.path.join("/run/netns", args.netns))
        elif args.pid:
            enter_netns(f"/proc/{args.pid}/ns/net")
        cap = Capture(args.iface, args.filter, args.snaplen or 262144, args.buffer_kib * 1024)
        if args.user:
            drop_privileges(args.user)
        writer = RotatingWriter(args.format, cap.linktype, cap.snaplen, args.iface, args.size, args.seconds)
        print(f"listening on {args.iface}, link-type {LINKTYPE_NAMES.get(cap.linktype, 'LINUX_SLL')}, "
              f"snapshot length {cap.snaplen} bytes", file=sys.stderr, flush=True)
        while True:
            stopping = flags["stop"]
            if not stopping:
                select.select([cap.sock.fileno(), rd], [], [], 0.5)
                while True:
                    try:
                        os.read(rd, 512)
                    except BlockingIOError:
                        break
            # On stop, drain what the kernel already queued (bounded), then close the file.
            for _ in range(256 if stopping else 1):
                batch = cap.read()
                if args.count:
                    batch = batch[: args.count - written]
                if batch:
                    writer.write(batch)
                    written += len(batch)
                if len(batch) < BATCH or (args.count and written >= args.count):
                    break
            if flags["stats"]:
                flags["stats"] = False
                cap.update_counters()
                print(f"shadowtap-engine: {written} packets captured, {cap.received} packets received by "
                      f"filter, {cap.dropped} packets dropped by kernel", file=sys.stderr, flush=True)
            if stopping or (args.count and written >= args.count):
                break
    except DiskFull as e:
        print(f"shadowtap-engine: {e.filename}: {e.strerror}", file=sys.stderr, flush=True)
        status = 1
    except EngineFailure as e:
        print(f"shadowtap-engine: {e}", file=sys.stderr, flush=True)
        status = 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else f"{args.iface}: "
        print(f"shadowtap-engine: {where}{e.strerror or e}", file=sys.stderr, flush=True)
        status = 1
    except Exception as e:  # one line for the agent, never a traceback
        print(f"shadowtap-engine: internal error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        status = 1
    finally:
        if writer is not None:
            writer.close()
    if cap is not None:
        cap.update_counters()
        print(f"{written} packets captured\n{cap.received} packets received by filter\n"
              f"{cap.dropped} packets dropped by kernel", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
