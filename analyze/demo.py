"""`shadowtap demo`: Istio's "Mirroring" task, played on one machine with real servers.

    shadowtap demo [--out demo-out] [--keep-running] [--loopback]

The task's steps, each printed as it happens with the commands it runs:

1. Before you begin: httpbin v1 and v2 under gunicorn (access logs on), each in its own network
   namespace joined to the host by a veth pair (on loopback ports when namespaces cannot be
   made), and curl on the host in the role of the task's `sleep` pod.
2. Creating a default routing policy: the client sends its traffic to v1 only (`GET /headers`
   as in the task, and a mix of other httpbin endpoints) while `shadowtap capture` records it
   on v1's veth; v1's log has the requests, v2's none.
3. Mirroring traffic to v2: `shadowtap extract` makes the recording and `shadowtap replay
   --percent 100` sends it to v2 with the `-shadow` Host; v2's log now has the same requests.
4. Examine traffic internals: `shadowtap show` prints one `GET /headers` exchange, primary and
   shadow, as the task's tcpdump does.
5. `shadowtap analyze` writes the report: v2 is v1's build, so the verdict passes, and
   `/headers` differs only by the mirroring artifact (`Host: httpbin-shadow:8000`).
6. The same against a changed candidate (fixtures/demo/changed_v2.py, a v2 build with one
   regression): the verdict fails, naming `GET /json` and `body.slideshow.title`.
7. Cleaning up: every process the demo started is stopped by its PID and the namespaces are
   removed (in a `finally`: also on Ctrl-C, SIGTERM or an error); the reports' paths are printed.

OUT keeps the recordings (OUT/seed, OUT/changed: pcap/, exchanges/, results/, report/), the
servers' logs (OUT/logs) and OUT/demo.json (what was started, what was found, how long it took).
Exit 0 when the demo played as expected (a pass, then a fail for the right reason), 1 otherwise.

The namespace helper here is small on purpose and depends on nothing but `ip`: the installed
tool must not import tests/netlab.py. It takes the same lock and 10.200.X.0/30 subnets as
netlab, so a demo and a test run at the same time do not pick the same addresses.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from capture.errors import UserError

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "fixtures" / "demo"
CHANGED_APP = "changed_v2:app"
CHANGED_ENDPOINT = "GET /json"
CHANGED_FIELD = "body.slideshow.title"
ARTIFACT_ENDPOINT = "GET /headers"
ARTIFACT_FIELD = "body.headers.Host"
SERVICE = "httpbin:8000"  # what the client asks for, as in the task
SHADOW_SERVICE = "httpbin-shadow:8000"
PORT = 8000
MARKER = ".shadowtap-demo"  # an OUT with this file was made by the demo and may be replaced
LOCK = Path("/run/lock/shadowtap-netlab.lock")  # shared with tests/netlab.py
SUBNET = "10.200"
WIDTH = 100


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="play Istio's mirroring task on this machine: httpbin v1 and v2, capture, replay, show, analyze",
        description="Reproduce Istio's \"Mirroring\" task with real servers (httpbin under gunicorn, in "
        "network namespaces when run as root), step by step: capture the traffic v1 gets, replay it to "
        "v2 with the -shadow Host, show one exchange, analyze; then the same against a changed v2 that "
        "the analysis must fail. Exit 0 when the demo played as expected.",
    )
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="where the recordings, logs and reports go (default demo-out; replaced if a demo made it)")
    p.add_argument("--keep-running", action="store_true",
                   help="before cleaning up, leave the servers running until Ctrl-C (to try things by hand)")
    p.add_argument("--loopback", action="store_true",
                   help="use loopback ports instead of network namespaces (the fallback when not root)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    return Demo(Path(args.out), keep_running=args.keep_running, loopback=args.loopback).run()


# -- small helpers ---------------------------------------------------------------------------
def _env() -> dict[str, str]:
    """No proxy: the demo's traffic goes to its own servers only. Unbuffered children."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def shadowtap_argv() -> list[str]:
    script = Path(sys.executable).parent / "shadowtap"
    return [str(script)] if script.exists() else [sys.executable, "-m", "capture.cli"]


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 8.0) -> None:
    """Stop a process the demo started, by its PID: `sig`, then SIGKILL to its own process group
    (it was started in a new session, so the group is the process and its children only)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers whose master went first


# -- network namespaces ----------------------------------------------------------------------
@dataclass
class Namespace:
    """A network namespace joined to the host by a veth pair (host side: where capture listens)."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str = ""
    ns_ip: str = ""

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]  # execs in place: the PID is the command's

    def exists(self) -> bool:
        return Path(f"/run/netns/{self.name}").exists()

    def pids(self) -> list[int]:
        if not self.exists():
            return []
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]


