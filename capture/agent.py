"""`shadowtap capture`: a long-running capture agent that is safe to leave on a node.

The agent supervises an engine process (tcpdump, or shadowtap's own Python engine; see
capture.engines) that owns the socket and writes rotated pcap files into DIR, and follows
those files behind it (capture.follow) to count packets, keep the -W ring and, with
`--exchanges`, stream the HTTP exchanges through the same core as `extract`. It rewrites
DIR/capture.json about once a second. Stopping is always the engine's clean path (SIGINT: it
closes its file and prints its counters), whether the cause is a signal, --duration, --count,
a full disk, or the agent's own death (capture/guard.py).

Exit codes: 0 stopped as asked; 1 the capture failed while running (disk full, the engine
died; files kept); 2 it could not start (bad interface, filter, directory, user, namespace).
"""
from __future__ import annotations

import argparse
import gc
import os
import pwd
import signal
import sys
import threading
import time
from typing import Any

from .cli import positive
from .engines import CaptureOptions, EngineError, EngineProcess, build_filter, first_name, make_engine, which_engine
from .errors import UserError
from .follow import Follower
from .status import ExchangeStream, StatusFile, prepare_directory

DISK_RESERVE = 1 << 20  # stop while this much is still free: capture.json must fit, the node breathes
STOP_SETTLE = 1.2  # s: libpcap hands a ring block over when full or 1 s old




def register(sub: Any) -> None:
    p = sub.add_parser(
        "capture",
        help="capture traffic into rotated pcap files (a node agent), optionally streaming exchanges",
        description="Sniff an interface into DIR with rotation and a ring, like tcpdump -w, and "
        "keep DIR/capture.json up to date. With --exchanges, also print the HTTP exchanges as "
        "JSON lines while capturing.",
    )
    p.add_argument("-w", "--dir", required=True, metavar="DIR", help="output directory (created 0700)")
    p.add_argument("--exchanges", action="store_true",
                   help="also print the HTTP exchanges as JSON lines on stdout while capturing")
    add_capture_arguments(p)
    p.set_defaults(func=cmd_capture)


def add_capture_arguments(p: argparse.ArgumentParser) -> None:
    """The sniffing flags `capture` and `mirror` share."""
    p.add_argument("-i", "--interface", required=True, metavar="IFACE", help="interface to capture on")
    p.add_argument("--port", type=int, action="append", default=[], metavar="P",
                   help="the service's port (builds `tcp and port P`; repeatable)")
    p.add_argument("--host", action="append", default=[], metavar="H",
                   help="the service's address (builds `tcp and host H`; repeatable)")
    p.add_argument("expression", nargs="*", metavar="BPF", help="extra filter, ANDed (passed as one argument)")
    p.add_argument("-C", type=positive(int), metavar="MB", dest="size_mb",
                   help="rotate when a file exceeds MB million bytes (tcpdump -C)")
    p.add_argument("-G", type=positive(int), metavar="SECONDS", dest="seconds",
                   help="rotate at the first packet SECONDS after a file was opened (tcpdump -G)")
    p.add_argument("-W", type=positive(int), metavar="FILES", dest="ring",
                   help="keep only the newest FILES files (a ring; needs -C or -G)")
    p.add_argument("-s", type=int, default=262144, metavar="SNAPLEN", dest="snaplen",
                   help="bytes kept per packet (default and 0: 262144)")
    p.add_argument("-B", type=positive(int), default=32768, metavar="KIB", dest="buffer_kib",
                   help="kernel capture buffer in KiB (default 32768)")
    p.add_argument("--pcapng", action="store_true", help="write pcapng (scapy engine)")
    p.add_argument("--duration", type=positive(float), metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=positive(int), metavar="N", help="stop after N packets")
    p.add_argument("-Z", dest="user", metavar="USER", help="drop root to USER once the capture is open")
    ns = p.add_mutually_exclusive_group()
    ns.add_argument("--netns", metavar="NAME", help="capture inside the named network namespace")
    ns.add_argument("--pid", type=positive(int), metavar="PID",
                    help="capture inside the network namespace of process PID (a pod's container)")
    p.add_argument("--engine", choices=("tcpdump", "scapy"),
                   help="tcpdump (default where installed) or scapy (pure Python)")


