"""The analyze HTML page: pure checks on the string, then a real headless Chromium.

The page carries production bodies and headers to whoever opens a release review, offline,
so the pure tests pin what must never regress: escaping, no external resource, the verdict,
every endpoint, the highlights. The browser test proves what a string cannot: the page
renders without a console error or a single request beyond its own file, the verdict and the
table are really visible, and the screenshot (kept in tests/artifacts/) is not blank.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fds 3 and
4, NUL-separated JSON), so the test needs no port, no network and no PyPI package.
"""
from __future__ import annotations

import base64
import copy
import fcntl
import html
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from analyze.report_html import render_html

SAMPLE = Path(__file__).with_name("report_sample.json")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "report_html"
BROWSER_DEADLINE = 60.0  # seconds for one whole browser session, launch to close
VIEWPORT = (1280, 2000)


def sample() -> dict[str, Any]:
    """A fresh copy of the sample report (tests may change it)."""
    report: dict[str, Any] = json.loads(SAMPLE.read_text())
    return report


# ---------------------------------------------------------------- a tiny DOM reader


class Page(HTMLParser):
    """Collects what the tests look for: every element's tag, attributes and own text, the
    text of each code line, and <style> contents. Stdlib only, and it parses as a browser
    tokenizer does, so a raw tag smuggled through would show up as an element."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "rect", "line"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []
        self.styles: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = {"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "text": ""}
        self.elements.append(el)
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "text": ""})

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el["text"] += data
        if self.stack and self.stack[-1]["tag"] == "style":
            self.styles.append(data)

    def having_class(self, cls: str) -> list[dict[str, Any]]:
        return [el for el in self.elements if cls in el["attrs"].get("class", "").split()]

    def by_id(self, ident: str) -> dict[str, Any]:
        found = [el for el in self.elements if el["attrs"].get("id") == ident]
        assert len(found) == 1, f"id {ident!r} appears {len(found)} times"
        return found[0]


def highlighted(page: Page, example_id: str, side: str) -> list[str]:
    """The highlighted lines' text in one side ("primary"/"shadow") of one example."""
    return [el["text"] for el in highlighted_lines(page, example_id, side)]


def highlighted_lines(page: Page, example_id: str, side: str) -> list[dict[str, Any]]:
    """As highlighted(), the elements."""
    start = page.elements.index(page.by_id(f"ex-{example_id}"))
    out: list[dict[str, Any]] = []
    in_side = False
    for el in page.elements[start + 1 :]:
        if el["tag"] == "article":
            break
        classes = el["attrs"].get("class", "").split()
        if "side" in classes:
            in_side = side in classes
        elif in_side and "line" in classes and "hl" in classes:
            out.append(el)
    return out


# ---------------------------------------------------------------- pure tests


def test_production_bytes_are_escaped_never_raw() -> None:
    report = sample()
    text = render_html(report)
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;&amp;amp;&lt;/b&gt;" in text  # "&amp;" in a header stays literal
    page = Page(text)
    assert not [el for el in page.elements if el["tag"] in ("script", "img", "iframe", "object", "embed", "b")]
    assert not [el for el in page.elements for name in el["attrs"] if name.startswith("on")]


def test_hostile_names_everywhere_stay_text() -> None:
    """Endpoint names, ids, reasons and paths reach attributes and SVG text too."""
    evil = "\"'><svg onload=alert(3)>&"
    report = sample()
    report["recording"] = evil
    report["reasons"].append(evil)
    report["problems"].append(evil)
    ep = report["endpoints"][0]
    ep["endpoint"] = "GET /x" + evil
    ep["status_transitions"][evil] = 1
    ep["fields"][0]["path"] = "header." + evil
    for example in report["examples"].values():
        if example["endpoint"] == "GET /api/users/{id}":
            example["endpoint"] = ep["endpoint"]
            example["paths"].append("header." + evil)
            example["primary"]["headers"].append([evil, evil])
    report["examples"][evil] = {"endpoint": evil, "request": {"method": evil, "target": evil, "headers": [[evil, evil]],
                                                              "body": evil},
                                "primary": {"status": evil, "headers": [], "body": evil},
                                "shadow": {"status": None, "headers": [], "body": None, "error": evil}, "paths": [evil]}
    text = render_html(report)
    assert "<svg onload" not in text
    page = Page(text)
    assert not [el for el in page.elements for name in el["attrs"] if name.startswith("on")]
    assert sum(evil in el["text"] for el in page.elements if el["tag"] == "li") >= 2  # reasons and problems, as text
    assert any(el["text"] == "GET /x" + evil for el in page.elements if el["tag"] == "a")
    assert any(evil in el["text"] for el in page.elements if el["tag"] == "text")  # the SVG label


