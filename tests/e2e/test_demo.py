"""The seed scenario end to end: `shadowtap demo`, as `make demo` runs it.

The demo plays Istio's mirroring task with real servers (httpbin v1 and v2 under gunicorn in
network namespaces, curl, `shadowtap capture | extract | replay | show | analyze`), then the same
against fixtures/demo/changed_v2.py. These tests hold it to the issue: it exits 0 within two
minutes; the first report passes with `/headers`' echoed Host classified as the mirroring
artifact; the second fails naming `GET /json` and `body.slideshow.title`; and nothing the demo
started (servers, capture, tcpdump, clients, namespaces, veths) is left afterwards, also when it
is interrupted.

Needs root, like the other live tests (network namespaces, capture on a veth).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests import netlab

# Root, as every test that captures or makes namespaces here: CI runs as root, so a missing
# privilege fails loudly instead of skipping the project's main job.
pytestmark = [pytest.mark.timeout(240)]

BOUND = 150.0  # seconds: the issue asks for 2 minutes; CI machines get some slack
STEPS = ["1. Before you begin", "2. Creating a default routing policy", "3. Mirroring traffic to v2",
         "4. Examine traffic internals", "5. Analyze: v2 against v1", "6. The same against a changed candidate",
         "7. Cleaning up"]


def demo(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t = time.monotonic()
    p = subprocess.run([*netlab.shadowtap_argv(), "demo", "--out", str(out), *args], capture_output=True, text=True,
                       timeout=BOUND, cwd=netlab.REPO, env=netlab.curl_env())
    return p, time.monotonic() - t


def cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def leftovers(out: Path, record: dict[str, Any], stdout: str) -> list[str]:
    """What the demo started and is still there: namespaces, veths, and processes (by the PIDs it
    recorded, and any process whose command line mentions OUT: gunicorn, tcpdump, the capture
    agent and its guard)."""
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    names = set(record["namespaces"]) | set(re.findall(r"^\$ ip netns add (\S+)", stdout, re.M))
    assert names or record["mode"] == "loopback"
    left += [f"namespace {n}" for n in names if re.search(rf"^{re.escape(n)}\b", netns, re.M)]
    for iface in record["interfaces"]:
        if subprocess.run(["ip", "link", "show", iface], capture_output=True, timeout=10).returncode == 0:
            left.append(f"interface {iface}")
    for p in record["processes"]:
        now = cmdline(p["pid"])
        if now and " ".join(p["argv"]).endswith(now):  # `ip netns exec NS python …` execs into `python …`
            left.append(f"{p['role']} pid {p['pid']}: {now[:120]}")
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me and str(out) in cmdline(d.name):
            left.append(f"pid {d.name}: {cmdline(d.name)[:160]}")
    return left


def report(rec: Path) -> dict[str, Any]:
    return json.loads((rec / "report" / "report.json").read_text())


def fields(r: dict[str, Any], endpoint: str) -> dict[str, str]:
    ep = next(e for e in r["endpoints"] if e["endpoint"] == endpoint)
    return {f["path"]: f["classification"] for f in ep["fields"]}


def changes(r: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["endpoint"], f["path"]) for e in r["endpoints"] for f in e["fields"] if f["classification"] == "change"}


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    p, seconds = demo(out)
    return out, p, seconds


def test_demo_plays_the_task_and_exits_0(played: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    out, p, seconds = played
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert seconds < 120, f"the demo took {seconds:.0f} s"
    at = [p.stdout.find("━━ " + s) for s in STEPS]
    assert all(i >= 0 for i in at) and at == sorted(at), at
    record = json.loads((out / "demo.json").read_text())
    assert record["ok"] and record["mode"] == "netns" and len(record["namespaces"]) == 2
    assert record["verdicts"] == {"seed": "pass", "changed": "fail"}
    # step 4: the shadow's side of `show`, as in the task's tcpdump
    show = p.stdout[at[3]:at[4]]
    assert "\n  Host: httpbin:8000\n" in show and "\n  Host: httpbin-shadow:8000\n" in show
    assert '"Host": "httpbin-shadow:8000"' in show
    # step 2 and 3: v1 logged the traffic and v2 nothing, then v2 the same requests
    v1 = (out / "logs" / "v1" / "access.log").read_text().splitlines()
    v2 = (out / "logs" / "v2" / "access.log").read_text().splitlines()
    assert len(v1) >= 40 and sum(" /headers " in x for x in v1) >= 3

    def requests(lines: list[str]) -> list[str]:
        return sorted(re.search(r'"([A-Z]+ \S+) HTTP', x).group(1) for x in lines)  # type: ignore[union-attr]
    assert requests(v1) == requests(v2)
    assert re.search(r"v1's access log: \d+ requests; v2's: 0", p.stdout)


def test_seed_passes_with_the_headers_artifact(played: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    out, _, _ = played
    r = report(out / "seed")
    assert r["verdict"] == "pass" and r["reasons"] == []
    assert fields(r, "GET /headers") == {"body.headers.Host": "artifact"}
    assert not changes(r)
    assert r["totals"]["errors"] == 0 and r["totals"]["replayed"] == r["totals"]["requests"]
    assert (out / "seed" / "pcap").is_dir() and (out / "seed" / "report" / "index.html").is_file()


def test_changed_candidate_fails_on_the_regression(played: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    out, p, _ = played
    r = report(out / "changed")
    assert r["verdict"] == "fail"
    assert any("GET /json" in x and "body.slideshow.title" in x for x in r["reasons"]), r["reasons"]
    assert changes(r) == {("GET /json", "body.slideshow.title")}
    ex = next(f for f in next(e for e in r["endpoints"] if e["endpoint"] == "GET /json")["fields"]
              if f["path"] == "body.slideshow.title")["examples"][0]
    assert (ex["primary"], ex["shadow"]) == ("Sample Slide Show", "Sample Slideshow")
    assert fields(r, "GET /headers") == {"body.headers.Host": "artifact"}
    assert "verdict: FAIL" in p.stdout


def test_nothing_the_demo_started_is_left(played: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    out, p, _ = played
    record = json.loads((out / "demo.json").read_text())
    assert {x["role"] for x in record["processes"]} >= {"v1", "v2", "v2-changed", "capture", "client", "replay"}
    assert record["left_running"] == []
    assert leftovers(out, record, p.stdout) == []


def test_interrupted_demo_cleans_up(tmp_path: Path) -> None:
    """Ctrl-C while the capture runs (servers, agent and tcpdump up): exit 130, nothing left."""
    out = tmp_path / "demo-out"
    proc = subprocess.Popen([*netlab.shadowtap_argv(), "demo", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=netlab.REPO, env=netlab.curl_env())
    seen = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            seen.append(line)
            if line.strip().startswith("capturing on") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = "".join(seen) + rest
    assert proc.returncode == 130, stdout[-3000:]
    assert "interrupted: cleaning up" in stdout and "━━ 7. Cleaning up" in stdout
    record = json.loads((out / "demo.json").read_text())
    assert record["interrupted"] and not record["ok"]
    assert leftovers(out, record, stdout) == []


def test_loopback_fallback(tmp_path: Path) -> None:
    """Where namespaces cannot be made, the same demo on loopback ports (capture on lo)."""
    out = tmp_path / "demo-out"
    p, seconds = demo(out, "--loopback")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    record = json.loads((out / "demo.json").read_text())
    assert record["mode"] == "loopback" and record["namespaces"] == []
    assert record["verdicts"] == {"seed": "pass", "changed": "fail"}
    assert fields(report(out / "seed"), "GET /headers") == {"body.headers.Host": "artifact"}
    assert changes(report(out / "changed")) == {("GET /json", "body.slideshow.title")}
    assert leftovers(out, record, p.stdout) == []


def test_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    p, _ = demo(tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and "was not made by shadowtap demo" in p.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
