"""Real servers, real clients and a real capture point, isolated in a network namespace.

Tests, ``fixtures/make_fixtures.py`` and the ``bench/`` scripts all need the same small lab:
nginx (fast and exactly logged) or httpbin under gunicorn (the reference scenario's service)
listening inside a namespace, a veth pair joining it to the host, and tcpdump on the host-side
veth. A veth, unlike loopback, has a normal MTU and the offload behaviour of a real NIC (invalid
checksums, GRO super-segments: see DESIGN.md "Field notes"), so captures taken here look like
captures taken in production.

Safety rules this module enforces, because it runs as root on a shared machine:

* traffic only ever goes to the namespace it created (10.200.X.2 on a veth it owns) or loopback;
  clients run here pass ``--noproxy '*'`` and a proxy-free environment so a stray
  ``http_proxy`` cannot send requests elsewhere;
* every process is started with a known PID and stopped by that PID; teardown also kills, by
  PID, anything still inside the namespace (it is uniquely named, so only this run's processes
  can be there);
* every wait and every load loop is bounded in time.

Benchmarks import this with ``sys.path.insert(0, repo_root); from tests.netlab import ...``,
so it depends on the standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import random
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NetNS",
    "Server",
    "Tcpdump",
    "CaptureStats",
    "LogRecord",
    "netns",
    "start_nginx",
    "start_httpbin",
    "start_tcpdump",
    "tcpdump",
    "parse_nginx_log",
    "parse_gunicorn_log",
    "parse_access_log",
    "curl",
    "curl_env",
    "send_pipelined",
    "Pipelined",
    "wait_for_port",
    "NGINX_LOG_FIELDS",
    "GUNICORN_LOG_FIELDS",
    "NGINX_FILES",
    "REPO",
    "shadowtap_argv",
    "extract_jsonl",
    "port_of",
]

# One lock serialises "pick a free subnet + create the veth" across parallel runs (pytest-xdist,
# a benchmark next to a test run): the address check and the creation must be atomic together.
_LOCK_PATH = Path("/run/lock/shadowtap-netlab.lock")
_SUBNET_PREFIX = "10.200"
REPO = Path(__file__).resolve().parent.parent


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a short administrative command (ip, tshark) with a bound on its duration."""
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout)


def curl_env() -> dict[str, str]:
    """The current environment minus proxy settings, so clients talk to the namespace directly."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


# --------------------------------------------------------------------------------------------
# Processes


def _stop_pid(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
    """Stop one process we started: polite signal to its PID, then SIGKILL to its own group.

    Processes are started with ``start_new_session=True``, so the group id equals the PID and
    killing the group only reaches that process and its children (nginx/gunicorn workers).
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
    # Workers whose master died first would linger in the group; they are ours by group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


# --------------------------------------------------------------------------------------------
# Network namespace