def options(args: argparse.Namespace) -> CaptureOptions:
    """Check the flags together; every problem is a one-line UserError (exit 2)."""
    if args.ring and not (args.size_mb or args.seconds):
        raise UserError("-W needs -C or -G")
    if not 0 <= args.snaplen <= 262144:
        raise UserError("-s must be between 0 and 262144")
    for port in args.port:
        if not 0 < port < 65536:
            raise UserError(f"--port {port}: not a port number")
    engine = which_engine(args.engine)
    if args.pcapng and engine == "tcpdump":
        raise UserError("--pcapng needs --engine scapy (tcpdump writes pcap only)")
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            raise UserError(f"-Z {args.user}: no such user") from None
    if args.netns and ("/" in args.netns or not os.path.exists(f"/run/netns/{args.netns}")):
        raise UserError(f"--netns {args.netns}: no such network namespace (see `ip netns list`)")
    if args.pid and not os.path.exists(f"/proc/{args.pid}/ns/net"):
        raise UserError(f"--pid {args.pid}: no such process")
    return CaptureOptions(
        interface=args.interface, directory=os.path.abspath(args.dir),
        filter=build_filter(args.port, args.host, args.expression), engine=engine,
        fmt="pcapng" if args.pcapng else "pcap", snaplen=args.snaplen or 262144,
        size_mb=args.size_mb, seconds=args.seconds, ring=args.ring, count=args.count,
        duration=args.duration, user=args.user, netns=args.netns, pid=args.pid,
        buffer_kib=args.buffer_kib, exchanges=args.exchanges, ports=args.port)


