"""Capture engines: the process that owns the socket and writes the files.

Both engines are separate processes that speak tcpdump's stderr protocol: "listening on …"
once the capture is open, one line of counters on SIGUSR1 ("N packets captured, N packets
received by filter, N packets dropped by kernel"), the same three counters at exit, an error
message and a non-zero status when they cannot start. So the agent supervises `tcpdump` and
shadowtap's own engine (`capture.pyengine`, pure Python) with one piece of code, and the
engine runs on its own core, never slowed down by extraction in the agent.

The engine runs in its own process group with umask 077 (files 0600) and its working
directory in DIR, and gets relative file names: after `-Z USER` drops root, only DIR itself has
to be writable by USER, not every directory above it.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import guard
from .errors import UserError
from .rotation import file_name, template


@dataclass
class CaptureOptions:
    """Everything the user asked for, validated (see capture.agent for the flags)."""

    interface: str
    directory: str  # absolute
    filter: str = ""
    engine: str = "tcpdump"
    fmt: str = "pcap"
    snaplen: int = 262144
    size_mb: int | None = None  # -C, millions of bytes as in tcpdump
    seconds: int | None = None  # -G
    ring: int | None = None  # -W
    count: int | None = None
    duration: float | None = None
    user: str | None = None  # -Z
    netns: str | None = None
    pid: int | None = None
    buffer_kib: int = 32768
    exchanges: bool = False
    ports: list[int] = field(default_factory=list)

    @property
    def size_limit(self) -> int | None:
        return self.size_mb * 1_000_000 if self.size_mb else None


def build_filter(ports: list[int], hosts: list[str], expression: list[str]) -> str:
    """`--port/--host` → `tcp and host H and port P`; a raw expression is ANDed, as one string."""
    parts = []
    if ports or hosts:
        parts.append("tcp")
        for h in hosts:
            if not re.fullmatch(r"[A-Za-z0-9_.:-]+", h):
                raise UserError(f"--host {h!r}: give one address or host name (a filter goes after the flags)")
        for words, kind in ((hosts, "host"), (ports, "port")):
            alts = [f"{kind} {w}" for w in words]
            if len(alts) == 1:
                parts.append(alts[0])
            elif alts:
                parts.append("(" + " or ".join(alts) + ")")
    built = " and ".join(parts)
    expr = " ".join(expression).strip()
    if built and expr:
        return f"{built} and ({expr})"
    return built or expr


def namespace_prefix(opts: CaptureOptions) -> list[str]:
    """How tcpdump enters another network namespace: `ip netns exec` for a named one, and
    `nsenter --net` for a process's (what ksniff and `kubectl debug` do from the node). Both
    exec in place, so the engine's PID is tcpdump's own."""
    if opts.netns:
        return ["ip", "netns", "exec", opts.netns]
    if opts.pid:
        return ["nsenter", f"--target={opts.pid}", "--net", "--"]
    return []


def first_name(opts: CaptureOptions, when: float) -> str:
    return file_name(opts.fmt, when)


def tcpdump_argv(opts: CaptureOptions, when: float, user: str) -> list[str]:
    """tcpdump's command line. -U: each packet is flushed, so a killed engine leaves whole
    records. No -W: tcpdump's -W ends the capture with -G and reuses names with -C; the agent
    keeps the ring itself. `--` then the filter as one argument, so it is never an option."""
    argv = [*namespace_prefix(opts), "tcpdump", "-i", opts.interface, "-U", "-s", str(opts.snaplen),
            "-B", str(opts.buffer_kib), "-Z", user]
    argv += ["-w", template(opts.fmt) if opts.seconds else first_name(opts, when)]
    if opts.seconds:
        argv += ["-G", str(opts.seconds)]
    if opts.size_mb:
        argv += ["-C", str(opts.size_mb)]
    if opts.count:
        argv += ["-c", str(opts.count)]
    if opts.filter:
        argv += ["--", opts.filter]
    return argv


def pyengine_argv(opts: CaptureOptions) -> list[str]:
    """shadowtap's own engine, with the same meanings (it enters namespaces itself)."""
    # `-iNAME`, `--netns=NAME`: a value that starts with "-" must not read as an option.
    argv = [sys.executable, "-m", "capture.pyengine", f"-i{opts.interface}", "--format", opts.fmt,
            "-s", str(opts.snaplen), "-B", str(opts.buffer_kib)]
    if opts.size_limit:
        argv += ["-C", str(opts.size_limit)]
    if opts.seconds:
        argv += ["-G", str(opts.seconds)]
    if opts.count:
        argv += ["-c", str(opts.count)]
    if opts.user:
        argv += [f"-Z{opts.user}"]
    if opts.netns:
        argv += [f"--netns={opts.netns}"]
    if opts.pid:
        argv += ["--pid", str(opts.pid)]
    if opts.filter:
        argv += ["--", opts.filter]
    return argv