@dataclass
class NetNS:
    """A namespace joined to the host by a veth pair; the host side is where tcpdump listens."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    prefixlen: int = 30
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """Wrap a command so it runs inside the namespace. ``ip netns exec`` execs in place,
        so the PID of the resulting process is the PID of the command itself."""
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace and remember it for teardown."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.argv(argv), start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """PIDs of every process currently inside the namespace."""
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]


def _used_third_octets() -> set[int]:
    """Third octets of 10.200.X.* addresses already on the host, so two labs never overlap."""
    out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
    used = set()
    for m in re.finditer(rf"inet {re.escape(_SUBNET_PREFIX)}\.(\d+)\.", out):
        used.add(int(m.group(1)))
    out = _run(["ip", "-o", "-4", "route", "show"]).stdout
    for m in re.finditer(rf"^{re.escape(_SUBNET_PREFIX)}\.(\d+)\.", out, re.M):
        used.add(int(m.group(1)))
    return used


@contextlib.contextmanager
def netns(tag: str = "stap") -> Iterator[NetNS]:
    """Create a uniquely named namespace + veth pair; tear it all down on exit, even on errors.

    Names carry a random suffix (interface names must fit in 15 bytes) and the /30 subnet
    10.200.X.0/30 uses an X not present on the host, chosen under a lock, so parallel runs
    cannot clash. The addresses exist only on this veth pair, inside this machine.
    """
    suffix = secrets.token_hex(3)
    name = f"shadowtap-{tag}-{suffix}"
    host_if, ns_if = f"st{suffix}h", f"st{suffix}n"
    lab: NetNS | None = None
    try:
        _LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with open(_LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            free = [x for x in range(1, 255) if x not in _used_third_octets()]
            if not free:
                raise RuntimeError(f"no free {_SUBNET_PREFIX}.X.0/30 subnet on this host")
            x = random.choice(free)
            lab = NetNS(name, host_if, ns_if, f"{_SUBNET_PREFIX}.{x}.1", f"{_SUBNET_PREFIX}.{x}.2")
            _run(["ip", "netns", "add", name])
            _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
            _run(["ip", "link", "set", ns_if, "netns", name])
            _run(["ip", "addr", "add", f"{lab.host_ip}/{lab.prefixlen}", "dev", host_if])
            _run(["ip", "link", "set", host_if, "up"])
            _run(["ip", "-n", name, "addr", "add", f"{lab.ns_ip}/{lab.prefixlen}", "dev", ns_if])
            _run(["ip", "-n", name, "link", "set", ns_if, "up"])
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield lab
    finally:
        _teardown(name, host_if, lab)


def _teardown(name: str, host_if: str, lab: NetNS | None) -> None:
    """Kill our processes by PID, then anything left in our namespace, then delete it all."""
    if lab is not None:
        for proc in reversed(lab.procs):
            _stop_pid(proc)
    if Path(f"/run/netns/{name}").exists():
        for pid in NetNS(name, host_if, "", "", "").pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _run(["ip", "netns", "del", name], check=False)
    # Deleting the namespace destroys the peer and with it the host end; this is the fallback.
    if _run(["ip", "link", "show", host_if], check=False).returncode == 0:
        _run(["ip", "link", "del", host_if], check=False)


def wait_for_port(host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection (bounded); fail fast if ``proc`` died.

    The probe connects and closes without sending a byte, so servers log nothing for it; call
    it before starting a capture so the probe is not in the pcap either.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    """A server process inside a namespace, with the paths of its logs."""

    kind: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    access_log: Path
    error_log: Path
    workdir: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def stop(self, timeout: float = 10.0) -> None:
        """Stop by PID; afterwards the access log is complete and safe to read."""
        _stop_pid(self.proc, self.stop_signal, timeout)

    def records(self) -> list[LogRecord]:
        """The access log parsed in log order."""
        return parse_access_log(self.access_log, self.kind)


# The sub_filter in /chunked/ replaces this with a string of the same length, so a chunked
# response's de-chunked length is exactly the file's size (nginx's log counts framing too).
_CHUNK_MARKER = "shadowtap"


def _nginx_contents() -> dict[str, bytes]:
    """Static files nginx serves: empty, small, text (for the chunked and gzip locations),
    ~20 KB and ~200 KB. Deterministic, so regenerated fixtures carry the same bodies."""
    rng = random.Random(20240601)
    line = f"{_CHUNK_MARKER} test line for gzip and chunked responses 0123456789\n".encode()
    return {
        "empty.txt": b"",
        "small.txt": (b"small static body for shadowtap tests\n" * 4)[:137],
        "text.txt": (line * 100)[:6000],
        "medium.bin": rng.randbytes(20 * 1024),
        "large.bin": rng.randbytes(200 * 1024),
        "index.html": b"<!doctype html><title>shadowtap</title><p>nginx under test</p>\n",
    }


# name -> size in bytes of every static file (``/chunked/NAME`` and ``/gz/NAME`` serve them too).
NGINX_FILES: dict[str, int] = {name: len(data) for name, data in _nginx_contents().items()}

NGINX_LOG_FIELDS: tuple[str, ...] = (
    "msec", "connection", "connection_requests", "remote_addr", "remote_port",
    "request_method", "request_uri", "server_protocol", "status", "body_bytes_sent",
    "request_length", "sent_http_transfer_encoding",
)


def _write_nginx_files(html: Path) -> None:
    html.mkdir(parents=True, exist_ok=True)
    for name, data in _nginx_contents().items():
        (html / name).write_bytes(data)


def _nginx_conf(prefix: Path, host: str, port: int, worker_processes: int) -> str:
    # Ask only for file descriptors the hard limit allows (nginx logs an alert otherwise).
    nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    fields = "\\t".join("$" + f for f in NGINX_LOG_FIELDS)
    return f"""