def test_no_external_resource_can_load() -> None:
    text = render_html(sample())
    page = Page(text)
    for el in page.elements:
        for name, value in el["attrs"].items():
            if name in ("src", "href", "action", "formaction", "poster", "data", "background", "xlink:href",
                        "srcset", "manifest", "ping", "cite", "longdesc"):
                assert value.startswith("#") or value.startswith("data:"), (el["tag"], name, value)
    style = "".join(page.styles) + "".join(el["attrs"].get("style", "") for el in page.elements)
    assert "@import" not in style and "url(" not in style and "//" not in style
    assert not re.search(r"(?:src|href|action)\s*=\s*[\"']?\s*(?:https?:)?//", text, re.I)
    assert not [el for el in page.elements if el["tag"] in ("script", "link") and el["attrs"].get("rel") != "icon"]
    csp = [el["attrs"]["content"] for el in page.elements if el["attrs"].get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_the_verdict_comes_first_with_its_reasons() -> None:
    report = sample()
    text = render_html(report)
    page = Page(text)
    verdict = page.by_id("verdict")
    assert "fail" in verdict["attrs"]["class"].split()
    assert verdict["text"].lstrip().startswith("FAIL")
    for reason in report["reasons"]:
        assert reason in verdict["text"]
    order = [text.index(f'id="{ident}"') for ident in ("verdict", "totals", "endpoints", "charts")]
    assert order == sorted(order)
    tags = [el["tag"] for el in page.elements]
    assert page.elements[tags.index("body") + 1] is verdict  # the first thing on the page
    assert page.elements[[el["tag"] for el in page.elements].index("title")]["text"].startswith("FAIL")

    report.update(verdict="pass", reasons=[])
    passed = Page(render_html(report)).by_id("verdict")
    assert passed["text"].lstrip().startswith("PASS") and "Every threshold is met" in passed["text"]
    assert "pass" in passed["attrs"]["class"].split()


def test_totals_and_every_endpoint_with_a_working_link() -> None:
    report = sample()
    page = Page(render_html(report))
    assert "3,823" in page.by_id("totals")["text"] and "5.90%" in page.by_id("totals")["text"]
    rows = [el for el in page.elements if el["tag"] == "tr" and el["text"] and
            any(ep["endpoint"] in el["text"] for ep in report["endpoints"])]
    table = page.by_id("endpoints")
    links = [el for el in page.elements if el["tag"] == "a" and el["attrs"].get("href", "").startswith("#ep-")]
    assert [a["text"] for a in links] == [ep["endpoint"] for ep in report["endpoints"]]
    for ep, link in zip(report["endpoints"], links):
        section = page.by_id(link["attrs"]["href"][1:])
        assert section["tag"] == "section" and ep["endpoint"] in section["text"]
        assert ep["endpoint"] in table["text"]
    users = next(row for row in rows if "GET /api/users/{id}" in row["text"])
    assert "12.1%" in users["text"] and "48.2 / 65.9" in users["text"] and "+36.7%" in users["text"]
    for ident in {a["attrs"]["href"][1:] for a in page.elements if a["tag"] == "a"
                  and a["attrs"].get("href", "").startswith("#")}:
        page.by_id(ident)  # every in-page link has exactly one target


def test_sections_hold_transitions_ranked_fields_and_badges() -> None:
    report = sample()
    text = render_html(report)
    page = Page(text)
    users = page.by_id([el for el in page.elements if el["tag"] == "section" and
                        el["attrs"].get("id", "").startswith("ep-1-")][0]["attrs"]["id"])
    assert "200" in users["text"] and "500" in users["text"] and "9" in users["text"]
    tables = re.findall(r'<table class="fields">.*?</table>', text, re.S)
    shown = [html.unescape(p) for t in tables for p in re.findall(r"<tr><td><code>(.*?)</code></td>", t)]
    assert shown == [f["path"] for ep in report["endpoints"] for f in ep["fields"]]  # the report's rank, kept
    badges = {el["attrs"]["class"].split()[1] for el in page.having_class("badge")}
    assert badges == {"change", "noise", "probable_noise", "artifact"}
    assert "9.99 → 12.99" in users["text"]


def test_differing_paths_are_highlighted_on_both_sides() -> None:
    page = Page(render_html(sample()))
    # A JSON field: the line holding the key and its value, on each side.
    assert [t for t in highlighted(page, "c41f09a2e7b1-42", "primary") if "price" in t] == ['7    "price": 9.99,']
    assert [t for t in highlighted(page, "c41f09a2e7b1-42", "shadow") if "price" in t] == ['7    "price": 12.99,']
    # Headers: the header line; and nothing else of that body.
    assert "cache-control: no-store" in highlighted(page, "c41f09a2e7b1-42", "shadow")
    assert "x-cache: HIT" in highlighted(page, "c41f09a2e7b1-42", "primary")
    assert len([t for t in highlighted(page, "c41f09a2e7b1-42", "shadow") if t[:1].isdigit()]) == 1
    # The status line, and a header the shadow lacks shown as absent.
    assert "HTTP 500 Internal Server Error" in highlighted(page, "c41f09a2e7b1-17", "shadow")
    assert "HTTP 200 OK" in highlighted(page, "c41f09a2e7b1-17", "primary")
    assert "(x-cache: absent)" in highlighted(page, "c41f09a2e7b1-17", "shadow")
    # An array element's field, and the search artifact beside the escaped script tag.
    assert [t for t in highlighted(page, "5a0c3e9d1f26-8", "shadow") if "score" in t] == ['7      "score": 0.8127']
    assert highlighted(page, "9be47d21a0c3-3", "shadow") == ['17    "host": "shop-shadow:8000",']
    # Lines say which path lit them.
    lit = [el for side in ("primary", "shadow") for el in highlighted_lines(page, "c41f09a2e7b1-42", side)]
    assert {el["attrs"]["title"] for el in lit} == {"body.plan.price", "header.cache-control", "header.x-cache"}
    # The shadow's error is shown, not an empty column.
    errors = [el["text"] for el in page.having_class("err")]
    assert "error: timeout: no response within 5.0 s" in errors


def _one_example(primary_body: str | None, shadow_body: str | None, paths: list[str]) -> Page:
    """A minimal report with a single example, for the highlight rules."""
    return Page(render_html({"verdict": "fail", "target": "v2", "endpoints": [{"endpoint": "GET /t"}],
                             "examples": {"e-1": {"endpoint": "GET /t", "request": {"method": "GET", "target": "/t"},
                                                  "primary": {"status": 200, "headers": [], "body": primary_body},
                                                  "shadow": {"status": 200, "headers": [], "body": shadow_body},
                                                  "paths": paths}}}))


def test_text_bodies_whole_object_changes_and_missing_keys() -> None:
    text = _one_example("alpha\nbeta\ngamma", "alpha\nBETA\ngamma", ["body"])
    assert highlighted(text, "e-1", "primary") == ["2beta"] and highlighted(text, "e-1", "shadow") == ["2BETA"]
    line = _one_example("a\nb\nc", "a\nb\nc", ["body:3"])
    assert highlighted(line, "e-1", "shadow") == ["3c"]
    whole = _one_example('{"a": {"b": 1, "c": [1, 2]}, "d": 0}', '{"a": {"b": 2, "c": [1, 2]}, "d": 0}', ["body.a"])
    assert highlighted(whole, "e-1", "primary") == ['2  "a": {', '3    "b": 1,', '4    "c": [', "5      1,", "6      2",
                                                    "7    ]", "8  },"]
    gone = _one_example('{"a": {"b": 1, "gone": true}}', '{"a": {"b": 1}}', ["body.a.gone"])
    assert highlighted(gone, "e-1", "primary") == ['4    "gone": true']
    near = [el for el in gone.having_class("hl-near")]
    assert [el["text"] for el in near] == ['2  "a": {']  # the shadow lacks it: its parent, dimmer
    star = _one_example('{"xs": [{"v": 1}, {"v": 2}]}', '{"xs": [{"v": 3}, {"v": 4}]}', ["body.xs[*].v"])
    assert highlighted(star, "e-1", "shadow") == ['4      "v": 3', '7      "v": 4']


def test_long_bodies_keep_the_highlight_and_hide_the_rest() -> None:
    big = {"items": [{"n": i} for i in range(400)], "last": 1}
    changed = dict(big, last=2)
    page = _one_example(json.dumps(big), json.dumps(changed), ["body.last"])
    assert [t for t in highlighted(page, "e-1", "shadow")] == ['1204  "last": 2']
    gaps = [el["text"] for el in page.having_class("gap")]
    assert gaps and all("lines not shown" in g for g in gaps)


def test_invisible_and_bidi_characters_are_shown() -> None:
    page = _one_example("ok\u202egnp.exe\x1b[31m", "ok", ["body"])
    assert highlighted(page, "e-1", "primary") == ["1ok\\u202egnp.exe\\u001b[31m"]


def test_numbers_are_shown_as_sent() -> None:
    page = _one_example('{"a": 0.5410, "b": 10.0, "c": 1e400, "d": ' + "9" * 5000 + "}", "{}", ["body.a"])
    body = [el["text"] for el in page.elements if "line" in el["attrs"].get("class", "").split()]
    assert '2  "a": 0.5410,' in body and '3  "b": 10.0,' in body and '4  "c": 1e400,' in body
    assert any(t.startswith('5  "d": 9999') for t in body)


def test_pure_deterministic_and_tolerant() -> None:
    report = sample()
    before = copy.deepcopy(report)
    assert render_html(report) == render_html(report)
    assert report == before
    minimal_reports: list[dict[str, Any]] = [
        {}, {"verdict": "pass"}, {"endpoints": [{}], "examples": {"x": {}}, "totals": None}]
    for minimal in minimal_reports:
        text = render_html(minimal)
        assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


# ---------------------------------------------------------------- a real browser


def chromium_path() -> str:
    """Debian's chromium (apt package `chromium`); the test fails if it is missing, so a
    machine without it cannot pass silently."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe.

    Every read is bounded by one deadline for the whole session; the process group is
    killed by its id in close(), whatever happened.
    """

    def __init__(self, profile: Path, deadline: float) -> None:
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self.buffer = b""
        self.next_id = 0
        cmd_read, self.cmd_write = self._pipe_high()
        self.out_read, out_write = self._pipe_high()

        def child_fds() -> None:  # in the child, before exec: the protocol's fds 3 and 4
            os.dup2(cmd_read, 3)
            os.dup2(out_write, 4)

        self.stderr_path = profile.with_suffix(".stderr")
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
                 "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
                 f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                preexec_fn=child_fds, close_fds=False, start_new_session=True,
                # Crash reports and caches land in the test's temporary folder, not in ~.
                env={**os.environ, "HOME": str(profile.parent), "XDG_CONFIG_HOME": str(profile.parent / "config"),
                     "XDG_CACHE_HOME": str(profile.parent / "cache")})
        os.close(cmd_read)
        os.close(out_write)

    @staticmethod
    def _pipe_high() -> tuple[int, int]:
        """A pipe on fds >= 10, close-on-exec: dup2 onto 3 and 4 cannot clobber it."""
        fds = []
        for fd in os.pipe():
            fds.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
            os.close(fd)
        return fds[0], fds[1]

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_write, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.out_read], [], [], left)
            if ready:
                chunk = os.read(self.out_read, 1 << 20)
                if not chunk:
                    raise EOFError(f"chromium exited: {self.stderr_path.read_text(errors='replace')[-2000:]}")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send a command and wait for its answer, keeping the events that come between."""
        ident = self.send(method, params, session)
        while True:
            message = self.receive()
            if message.get("id") == ident:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            message = self.receive()
            self.events.append(message)
            if message.get("method") == method and message.get("sessionId") == session:
                return message

    def open(self, url: str) -> str:
        """A new tab with console, log, network and dialogs watched; returns its session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", None, session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": VIEWPORT[0], "height": VIEWPORT[1],
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, expression: str, session: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def problems(self, session: str) -> list[str]:
        """Console errors and warnings, uncaught exceptions, error log entries (CSP
        violations, failed loads) and dialogs (an alert() would be XSS) seen in this tab."""
        found = []
        for event in (e for e in self.events if e.get("sessionId") == session):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(f"log: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
        return found

    def requests(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("sessionId") == session and e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        """Ask politely, then kill the process group by its id: no stray renderer survives."""
        try:
            if self.proc.poll() is None:
                self.send("Browser.close")
                self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # helpers left in the group
            except ProcessLookupError:
                pass
            os.close(self.cmd_write)
            os.close(self.out_read)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chrome = Browser(tmp_path_factory.mktemp("chromium") / "profile", time.monotonic() + BROWSER_DEADLINE)
    try:
        yield chrome
    finally:
        chrome.close()


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the pixels): enough to tell a blank page."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


CHECKS = """(() => {
  const shown = el => { if (!el) return false; const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const verdict = document.getElementById('verdict'), table = document.querySelector('#endpoints table');
  const links = [...document.querySelectorAll('#endpoints tbody a')];
  return {
    verdict: verdict && verdict.innerText, verdictShown: shown(verdict),
    verdictTop: verdict && verdict.getBoundingClientRect().top,
    verdictWord: verdict && getComputedStyle(verdict.querySelector('.verdict-word')).fontSize,
    tableShown: shown(table), tableTop: table && table.getBoundingClientRect().top,
    rows: table ? table.tBodies[0].rows.length : 0, columns: table ? table.tHead.rows[0].cells.length : 0,
    links: links.map(a => a.textContent),
    targetsShown: links.every(a => shown(document.querySelector(a.getAttribute('href')))),
    charts: [...document.querySelectorAll('svg.chart')].map(s => shown(s) && s.querySelectorAll('rect').length),
    highlighted: document.querySelectorAll('.line.hl').length,
    hlColor: getComputedStyle(document.querySelector('.line.hl')).backgroundColor,
    scripts: document.scripts.length, images: document.images.length,
    escaped: document.body.innerText.includes('<script>alert(1)</script>'),
    wider: document.documentElement.scrollWidth > innerWidth,
  };
})()"""


@pytest.mark.timeout(2 * BROWSER_DEADLINE)
def test_it_renders_in_chromium_cleanly(browser: Browser) -> None:
    started = time.monotonic()
    report = sample()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page_path = ARTIFACTS / "index.html"
    page_path.write_text(render_html(report), encoding="utf-8")
    url = page_path.resolve().as_uri()
    session = browser.open(url)
    facts = browser.evaluate(CHECKS, session)

    assert facts["verdictShown"] and facts["verdict"].startswith("FAIL")
    assert 0 <= facts["verdictTop"] < 100 and float(facts["verdictWord"].removesuffix("px")) >= 40
    assert facts["tableShown"] and facts["tableTop"] < VIEWPORT[1]  # in the first screen
    assert facts["rows"] == len(report["endpoints"]) and facts["columns"] == 11
    assert facts["links"] == [ep["endpoint"] for ep in report["endpoints"]] and facts["targetsShown"]
    assert len(facts["charts"]) == 2 and all(n and n >= len(report["endpoints"]) for n in facts["charts"])
    assert facts["highlighted"] >= 10 and facts["hlColor"] not in ("rgba(0, 0, 0, 0)", "transparent")
    assert facts["scripts"] == 0 and facts["images"] == 0
    assert facts["escaped"]  # the tag is on screen as text, which means it did not become an element
    assert not facts["wider"], "the page scrolls sideways at 1280 px"
    assert browser.problems(session) == []
    assert browser.requests(session) == [url]  # its own file, nothing else

    shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
    (ARTIFACTS / "screenshot.png").write_bytes(shot)
    width, height, tones = png_facts(shot)
    assert (width, height) == VIEWPORT
    assert len(shot) > 50_000 and tones > 32, "the screenshot looks blank"
    pdf = base64.b64decode(browser.call("Page.printToPDF", {"printBackground": True}, session)["data"])
    (ARTIFACTS / "print.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 3  # prints, one endpoint a page
    assert time.monotonic() - started < BROWSER_DEADLINE


@pytest.mark.timeout(2 * BROWSER_DEADLINE)
def test_the_harness_sees_console_errors_and_requests(browser: Browser, tmp_path: Path) -> None:
    """Without this, a broken listener would let every page pass."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>bad</title><script>console.error('boom'); throw new Error('bang')</script>"
                   f"<iframe src=\"{(tmp_path / 'missing.html').as_uri()}\"></iframe>")
    session = browser.open(bad.as_uri())
    found = browser.problems(session)
    assert any("boom" in p for p in found) and any("bang" in p for p in found), found
    assert (tmp_path / "missing.html").as_uri() in browser.requests(session)