def which_engine(requested: str | None) -> str:
    """tcpdump where it is installed (the trusted libpcap writer), else the Python engine."""
    if requested:
        return requested
    return "tcpdump" if shutil.which("tcpdump") else "scapy"


@dataclass
class EngineStats:
    """Counters as the engine last reported them; None until it has."""

    captured: int | None = None
    received: int | None = None
    dropped: int | None = None
    if_dropped: int | None = None

    def pending(self) -> int | None:
        """Packets the kernel accepted that the engine has not written yet (libpcap's counts
        include packets still in the ring: a TPACKET_V3 block is handed over when full or
        after its 1 s timeout)."""
        if self.captured is None or self.received is None:
            return None
        return self.received - (self.dropped or 0) - self.captured


_COUNTERS = {
    "captured": re.compile(r"(\d+) packets? captured"),
    "received": re.compile(r"(\d+) packets? received by filter"),
    "dropped": re.compile(r"(\d+) packets? dropped by kernel"),
    "if_dropped": re.compile(r"(\d+) packets? dropped by interface"),
}
_PREFIXES = ("tcpdump: ", "shadowtap-engine: ")


class EngineError(Exception):
    """The engine could not start; the message is one line for the user."""


class EngineProcess:
    """A running engine: its process, its stderr (read by a thread) and its counters."""

    def __init__(self, name: str, argv: list[str], cwd: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.guard: subprocess.Popen[bytes] | None = None
        self.stats = EngineStats()
        self.stats_seq = 0
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0, abort: threading.Event | None = None) -> None:
        """Start and wait until the engine listens; EngineError (one line) if it cannot."""
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, umask=0o077, process_group=0)
        except FileNotFoundError:
            raise EngineError(f"{self.argv[0]} not found") from None
        self._start_guard()
        self._reader = threading.Thread(target=self._read_stderr, name=f"{self.name}-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
            if abort is not None and abort.is_set():
                return  # stopping before it listened: the caller stops it
        if self.ready.is_set() and self.proc.poll() is None:
            return
        if self.proc.poll() is None:
            self.kill()
            raise EngineError(f"{self.name} did not start listening within {timeout:.0f} s")
        self._reader.join(timeout=2.0)
        raise EngineError(self.error_message() or f"{self.name} exited with status {self.proc.returncode}")

    def _start_guard(self) -> None:
        assert self.proc is not None
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except OSError:
            return
        try:
            self.guard = subprocess.Popen(
                [sys.executable, "-I", guard.__file__, str(os.getpid()), str(pidfd)],
                pass_fds=(pidfd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, process_group=0)
        finally:
            os.close(pidfd)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "listening on" in line:
                self.ready.set()
            found = False
            for key, rx in _COUNTERS.items():
                m = rx.search(line)
                if m:
                    setattr(self.stats, key, int(m.group(1)))
                    found = True
            if found and "dropped by kernel" in line:
                self.stats_seq += 1

    def error_message(self) -> str | None:
        """The engine's own error, as one line without its program-name prefix."""
        lines = list(self.lines)
        if any(line.startswith("Traceback") for line in lines):  # Python died before main()
            return next((line.strip() for line in reversed(lines) if line.strip()), None)
        for line in lines:
            text = line.strip()
            if (not text or "listening on" in text or text.startswith("(")
                    or any(rx.search(text) for rx in _COUNTERS.values())):
                continue
            for p in _PREFIXES:
                text = text.removeprefix(p)
            return text
        return None

    def request_stats(self) -> None:
        if self.proc is not None and self.ready.is_set():
            self._signal(signal.SIGUSR1)

    def interrupt(self) -> None:
        """SIGINT: the engine writes what it has, closes its file and prints its counters."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                self.proc.send_signal(sig)  # checks that the child was not reaped yet
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for exit (SIGKILL after `timeout`), then for the last of its stderr."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait(timeout=5.0)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        if self.guard is not None:
            try:
                self.guard.wait(timeout=5.0)  # it sees the engine's exit through its pidfd
            except subprocess.TimeoutExpired:
                self.guard.kill()
                self.guard.wait()
        return code


def pyengine_env() -> dict[str, str]:
    """The engine runs `python -m capture.pyengine` from DIR: make this capture importable."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def make_engine(opts: CaptureOptions, when: float, user: str) -> EngineProcess:
    if opts.engine == "tcpdump":
        env = dict(os.environ, TZ="UTC0")  # -G names are strftime'd: keep them in UTC
        return EngineProcess("tcpdump", tcpdump_argv(opts, when, user), opts.directory, env)
    return EngineProcess("scapy engine", pyengine_argv(opts), opts.directory, pyengine_env())