user root;
daemon off;
master_process on;
worker_processes {worker_processes};
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
lock_file {prefix}/nginx.lock;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections {max(1024, nofile // 2)}; }}
http {{
    types {{ text/html html; text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    log_format tsv '{fields}';
    access_log {prefix}/logs/access.log tsv;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen {host}:{port} backlog=4096;
        root {prefix}/html;
        location / {{ }}
        location = /nocontent {{ return 204; }}
        location = /redirect {{ return 302 /small.txt; }}
        # sub_filter drops Content-Length, so HTTP/1.1 responses here are always chunked.
        location /chunked/ {{
            alias {prefix}/html/;
            sub_filter '{_CHUNK_MARKER}' '{_CHUNK_MARKER.upper()}';
            sub_filter_once off;
            sub_filter_types text/plain;
        }}
        # gzip (only when the client sends Accept-Encoding: gzip) is chunked too.
        location /gz/ {{
            alias {prefix}/html/;
            gzip on;
            gzip_min_length 1;
            gzip_types text/plain;
        }}
    }}
}}
"""


def start_nginx(
    ns: NetNS, workdir: Path, *, port: int = 80, worker_processes: int = 1, timeout: float = 10.0
) -> Server:
    """Start nginx in the namespace with its own prefix under ``workdir`` and wait until it listens.

    ``daemon off`` keeps the master as our child, so its PID is the one we stop.
    """
    prefix = Path(workdir).resolve() / "nginx"
    for sub in ("conf", "logs", "tmp", "html"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    _write_nginx_files(prefix / "html")
    conf = prefix / "conf" / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, ns.ns_ip, port, worker_processes))
    error_log = prefix / "logs" / "error.log"
    with open(prefix / "logs" / "stderr.log", "wb") as err:
        proc = ns.popen(
            ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(error_log)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )
    server = Server("nginx", proc, ns.ns_ip, port, prefix / "logs" / "access.log", error_log, prefix,
                    stop_signal=signal.SIGQUIT)  # SIGQUIT: graceful, finishes and logs in-flight requests
    try:
        wait_for_port(ns.ns_ip, port, timeout, proc)
    except Exception:
        server.stop()
        raise RuntimeError(f"nginx did not start: {_tail(error_log)} {_tail(prefix / 'logs' / 'stderr.log')}")
    return server


# gunicorn atoms: RAW_URI is the request target exactly as sent (path and query); %(B)s is the
# body length gunicorn wrote before any chunked framing (0 for HEAD/204/304).
GUNICORN_LOG_FIELDS: tuple[str, ...] = (
    "remote_addr", "remote_port", "request_method", "request_uri", "server_protocol",
    "status", "body_bytes_sent",
)
_GUNICORN_FORMAT = "\t".join(
    ["%(h)s", "%({remote_port}e)s", "%(m)s", "%({raw_uri}e)s", "%(H)s", "%(s)s", "%(B)s"]
)


def start_httpbin(
    ns: NetNS, workdir: Path, *, port: int = 8000, threads: int = 4, timeout: float = 20.0
) -> Server:
    """Start httpbin under gunicorn in the namespace (the reference scenario's service)."""
    return start_gunicorn(ns, Path(workdir) / f"httpbin-{port}", "httpbin:app", port=port, threads=threads,
                          timeout=timeout)


def start_gunicorn(
    ns: NetNS, wd: Path, app: str, *, port: int, threads: int = 4, timeout: float = 20.0,
    env: Mapping[str, str] | None = None, pythonpath: Path | None = None, wait: bool = True,
) -> Server:
    """Start a WSGI `app` under gunicorn in the namespace, logging into `wd`.

    One worker keeps the access log in request order per connection; the gthread worker is
    used because the sync worker closes every connection, and keep-alive is what we capture.
    ``--no-control-socket``: otherwise concurrent gunicorns clobber ``~/.gunicorn/gunicorn.ctl``.
    ``wait=False`` returns at once; ``wait_gunicorn`` waits later.
    """
    wd = Path(wd).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    access_log, error_log = wd / "access.log", wd / "error.log"
    argv = [
        sys.executable, "-m", "gunicorn", "--no-control-socket",
        "-b", f"{ns.ns_ip}:{port}", "-w", "1", "-k", "gthread", "--threads", str(threads),
        "--keep-alive", "60",
        "--access-logfile", str(access_log), "--access-logformat", _GUNICORN_FORMAT,
        "--error-logfile", str(error_log), "--chdir", str(wd),
        *(["--pythonpath", str(pythonpath)] if pythonpath else []),
        app,
    ]
    kwargs: dict[str, object] = {"env": dict(env)} if env is not None else {}
    with open(wd / "stderr.log", "wb") as err:
        proc = ns.popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, **kwargs)
    server = Server("gunicorn", proc, ns.ns_ip, port, access_log, error_log, wd)
    if wait:
        wait_gunicorn(server, timeout)
    return server


def wait_gunicorn(server: Server, timeout: float = 20.0) -> None:
    """Wait until it listens; stop it and say why if it does not."""
    try:
        wait_for_port(server.host, server.port, timeout, server.proc)
    except Exception:
        server.stop()
        raise RuntimeError(f"gunicorn did not start: {_tail(server.error_log)} "
                           f"{_tail(server.workdir / 'stderr.log')}") from None


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Capture


@dataclass(frozen=True)
class CaptureStats:
    """tcpdump's own end-of-run counters; ``dropped_kernel`` is what the capture bench compares."""

    captured: int | None
    received: int | None
    dropped_kernel: int | None


@dataclass
class Tcpdump:
    """A running tcpdump writing a pcap; ``stop()`` ends it with SIGINT so the file is complete."""

    proc: subprocess.Popen[bytes]
    path: Path
    iface: str
    immediate: bool
    _stderr: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    stats: CaptureStats | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, settle: float | None = None, timeout: float = 10.0) -> CaptureStats:
        """Let in-flight packets reach the file, then SIGINT and wait; returns tcpdump's counters.

        Without immediate mode libpcap hands packets over in blocks up to ~1 s late, so we wait
        for the file to stop growing for ``settle`` seconds (bounded) before interrupting.
        """
        if self.stats is not None:
            return self.stats
        quiet = settle if settle is not None else (0.3 if self.immediate else 1.5)
        deadline = time.monotonic() + quiet + 5.0
        last, since = -1, time.monotonic()
        while self.proc.poll() is None and time.monotonic() < deadline:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size != last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.05)
        _stop_pid(self.proc, signal.SIGINT, timeout)
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        text = "".join(self._stderr)

        def num(label: str) -> int | None:
            m = re.search(rf"(\d+) packets? {label}", text)
            return int(m.group(1)) if m else None

        self.stats = CaptureStats(num("captured"), num("received by filter"), num("dropped by kernel"))
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)
        return self.stats