def _current_user() -> str:
    """Who tcpdump should stay (it drops to its own user otherwise); a uid without a passwd
    entry, common in containers, is given as a number."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def cmd_capture(args: argparse.Namespace) -> int:
    opts = options(args)
    prepare_directory(opts.directory, opts.user)
    return Agent(opts, ["shadowtap", "capture", *sys.argv[2:]]).run()


class Agent:
    """`stream`, when given, receives the records instead of --exchanges' JSON printer (the
    `mirror` command hands its own, which feeds the replayer): anything with ExchangeStream's
    feed/flush/finish, `count`, `dropped` and `drop_warning`."""

    def __init__(self, opts: CaptureOptions, command: list[str], stream: Any = None) -> None:
        self.opts = opts
        self.stop = threading.Event()
        self.stop_reason: str | None = None
        self.failure: str | None = None  # why the capture had to stop (exit 1)
        self.disk_full = False
        self.stream: ExchangeStream | None = stream
        if opts.exchanges and stream is None:
            self.stream = ExchangeStream(opts.ports, on_broken=lambda: self.request_stop("stdout closed"))
        existing = set(os.listdir(opts.directory))
        self.follower = Follower(opts.directory, existing, self.stream.feed if self.stream else None)
        self.when = self._start_time(existing)
        user = opts.user or _current_user()
        self.engine: EngineProcess = make_engine(opts, self.when, user)
        self.status = StatusFile(opts, command, self.engine, self.follower, self.stream)

    def _start_time(self, existing: set[str]) -> float:
        """A second whose file name is free: a restarted agent must not overwrite its last file."""
        deadline = time.monotonic() + 3.0
        while first_name(self.opts, time.time()) in existing and time.monotonic() < deadline:
            time.sleep(0.1)
        return time.time()

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    def run(self) -> int:
        handler = lambda signum, _frame: self.request_stop(signal.Signals(signum).name)  # noqa: E731
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)
        if self.stream is not None:
            # Millions of short-lived objects and few cycles (as in extract).
            gc.freeze()
            gc.set_threshold(100_000, 50, 1000)
        self.status.reserve()
        try:
            self.engine.start(abort=self.stop)
        except EngineError as e:
            msg = self._start_error(str(e))
            self.status.finish("failed", msg)
            raise UserError(msg) from None
        self.status.write("running")
        o = self.opts
        where = f" in netns {o.netns}" if o.netns else f" in the netns of pid {o.pid}" if o.pid else ""
        print(f"capturing on {o.interface}{where} with {o.engine} ({o.filter or 'no filter'}) into {o.directory}",
              file=sys.stderr, flush=True)
        self._loop()
        return self._finish()

    def _start_error(self, msg: str) -> str:
        o = self.opts
        if msg.startswith("can't parse filter expression: "):
            return f"bad filter {o.filter!r}: {msg.split(': ', 1)[1]}"
        if "No such device" in msg:
            where = f" in network namespace {o.netns}" if o.netns else f" in the netns of pid {o.pid}" if o.pid else ""
            return f"{o.interface}: no such interface{where}"
        if msg.startswith("shadowtap-"):  # a file name, relative to DIR
            return os.path.join(o.directory, msg)
        return msg

    def _loop(self) -> None:
        o = self.opts
        tick = 0.1 if o.exchanges else 0.25
        started = time.monotonic()
        last_status = 0.0
        stopper = _Stopper(self.engine, settle=o.engine == "tcpdump")
        while True:
            now = time.monotonic()
            if o.duration is not None and now - started >= o.duration:
                self.request_stop("duration")
            try:
                self.follower.poll()
                if o.ring:
                    self.status.deleted += len(self.follower.prune(o.ring))
            except OSError as e:  # the directory went away, or became unreadable
                self.failure = f"{o.directory}: {os.strerror(e.errno or 0).lower()}; capture stopped"
                self.request_stop("directory failed")
                stopper.step(now, hurry=True)
            if self.stream is not None:
                self.stream.flush()
            if not self.disk_full:
                self._check_disk()
            if self.engine.poll() is not None:
                return
            if self.stop.is_set():
                stopper.step(now, hurry=self.disk_full)
            if now - last_status >= 1.0 and not self.stop.is_set():
                last_status = now
                self.engine.request_stats()
                self.status.write("running")
            if self.stop.is_set():
                time.sleep(0.05)
            else:
                self.stop.wait(tick)

    def _check_disk(self) -> None:
        try:
            st = os.statvfs(self.opts.directory)
        except OSError:
            return
        if st.f_bavail * st.f_frsize < DISK_RESERVE:
            self.disk_full = True
            self.request_stop("disk full")

    def _finish(self) -> int:
        code = self.engine.wait()
        try:
            self.follower.poll(final=True)
            if self.opts.ring:
                self.status.deleted += len(self.follower.prune(self.opts.ring))
        except OSError as e:
            self.failure = self.failure or f"{self.opts.directory}: {os.strerror(e.errno or 0).lower()}"
        self.follower.close()
        if self.stream is not None:
            self.stream.finish()
            if self.stream.dropped:
                print(f"warning: {self.stream.drop_warning()}", file=sys.stderr)
        engine_error = self.engine.error_message() if code != 0 else None
        if engine_error and "No space left" in engine_error:
            self.disk_full = True
        for w in self.follower.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if self.disk_full:
            kept = sum(1 for f in self.follower.files if not f.deleted)
            msg = f"{self.opts.directory}: no space left on device; {kept} files kept"
            self.status.finish("failed", msg)
            raise UserError(msg, code=1)
        if code != 0 and self.stop_reason is None:
            msg = f"{self.engine.name} stopped: {engine_error or f'exit status {code}'}"
            self.status.finish("failed", msg)
            raise UserError(msg, code=1)
        if self.failure is not None:
            self.status.finish("failed", self.failure)
            raise UserError(self.failure, code=1)
        if code == -signal.SIGKILL:
            msg = (f"{self.engine.name} did not stop within 10 s of SIGINT and was killed; "
                   "its last file may end in a partial record")
            self.status.finish("failed", msg)
            raise UserError(msg, code=1)
        self.status.finish("stopped", None)
        s = self.engine.stats
        kept = sum(1 for f in self.follower.files if not f.deleted)
        print(f"captured {self.follower.packets} packets into {kept} files"
              + (f" ({self.status.deleted} removed by the ring)" if self.status.deleted else "")
              + f"; kernel: {s.received} received, {s.dropped} dropped", file=sys.stderr)
        return 0


class _Stopper:
    """Stops the engine the clean way, once a stop was asked for.

    tcpdump's libpcap hands packets over in ring blocks, when a block is full or 1 s old: a
    SIGINT right away would lose up to a second of packets that arrived before the stop. So
    ask tcpdump for its counters (SIGUSR1) until everything the kernel received was written
    (received - dropped - captured == 0), at most STOP_SETTLE, then SIGINT; SIGKILL if it
    has not exited 10 s later. The Python engine drains its socket on SIGINT by itself.
    """

    def __init__(self, engine: EngineProcess, settle: bool) -> None:
        self.engine = engine
        self.settle = settle
        self.asked_at: float | None = None
        self.seq = 0
        self.interrupted_at: float | None = None

    def step(self, now: float, hurry: bool = False) -> None:
        e = self.engine
        if self.interrupted_at is not None:
            if now - self.interrupted_at > 10.0:
                e.kill()
            return
        if self.settle and not hurry:
            if self.asked_at is None:
                self.asked_at, self.seq = now, e.stats_seq
                e.request_stats()
                return
            if now - self.asked_at < STOP_SETTLE:
                if e.stats_seq == self.seq:
                    return  # no answer yet
                if (e.stats.pending() or 0) > 0:
                    self.seq = e.stats_seq
                    e.request_stats()
                    return
        e.interrupt()
        self.interrupted_at = now