def _used_subnets() -> set[int]:
    used = set()
    text = _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    for m in re.finditer(rf"\b{re.escape(SUBNET)}\.(\d+)\.", text):
        used.add(int(m.group(1)))
    return used


def create_namespace(ns: Namespace) -> Namespace:
    """Create ns and its veth pair with a /30 no one else on this host uses (chosen under the lock
    tests/netlab.py takes). On failure what was made is removed and the error raised."""
    try:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            free = [x for x in range(1, 255) if x not in _used_subnets()]
            if not free:
                raise RuntimeError(f"no free {SUBNET}.X.0/30 subnet on this host")
            x = random.choice(free)
            ns.host_ip, ns.ns_ip = f"{SUBNET}.{x}.1", f"{SUBNET}.{x}.2"
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
            _ip("link", "set", ns.ns_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
            _ip("link", "set", ns.host_if, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if)
            _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
    except BaseException:
        remove_namespace(ns)
        raise
    return ns


def remove_namespace(ns: Namespace) -> list[str]:
    """Kill (by PID) whatever is still inside, delete the namespace and the host's veth end.
    Returns what could not be removed."""
    left = []
    for pid in ns.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if ns.exists():
        _ip("netns", "del", ns.name, check=False)
    if _ip("link", "show", ns.host_if, check=False).returncode == 0:  # the peer's deletion takes it, normally
        _ip("link", "del", ns.host_if, check=False)
    if ns.exists():
        left.append(f"namespace {ns.name}")
    if _ip("link", "show", ns.host_if, check=False).returncode == 0:
        left.append(f"interface {ns.host_if}")
    return left


# -- the servers -------------------------------------------------------------------------------
@dataclass
class Server:
    role: str  # v1, v2, v2-changed
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    logdir: Path
    ns: Namespace | None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.logdir / "access.log"

    def requests(self) -> list[tuple[str, str]]:
        """(method, target) of each access-log line (gunicorn's default, combined-like format)."""
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            m = re.search(r'"(\S+) (\S+) HTTP/[\d.]+"', line)
            if m:
                out.append((m.group(1), m.group(2)))
        return out

    def log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []


# -- the client's traffic ----------------------------------------------------------------------
# Each user is one curl process: one keep-alive connection, its requests in order. The three run
# at once, like clients of a real service. Fewer than 10 requests per endpoint: analyze judges
# latency only from 10 answers up, and a demo of a few dozen requests should not gate on jitter.
FORM = ("-H", "Content-Type: application/x-www-form-urlencoded")
USERS: list[tuple[str, list[tuple[str, str, tuple[str, ...]]]]] = [
    ("browser", [
        ("GET", "/json", ("-H", "Accept: application/json")),
        ("GET", "/html", ()),
        ("GET", "/image/png", ("-H", "Accept: image/png")),
        ("GET", "/robots.txt", ()),
        ("GET", "/encoding/utf8", ()),
        ("GET", "/links/5/0", ()),
        ("GET", "/cache", ("-H", "If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT")),
        ("GET", "/etag/v7", ("-H", 'If-None-Match: "v7"')),
        ("GET", "/headers", ()),
        ("GET", "/gzip", ("-H", "Accept-Encoding: gzip")),
        ("GET", "/brotli", ("-H", "Accept-Encoding: br")),
        ("GET", "/json", ("-H", "Accept: application/json")),
        ("GET", "/xml", ()),
    ]),
    ("api-client", [
        ("GET", "/bearer", ("-H", "Authorization: Bearer demo-t0ken-4f9a")),
        ("GET", "/anything/orders/1042?expand=items", ()),
        ("POST", "/post", ("-H", "Content-Type: application/json", "--data", '{"order":1042,"items":[7,9]}')),
        ("PUT", "/put", ("-H", "Content-Type: application/json", "--data", '{"order":1042,"state":"paid"}')),
        ("PATCH", "/patch", ("-H", "Content-Type: application/json", "--data", '{"state":"shipped"}')),
        ("DELETE", "/delete?id=1042", ()),
        ("GET", "/status/201", ()),
        ("GET", "/status/404", ()),
        ("GET", "/status/418", ()),
        ("GET", "/uuid", ()),
        ("GET", "/response-headers?Cache-Control=no-store", ()),
        ("GET", "/json", ()),
        ("GET", "/uuid", ()),
    ]),
    ("mobile-app", [
        ("GET", "/get?lang=en&page=2", ("-A", "demo-app/2.1")),
        ("HEAD", "/get", ("-A", "demo-app/2.1")),
        ("GET", "/basic-auth/demo/s3cret", ("-A", "demo-app/2.1", "-u", "demo:s3cret")),
        ("GET", "/cookies", ("-A", "demo-app/2.1", "-H", "Cookie: session=7c1e2a9d")),
        ("GET", "/redirect/2", ("-A", "demo-app/2.1")),
        ("GET", "/stream/3", ("-A", "demo-app/2.1")),
        ("GET", "/bytes/2048?seed=42", ("-A", "demo-app/2.1")),
        ("GET", "/range/1024", ("-A", "demo-app/2.1", "-H", "Range: bytes=0-99")),
        ("GET", "/deflate", ("-A", "demo-app/2.1", "-H", "Accept-Encoding: deflate")),
        ("GET", "/base64/SGVsbG8gZnJvbSBzaGFkb3d0YXA=", ("-A", "demo-app/2.1")),
        ("GET", "/ip", ("-A", "demo-app/2.1")),
        ("GET", "/user-agent", ("-A", "demo-app/2.1")),
        ("POST", "/post", ("-A", "demo-app/2.1", *FORM, "--data", "user=ada&password=hunter2")),
        ("GET", "/headers", ("-A", "demo-app/2.1")),
    ]),
]
TASK_REQUESTS = 3  # `curl http://httpbin:8000/headers`, each its own connection, as in the task


# -- the demo ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    verdicts: dict[str, str | None] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    recordings: dict[str, str] = field(default_factory=dict)


class Demo:
    def __init__(self, out: Path, keep_running: bool = False, loopback: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.abs = out.resolve()
        self.keep_running = keep_running
        self.force_loopback = loopback
        self._say = say or (lambda text: print(text, flush=True))
        self.procs: list[subprocess.Popen[Any]] = []  # everything started, in order
        self.started: list[dict[str, Any]] = []  # for demo.json: role, pid, argv
        self.namespaces: list[Namespace] = []
        self.servers: dict[str, Server] = {}
        self.mode = "netns"
        self.result = Outcome()
        self.t0 = time.monotonic()
        self.suffix = secrets.token_hex(3)
        self.shadowtap = shadowtap_argv()
        self.lock = threading.Lock()
        self.closing = False

    # -- printing ----------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self._say(text)

    def step(self, n: int, title: str, what: str) -> None:
        head = f"━━ {n}. {title} "
        self.say("")
        self.say(head + "━" * max(3, WIDTH - len(head)) + f" {time.monotonic() - self.t0:5.1f} s")
        for line in what.strip().split("\n"):
            self.say(line)

    def rel(self, p: Path | str) -> str:
        p = Path(p)
        try:
            r = os.path.relpath(p)
        except ValueError:
            return str(p)
        return r if not r.startswith("../..") else str(p)

    def show_cmd(self, argv: Sequence[str]) -> None:
        n = len(self.shadowtap)
        shown = ["shadowtap", *argv[n:]] if list(argv[:n]) == self.shadowtap else list(argv)
        self.say("$ " + shlex.join(shown))

    def expect(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.result.problems.append(problem)
            self.say(f"  !! not as expected: {problem}")
        return ok

    # -- processes ---------------------------------------------------------------------------
    def popen(self, role: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        with self.lock:  # the client threads start processes too; none may start once cleanup began
            if self.closing:
                raise RuntimeError("the demo is stopping")
            proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, env=_env(), **kw)
            self.procs.append(proc)
            self.started.append({"role": role, "pid": proc.pid, "argv": argv})
        return proc

    def call(self, role: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        """Run a short command the demo started (a client), bounded in time, and collect its output."""
        proc = self.popen(role, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, signal.SIGTERM, 2)
            return -1, "", f"timed out after {timeout:.0f} s"
        return proc.returncode, out, err

    def run(self) -> int:
        self._prepare_out()  # a UserError here: one line on stderr, exit 2, nothing started
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _interrupt)
        code = 1
        interrupted = False
        try:
            self._play()
            code = 0 if not self.result.problems else 1
        except KeyboardInterrupt:
            interrupted = True
            self.result.problems.append("interrupted")
            self.say("\ninterrupted: cleaning up")
            code = 130
        except UserError as e:
            self.result.problems.append(str(e))
            self.say(f"error: {e}")
            code = e.code
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            self.result.problems.append(str(e))
            self.say(f"error: {e}")
            code = 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
            try:
                left = self._cleanup()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            if left:
                self.result.problems.append("left running: " + ", ".join(left))
                code = code or 1
            self._finish(code, interrupted, left)
        return code

    # -- the steps -----------------------------------------------------------------------------
    def _prepare_out(self) -> None:
        out = self.abs
        if out.exists() and any(out.iterdir()):
            if not (out / MARKER).exists():
                raise UserError(f"{self.out} exists and was not made by shadowtap demo: remove it or choose another --out")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        (out / MARKER).write_text("made by shadowtap demo; replaced by the next run\n")
        if not FIXTURE.joinpath("changed_v2.py").exists():
            raise UserError(f"the demo needs the source tree ({FIXTURE} is missing): run it from a clone")
        missing = [m for m in ("httpbin", "gunicorn") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"the demo needs {' and '.join(missing)} in {sys.prefix}: pip install 'shadowtap[test]' "
                            "(make venv does)")
        if shutil.which("curl") is None:
            raise UserError("the demo needs curl (apt-get install curl; make demo does)")

    def _play(self) -> None:
        seed, changed = self.abs / "seed", self.abs / "changed"
        self.result.recordings = {"seed": str(seed), "changed": str(changed)}
        self.step(1, "Before you begin",
                  "Istio's task deploys httpbin v1 and v2 and a `sleep` pod as the client. Here: httpbin under\n"
                  "gunicorn with access logs on, v1 and v2 each in its own network namespace when the demo can\n"
                  "make them (a veth pair joins it to the host, like a pod's; else loopback ports), and curl on\n"
                  "the host as the client.")
        self._setup_network()
        v1 = self.start_httpbin("v1", self.namespaces[0] if self.namespaces else None)
        v2 = self.start_httpbin("v2", self.namespaces[1] if self.namespaces else None)
        self.wait_listening(v1)
        self.wait_listening(v2)
        self.say(f"  client: curl, resolving {SERVICE} to v1 ({v1.host}:{v1.port}) as the mesh's routing would")

        self.step(2, "Creating a default routing policy",
                  f"All traffic goes to v1. `shadowtap capture` records it on v1's {'veth' if self.mode == 'netns' else 'port'} "
                  f"while the client sends\n`GET /headers` as in the task, then three users' mix of httpbin endpoints.")
        pcap = seed / "pcap"
        agent, agent_lines = self.start_capture(v1, pcap)
        try:
            self.send_traffic(v1)
        finally:
            self.stop_capture(agent, agent_lines)
        v1_reqs, v2_reqs = v1.requests(), v2.requests()
        self.say(f"  v1's access log: {len(v1_reqs)} requests; v2's: {len(v2_reqs)}")
        self._log_excerpt(v1, "/headers")
        self.expect(len(v1_reqs) > 0 and not v2_reqs, f"v1 logged {len(v1_reqs)}, v2 {len(v2_reqs)} before mirroring")

        self.step(3, "Mirroring traffic to v2",
                  "Istio's VirtualService mirrors 100 % of v1's traffic to v2 (`mirrorPercentage`); Envoy adds\n"
                  "`-shadow` to the Host. shadowtap does it from the capture: extract it into a recording, then\n"
                  "replay it. httpbin keeps no state, so the writes are mirrored too (--allow-writes).")
        pcaps = sorted(str(p) for p in pcap.glob("shadowtap-*.pcap*"))
        if not self.expect(bool(pcaps), f"the capture wrote no file in {self.rel(pcap)}"):
            return
        self.shadowtap_cmd(["extract", *map(self.rel, pcaps), "-o", self.rel(seed), "--table", "-"], timeout=60)
        self.replay(seed, v2)
        v2_reqs = v2.requests()
        self.say(f"  v2's access log now: {len(v2_reqs)} requests (v1's: {len(v1.requests())})")
        self._log_excerpt(v2, "/headers")
        self.expect(Counter(v2_reqs) == Counter(v1_reqs),
                    f"v2 logged {len(v2_reqs)} requests, not the {len(v1_reqs)} v1 logged")

        self.step(4, "Examine traffic internals",
                  "The task runs tcpdump in the client's sidecar to see both conversations. `shadowtap show`\n"
                  "prints one exchange from the recording: the request and v1's answer as captured, then the\n"
                  f"request as sent to v2 (Host: {SHADOW_SERVICE}) and v2's answer.")
        self.shadowtap_cmd(["show", self.rel(seed), "--endpoint", ARTIFACT_ENDPOINT], timeout=30)

        self.step(5, "Analyze: v2 against v1",
                  "Istio throws v2's answers away; shadowtap kept them. `shadowtap analyze` compares them with v1's\n"
                  "and decides (exit 0 pass, 1 fail).")
        self.analyze(seed, "seed", expect_pass=True)

        self.step(6, "The same against a changed candidate",
                  "A v2 build with a regression (fixtures/demo/changed_v2.py: httpbin whose `GET /json` retitles\n"
                  "the slideshow) replaces v2. The same capture is extracted and replayed to it, and analyzed.")
        stop_process(v2.proc)
        self.say(f"  stopped v2 (pid {v2.proc.pid})")
        v3 = self.start_httpbin("v2-changed", v2.ns, app=CHANGED_APP, port=v2.port)
        self.wait_listening(v3)
        self.shadowtap_cmd(["extract", *map(self.rel, pcaps), "-o", self.rel(changed)], timeout=60)
        self.replay(changed, v3)
        self.say(f"  the changed v2's access log: {len(v3.requests())} requests")
        self.shadowtap_cmd(["show", self.rel(changed), "--endpoint", CHANGED_ENDPOINT], timeout=30)
        self.analyze(changed, "changed", expect_pass=False)

        if self.keep_running:
            self.say("")
            self.say("servers kept running (--keep-running):")
            for s in self.servers.values():
                if s.proc.poll() is None:
                    where = f" in netns {s.ns.name}" if s.ns else ""
                    self.say(f"  {s.role:11} {s.url}{where}  pid {s.proc.pid}  log {self.rel(s.access_log)}")
            self.say(f"  e.g. curl --connect-to {SERVICE}:{v1.host}:{v1.port} http://{SERVICE}/headers")
            self.say("press Ctrl-C to stop them and clean up")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)

    def _setup_network(self) -> None:
        if self.force_loopback:
            self.mode = "loopback"
            self.say("  --loopback: the servers listen on loopback ports")
            return
        if os.geteuid() != 0 or shutil.which("ip") is None:
            self.mode = "loopback"
            self.say("  not root (or no `ip`): no network namespaces, the servers listen on loopback ports")
            return
        try:
            for i, role in enumerate(("v1", "v2"), 1):
                ns = Namespace(f"shadowtap-demo-{self.suffix}-{role}", f"sd{self.suffix}{i}h", f"sd{self.suffix}{i}n")
                self.namespaces.append(ns)
                create_namespace(ns)
                self.say(f"$ ip netns add {ns.name}    # + veth {ns.host_if} ({ns.host_ip}, host) <-> "
                         f"{ns.ns_if} ({ns.ns_ip}, in it)")
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            self.say(f"  network namespaces are not available here ({e}); using loopback ports instead")
            for ns in self.namespaces:
                remove_namespace(ns)
            self.namespaces.clear()
            self.mode = "loopback"

    def start_httpbin(self, role: str, ns: Namespace | None, app: str = "httpbin:app", port: int | None = None) -> Server:
        logdir = self.abs / "logs" / role
        logdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (logdir.parent, logdir):
            d.chmod(0o700)  # access logs quote the captured traffic: owner only, like the recordings
        host = ns.ns_ip if ns else "127.0.0.1"
        port = port or (PORT if ns else _free_port())
        argv = [sys.executable, "-m", "gunicorn", "--no-control-socket", "-b", f"{host}:{port}",
                "-w", "1", "-k", "gthread", "--threads", "4", "--keep-alive", "60",
                "--access-logfile", str(logdir / "access.log"), "--error-logfile", str(logdir / "error.log"),
                "--chdir", str(logdir)]
        if app != "httpbin:app":
            argv += ["--pythonpath", str(FIXTURE)]
        argv.append(app)
        full = ns.argv(argv) if ns else argv
        shown = ["python", *argv[1:]]
        text = shlex.join(shown).replace(str(self.abs), self.rel(self.abs)).replace(str(FIXTURE), self.rel(FIXTURE))
        self.say(f"$ {'ip netns exec ' + ns.name + ' ' if ns else ''}{text}")
        with open(logdir / "stderr.log", "wb") as err:
            proc = self.popen(role, full, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        server = Server(role, proc, host, port, logdir, ns)
        self.servers[role] = server
        return server

    def wait_listening(self, s: Server, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.role} (gunicorn) exited with {s.proc.returncode}: {self._tail(s.logdir)}")
            if "Connection in use" in self._tail(s.logdir):  # someone else's server on that port
                raise RuntimeError(f"{s.role}: {s.host}:{s.port} is taken by another process")
            try:
                with socket.create_connection((s.host, s.port), timeout=0.5):
                    break  # connects and closes without a byte: gunicorn logs nothing for it
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{s.role} not listening on {s.host}:{s.port} after {timeout:.0f} s: "
                                       f"{self._tail(s.logdir)}") from None
                time.sleep(0.1)
        self.say(f"  {s.role} listening on {s.url}, pid {s.proc.pid}")

    @staticmethod
    def _tail(logdir: Path) -> str:
        text = ""
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(OSError):
                text += (logdir / name).read_text(errors="replace")[-600:]
        return text.strip()

    def start_capture(self, v1: Server, pcap: Path) -> tuple[subprocess.Popen[str], list[str]]:
        iface = v1.ns.host_if if v1.ns else "lo"
        argv = [*self.shadowtap, "capture", "-i", iface, "--port", str(v1.port), "-w", self.rel(pcap), "--duration", "90"]
        self.show_cmd(argv)
        proc = self.popen("capture", argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                self.say("  " + line.rstrip("\n"))
                if line.startswith("capturing on"):
                    ready.set()
            ready.set()

        t = threading.Thread(target=read, daemon=True, name="capture-stderr")
        t.start()
        lines_t = lines
        ready.wait(20)
        if proc.poll() is not None or not any(x.startswith("capturing on") for x in lines_t):
            stop_process(proc, signal.SIGINT, 15)
            t.join(5)
            hint = "" if os.geteuid() == 0 else " (capturing packets needs root or CAP_NET_RAW)"
            raise RuntimeError(f"shadowtap capture did not start{hint}: {' / '.join(lines_t[-3:])}")
        proc._demo_reader = t  # type: ignore[attr-defined]
        return proc, lines

    def stop_capture(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.say(f"$ kill -INT {proc.pid}    # stop the capture: it closes its file and prints its counts")
        stop_process(proc, signal.SIGINT, 20)
        getattr(proc, "_demo_reader").join(5)
        self.expect(proc.returncode == 0, f"shadowtap capture exited {proc.returncode}")

    def curl_argv(self, v1: Server, segments: list[tuple[str, str, tuple[str, ...]]]) -> list[str]:
        argv = ["curl"]
        for i, (method, path, extra) in enumerate(segments):
            if i:
                argv.append("--next")
            argv += ["--noproxy", "*", "-sS", "--max-time", "10", "--connect-to", f"{SERVICE}:{v1.host}:{v1.port}"]
            if method == "HEAD":
                argv.append("-I")
            elif method not in ("GET", "POST") or (method == "POST" and "--data" not in extra):
                argv += ["-X", method]
            argv += [*extra, "-o", "/dev/null", "-w", "%{http_code}\\n", f"http://{SERVICE}{path}"]
        return argv

    def send_traffic(self, v1: Server) -> None:
        connect = f"--connect-to {SERVICE}:{v1.host}:{v1.port}"
        for i in range(TASK_REQUESTS):
            argv = ["curl", "--noproxy", "*", "-sS", "--max-time", "10", "--connect-to",
                    f"{SERVICE}:{v1.host}:{v1.port}", f"http://{SERVICE}/headers"]
            if i == 0:
                self.say(f"$ curl {connect} http://{SERVICE}/headers")
            code, stdout, stderr = self.call("client", argv, timeout=20)
            if not self.expect(code == 0, f"curl /headers failed: {stderr.strip()}"):
                return
            if i == 0:
                for line in stdout.rstrip().splitlines():
                    self.say("  " + line)
        self.say(f"  (sent {TASK_REQUESTS} times, each on its own connection, as `kubectl exec … curl` does)")
        results: dict[str, tuple[int, str, str]] = {}

        def user(name: str, segments: list[tuple[str, str, tuple[str, ...]]]) -> None:
            try:
                results[name] = self.call("client", self.curl_argv(v1, segments), timeout=60)
            except (RuntimeError, OSError) as e:  # the demo is stopping
                results[name] = (-1, "", str(e))

        self.say(f"$ curl {connect} http://{SERVICE}/json --next … http://{SERVICE}/xml    # and two more users at once")
        threads = [threading.Thread(target=user, args=(name, segs), daemon=True) for name, segs in USERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(70)
        for name, segs in USERS:
            code, stdout, stderr = results.get(name, (-1, "", "did not finish"))
            statuses = stdout.split()
            shown = ", ".join(f"{m} {p.split('?')[0]} {s}" for (m, p, _), s in zip(segs, statuses))
            self.say(f"  {name} ({len(segs)} requests, one connection): {shown}")
            self.expect(code == 0 and len(statuses) == len(segs), f"{name}'s curl exited {code}: {stderr.strip()[:200]}")

    def _log_excerpt(self, s: Server, path: str) -> None:
        lines = [x for x in s.log_lines() if f" {path} " in x]
        self.say(f"$ grep ' {path} ' {self.rel(s.access_log)}    # {s.role}")
        for line in lines[:2]:
            self.say("  " + line)
        if len(lines) > 2:
            self.say(f"  … {len(lines) - 2} more")

    def shadowtap_cmd(self, args: list[str], timeout: float) -> tuple[int, str]:
        argv = [*self.shadowtap, *args]
        self.show_cmd(argv)
        proc = self.popen(args[0], argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, lambda: stop_process(proc, signal.SIGTERM, 5))
        timer.start()
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                self.say("  " + line.rstrip("\n"))
            proc.wait()
        finally:
            timer.cancel()
        if proc.returncode < 0:
            self.expect(False, f"shadowtap {args[0]} was stopped after {timeout:.0f} s")
        return proc.returncode, "".join(lines)

    def replay(self, rec: Path, target: Server) -> None:
        code, _ = self.shadowtap_cmd(["replay", self.rel(rec), "--target", target.url, "--percent", "100",
                                      "--allow-writes"], timeout=60)
        self.expect(code == 0, f"shadowtap replay exited {code}")
        self.say("  (--percent 10 would send a repeatable 10 % sample, like mirrorPercentage: 10)")

    def analyze(self, rec: Path, label: str, expect_pass: bool) -> None:
        code, _ = self.shadowtap_cmd(["analyze", self.rel(rec)], timeout=60)
        path = rec / "report" / "report.json"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.expect(False, f"{label}: no report.json ({e})")
            return
        self.result.reports[label] = str(rec / "report")
        v = report.get("verdict")
        self.result.verdicts[label] = v
        eps = {e["endpoint"]: e for e in report.get("endpoints", [])}
        changes = {(e["endpoint"], f["path"]) for e in eps.values() for f in e["fields"] if f["classification"] == "change"}
        if expect_pass:
            self.expect(code == 0 and v == "pass", f"{label}: verdict {v} (exit {code}), expected pass")
            hdr = eps.get(ARTIFACT_ENDPOINT)
            fields = {f["path"]: f for f in (hdr or {}).get("fields", [])}
            host = fields.get(ARTIFACT_FIELD)
            if self.expect(hdr is not None and host is not None and host["classification"] == "artifact",
                           f"{label}: {ARTIFACT_ENDPOINT} {ARTIFACT_FIELD} not classified artifact "
                           f"({host and host['classification']})") and hdr and host:
                ex = (host.get("examples") or [{}])[0]
                others = sorted(p for p, f in fields.items() if f["classification"] != "artifact")
                self.say(f"  {ARTIFACT_ENDPOINT}: {hdr['replayed']} answers compared, {hdr['different']} different; "
                         f"{ARTIFACT_FIELD} differs in {host['raw']} of them ({ex.get('primary')!r} -> {ex.get('shadow')!r}),")
                self.say("  classified `artifact`: it is the Host the mirroring itself rewrote, not a regression"
                         + (f" (other fields: {', '.join(others)})" if others else ""))
            self.expect(not changes, f"{label}: fields reported as changes: {sorted(changes)}")
            self._elsewhere(eps)
        else:
            self.expect(code == 1 and v == "fail", f"{label}: verdict {v} (exit {code}), expected fail")
            reasons = report.get("reasons", [])
            self.expect(any(CHANGED_ENDPOINT in r and CHANGED_FIELD in r for r in reasons),
                        f"{label}: no reason names {CHANGED_ENDPOINT} and {CHANGED_FIELD}: {reasons}")
            self.expect(changes == {(CHANGED_ENDPOINT, CHANGED_FIELD)},
                        f"{label}: changes found {sorted(changes)}, expected only {CHANGED_ENDPOINT} {CHANGED_FIELD}")
            f = next((f for f in eps.get(CHANGED_ENDPOINT, {}).get("fields", []) if f["path"] == CHANGED_FIELD), None)
            if f:
                ex = (f.get("examples") or [{}])[0]
                self.say(f"  {CHANGED_ENDPOINT} {CHANGED_FIELD}: {ex.get('primary')!r} (v1) -> {ex.get('shadow')!r} "
                         f"(changed v2) in {f['raw']} of {eps[CHANGED_ENDPOINT]['replayed']} answers: the regression")

    def _elsewhere(self, eps: dict[str, Any]) -> None:
        """What else analyze set aside, in one or two lines: artifacts by field, noise by endpoint."""
        arts: dict[str, set[str]] = {}
        noise = []
        for ep, e in eps.items():
            for f in e["fields"]:
                if f["classification"] == "artifact" and (ep, f["path"]) != (ARTIFACT_ENDPOINT, ARTIFACT_FIELD):
                    arts.setdefault(re.sub(r"\[\d+\]", "[*]", f["path"]), set()).add(ep)
                elif f["classification"] in ("noise", "probable_noise"):
                    noise.append(f"{ep} {f['path']}")
        if arts:
            self.say("  elsewhere, also artifacts: " + ", ".join(f"{p} ({len(e)} endpoint{'s' if len(e) > 1 else ''})"
                                                         for p, e in sorted(arts.items(), key=lambda x: -len(x[1])))
                     + "\n  (the echoed Host and URL, and `origin`: v2 sees the replayer's address, not the client's)")
        if noise:
            self.say(f"  noise (values that differ on every answer, not counted): {', '.join(sorted(noise))}")

    # -- cleaning up -------------------------------------------------------------------------
    def _cleanup(self) -> list[str]:
        self.step(7, "Cleaning up", "Everything the demo started is stopped by its PID"
                  + ("; the namespaces are removed." if self.namespaces else "."))
        with self.lock:
            self.closing = True
            started = list(zip(self.procs, self.started))
        for proc, info in reversed(started):
            if proc.poll() is None:
                stop_process(proc, signal.SIGTERM)  # the capture agent stops as cleanly on SIGTERM as on SIGINT
                self.say(f"  stopped {info['role']} (pid {proc.pid})")
        left = []
        for ns in self.namespaces:
            left += remove_namespace(ns)
            self.say(f"$ ip netns del {ns.name}")
        for proc, info in started:
            if _alive(proc.pid) and proc.poll() is None:
                left.append(f"{info['role']} pid {proc.pid}")
        for line in left:
            self.say(f"  !! still there: {line}")
        return left

    def _finish(self, code: int, interrupted: bool, left: list[str]) -> None:
        seconds = time.monotonic() - self.t0
        r = self.result
        record = {
            "ok": code == 0, "exit": code, "interrupted": interrupted, "seconds": round(seconds, 1),
            "mode": self.mode, "namespaces": [ns.name for ns in self.namespaces],
            "interfaces": [ns.host_if for ns in self.namespaces],
            "processes": [{"role": i["role"], "pid": i["pid"], "argv": i["argv"]} for i in self.started],
            "left_running": left, "recordings": r.recordings, "reports": r.reports, "verdicts": r.verdicts,
            "problems": r.problems,
        }
        with contextlib.suppress(OSError):
            if (self.abs / MARKER).exists():
                (self.abs / "demo.json").write_text(json.dumps(record, indent=2) + "\n")
        self.say("")
        for label, d in r.reports.items():
            self.say(f"report ({label}, verdict {r.verdicts.get(label)}): {self.rel(Path(d) / 'index.html')}, "
                     f"{self.rel(Path(d) / 'summary.md')}, {self.rel(Path(d) / 'report.json')}")
        made = [p for p in r.recordings.values() if Path(p, "exchanges").is_dir()]
        if made:
            self.say(f"recordings: {', '.join(self.rel(p) for p in made)}; "
                     f"server logs: {self.rel(self.abs / 'logs')}")
        if code == 0:
            self.say(f"demo played as expected in {seconds:.1f} s: v2 passes, the changed v2 fails on "
                     f"{CHANGED_ENDPOINT} {CHANGED_FIELD}")
        else:
            self.say(f"demo did not play as expected ({seconds:.1f} s):")
            for p in r.problems:
                self.say(f"  - {p}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