def start_tcpdump(
    iface: str,
    path: Path,
    bpf: str = "tcp",
    *,
    snaplen: int = 0,
    immediate: bool = True,
    buffer_kib: int = 65536,
    timeout: float = 10.0,
    lab: NetNS | None = None,
) -> Tcpdump:
    """Start tcpdump on ``iface`` writing ``path`` and return once it says "listening on".

    The file is pre-created mode 0600 (captured traffic is sensitive; tcpdump keeps the mode of
    an existing file). ``-Z root`` stops tcpdump dropping to its own user, which could not write
    into a root-owned temp dir. ``-U`` flushes per packet so a killed run still leaves a valid
    file; ``--immediate-mode`` avoids libpcap's block timeout for small interactive captures
    (benchmarks can turn it off for throughput). Immediate mode makes libpcap use TPACKET_V2,
    whose ring slots are snaplen-sized (256 KiB with ``-s 0``): tcpdump's default 2 MiB ring
    then holds 8 packets and drops GRO bursts, hence the 64 MiB default ``buffer_kib``.
    Pass ``lab`` to have the namespace's teardown stop it too if the caller never does.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    argv = ["tcpdump", "-i", iface, "-w", str(path), "-U", "-s", str(snaplen), "-n", "-Z", "root"]
    if immediate:
        argv.append("--immediate-mode")
    if buffer_kib > 0:
        argv += ["-B", str(buffer_kib)]
    argv.append(bpf)
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    if lab is not None:
        lab.procs.append(proc)
    cap = Tcpdump(proc, path, iface, immediate)
    ready = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode(errors="replace")
            cap._stderr.append(line)
            if "listening on" in line:
                ready.set()
        ready.set()  # EOF: tcpdump exited; the caller checks poll()

    cap._reader = threading.Thread(target=read_stderr, name=f"tcpdump-{iface}", daemon=True)
    cap._reader.start()
    if not ready.wait(timeout) or proc.poll() is not None:
        cap.stop(settle=0)
        raise RuntimeError(f"tcpdump did not start on {iface}: {''.join(cap._stderr)}")
    return cap


@contextlib.contextmanager
def tcpdump(iface: str, path: Path, bpf: str = "tcp", **kwargs: object) -> Iterator[Tcpdump]:
    """``start_tcpdump`` as a context manager: the capture is always stopped cleanly."""
    cap = start_tcpdump(iface, path, bpf, **kwargs)  # type: ignore[arg-type]
    try:
        yield cap
    finally:
        cap.stop()


# --------------------------------------------------------------------------------------------
# Access logs (the ground truth)


@dataclass(frozen=True)
class LogRecord:
    """One access-log line. The first four fields are what every comparison uses; the rest let
    a test line records up with connections (client port, nginx's connection serial)."""

    method: str
    target: str
    status: int
    body_bytes: int
    protocol: str = ""
    client_port: int | None = None
    msec: float | None = None
    connection: int | None = None
    connection_requests: int | None = None
    request_length: int | None = None
    chunked: bool | None = None  # None: the log cannot say (gunicorn)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


_NGINX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")


def _nginx_unescape(value: str) -> str:
    """nginx's default log escaping writes '"', '\\' and bytes outside 0x20-0x7e as \\xHH."""
    return _NGINX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def _int_or_none(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _tsv_rows(path: Path, fields: Sequence[str], kind: str) -> Iterator[dict[str, str]]:
    """The lines of a tab-separated access log as field → value, checked for width."""
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != len(fields):
            raise ValueError(f"unexpected {kind} log line: {line!r}")
        yield dict(zip(fields, parts))


def parse_nginx_log(path: Path) -> list[LogRecord]:
    """Parse the tab-separated format written by ``start_nginx`` (``NGINX_LOG_FIELDS``)."""
    records = []
    for f in _tsv_rows(path, NGINX_LOG_FIELDS, "nginx"):
        records.append(LogRecord(
            method=_nginx_unescape(f["request_method"]),
            target=_nginx_unescape(f["request_uri"]),
            status=int(f["status"]),
            body_bytes=int(f["body_bytes_sent"]),
            protocol=f["server_protocol"],
            client_port=_int_or_none(f["remote_port"]),
            msec=float(f["msec"]),
            connection=int(f["connection"]),
            connection_requests=int(f["connection_requests"]),
            request_length=int(f["request_length"]),
            chunked=f["sent_http_transfer_encoding"] == "chunked",
        ))
    return records


def parse_gunicorn_log(path: Path) -> list[LogRecord]:
    """Parse the tab-separated format written by ``start_httpbin`` (``GUNICORN_LOG_FIELDS``).

    gunicorn escapes only '"' (as \\"), which we undo; its body count is de-chunked already.
    """
    records = []
    for f in _tsv_rows(path, GUNICORN_LOG_FIELDS, "gunicorn"):
        records.append(LogRecord(
            method=f["request_method"],
            target=f["request_uri"].replace('\\"', '"'),
            status=int(f["status"]),
            body_bytes=int(f["body_bytes_sent"]) if f["body_bytes_sent"].isdigit() else 0,
            protocol=f["server_protocol"],
            client_port=_int_or_none(f["remote_port"]),
        ))
    return records


def parse_access_log(path: Path, kind: str) -> list[LogRecord]:
    """Dispatch on server kind: ``"nginx"`` or ``"gunicorn"``."""
    if kind == "nginx":
        return parse_nginx_log(path)
    if kind == "gunicorn":
        return parse_gunicorn_log(path)
    raise ValueError(f"unknown access log kind {kind!r}")


# --------------------------------------------------------------------------------------------
# Clients

# Written by curl after each transfer: the client port ties a transfer to its connection,
# size_download is the de-chunked, still content-encoded body length the client received and
# size_upload the request body length it sent.
CURL_WRITE_OUT = (
    '{"port":%{local_port},"status":%{http_code},"size":%{size_download},'
    '"upload":%{size_upload},"method":"%{method}"}\\n'
)


def curl(
    segments: Sequence[Sequence[str]], *, timeout: float = 30.0, extra_env: Mapping[str, str] | None = None
) -> list[dict[str, int | str]]:
    """Run one curl process whose transfers are separated by ``--next``.

    One process reuses one keep-alive connection for transfers to the same host:port, so
    ``segments`` that go to the same server share a connection; run ``curl`` again for a new
    connection. Each segment is a list of curl arguments including its URL. Returns curl's
    per-transfer report (client port, status, body bytes received, request body bytes sent,
    method), in order.
    """
    argv = ["curl"]
    for i, seg in enumerate(segments):
        if i:
            argv.append("--next")
        argv += ["--noproxy", "*", "-sS", "--max-time", str(timeout), "-o", "/dev/null",
                 "-w", CURL_WRITE_OUT, *seg]
    env = curl_env() | dict(extra_env or {})
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout + 5, env=env)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Pipelined:
    """What a pipelined connection returned: the client port (to find it in the capture and
    the log) and every byte the server sent."""

    local_port: int
    data: bytes


def send_pipelined(
    host: str, port: int, requests: Sequence[bytes], *, idle: float = 0.5, timeout: float = 10.0
) -> Pipelined:
    """Send all ``requests`` in ONE ``sendall`` on one connection (HTTP pipelining), read what
    comes back until the server closes or stays quiet for ``idle`` seconds, then close.

    Reading "until quiet" needs no HTTP parser here (the parser is what is under test).
    """
    buf = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(b"".join(requests))
        sock.settimeout(idle)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
    return Pipelined(local_port, bytes(buf))


# --------------------------------------------------------------------------------------------
# The extractor under test, run as users run it


def shadowtap_argv() -> list[str]:
    """The venv's installed ``shadowtap`` if present, else the module from the source tree."""
    script = Path(sys.executable).parent / "shadowtap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "capture.cli"]


def extract_jsonl(pcap: Path, *extra: str, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Run ``shadowtap extract PCAP --jsonl -`` and return its exchanges (fails loudly)."""
    proc = subprocess.run([*shadowtap_argv(), "extract", str(pcap), "--jsonl", "-", *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"shadowtap extract exited {proc.returncode}: {proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def port_of(addr: str) -> int:
    """'10.200.1.1:4242' or '[::1]:4242' -> 4242 (the form extract writes client/server in)."""
    return int(addr.rpartition(":")[2])
