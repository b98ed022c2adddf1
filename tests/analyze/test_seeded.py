"""Acceptance tests for `shadowtap analyze` on a recording with known regressions.

tests/analyze/scenario.py records curl → v1 (tcpdump on its veth), extracts it and replays it to
v2 (the candidate, regressions seeded by tests/analyze/apps.py) and to a baseline (a second copy
of v1). The ground truth is in apps.py:

    REGRESSIONS  (endpoint, path, kind) that v2 changes; SLOW: the endpoint v2 makes 150 ms slower
    NOISE_PATHS  paths that differ between any two answers in every role
    ENDPOINTS    the templates path learning should find

and these tests hold analyze's report (the contract in the analyze issue: report.json, exit
code 0 pass / 1 fail / 2 usage) to it: every seeded regression found and nothing else called a
`change` (precision and recall 1.0), noise never a change with or without the baseline, the
mirroring artifact (the echoed `Host: svc-shadow:8000`) an `artifact`, v1 against its own copy
a pass, and no credential in any report.

Two things a regression changes besides its own field are tolerated (never required): the
Content-Length of a body that changed, and on the endpoint whose status goes 200 -> 500 the
fields of the error body, as long as their examples are those 500 answers.

Needs root (network namespaces) like the other live tests; analyze is run three times per
session (with the baseline, without it, v1 against the baseline), each once, by module fixtures.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.analyze import apps  # noqa: E402
from tests.analyze.scenario import (  # noqa: E402,F401  (scenario: the session fixture)
    SECRET_COOKIE, SECRET_TOKEN, SHADOW_HOST, HOST, Scenario, scenario, shadowtap,
)

pytestmark = pytest.mark.timeout(300)

CLASSES = {"change", "noise", "probable_noise", "artifact"}
EXPECTED = {(ep, path) for ep, path, _ in apps.REGRESSIONS}
STATUS_500 = next(ep for ep, path, kind in apps.REGRESSIONS if kind == "status_500")
BODY_REGRESSED = {ep for ep, path, _ in apps.REGRESSIONS if path.startswith("body")}


# ------------------------------------------------------------------------------------------
# Running analyze


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    out: Path

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.out / "report.json").read_text())

    def texts(self) -> dict[str, str]:
        return {name: (self.out / name).read_text(errors="replace")
                for name in ("report.json", "summary.md", "index.html")}

    def endpoints(self) -> dict[str, dict[str, Any]]:
        return {e["endpoint"]: e for e in self.report["endpoints"]}

    def fields(self, classification: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(endpoint, field) for every field, or for the fields of one classification."""
        return [(e["endpoint"], f) for e in self.report["endpoints"] for f in e["fields"]
                if classification is None or f["classification"] == classification]

    def changes(self) -> set[tuple[str, str]]:
        return {(ep, f["path"]) for ep, f in self.fields("change")}

    def why(self) -> str:
        """What to print when an assertion fails: the verdict and every non-noise field."""
        r = self.report
        rows = [f"  {ep}  {f['path']}: {f['classification']} raw={f.get('raw')} noise={f.get('noise')}"
                for ep, f in self.fields() if f["classification"] in ("change", "artifact", "probable_noise")]
        return f"verdict {r['verdict']}, reasons {r['reasons']}\n" + "\n".join(rows)


def analyze(sc: Scenario, out: Path, *extra: str, expect: int) -> Run:
    """`shadowtap analyze REC --unordered body.tags --json --markdown --html EXTRA` into OUT."""
    out.mkdir(parents=True, exist_ok=True)
    args = [str(sc.rec), "--unordered", "body.tags", "--json", str(out / "report.json"),
            "--markdown", str(out / "summary.md"), "--html", str(out / "index.html"), *extra]
    p = shadowtap("analyze", *args, timeout=180)
    run = Run(args, p.returncode, p.stdout, p.stderr, out)
    assert p.returncode == expect, (f"shadowtap analyze {' '.join(extra)} exited {p.returncode}, "
                                    f"expected {expect}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    assert "Traceback" not in p.stderr, p.stderr
    for name in ("report.json", "summary.md", "index.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"{name} not written"
    return run


@pytest.fixture(scope="module")
def full(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """v2 against v1, with the baseline's noise (results/baseline is used by default)."""
    return analyze(scenario, tmp_path_factory.mktemp("analyze-full"), expect=1)


@pytest.fixture(scope="module")
def nobase(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """v2 against v1, rules and detectors only."""
    return analyze(scenario, tmp_path_factory.mktemp("analyze-nobase"), "--baseline", "none", expect=1)


@pytest.fixture(scope="module")
def null(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """v1 against the baseline (an identical copy of v1): nothing to find."""
    return analyze(scenario, tmp_path_factory.mktemp("analyze-null"), "--target", "baseline",
                   "--baseline", "none", expect=0)


@pytest.fixture(scope="module")
def shadow_status(scenario: Scenario) -> dict[str, int | None]:
    return {r["id"]: r["status"] for r in scenario.results("shadow")}


def _is_noise_path(path: str) -> bool:
    """A NOISE_PATHS entry or anything under it (body.tags[2], …)."""
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in apps.NOISE_PATHS)


def _endpoint_path(endpoint: str) -> str:
    return endpoint.split(" ", 1)[1]


def _counts(sc: Scenario) -> Counter[str]:
    return Counter(p.endpoint for p in sc.planned)


def _expected_500(sc: Scenario) -> int:
    return sum(1 for p in sc.planned if p.endpoint == STATUS_500
               and apps.v2_breaks_item(p.target.rsplit("/", 1)[1]))


# ------------------------------------------------------------------------------------------
# The harness itself (runs without analyze)


def test_scenario_recorded_every_exchange(scenario: Scenario) -> None:
    """One exchange per request curl sent, one result per exchange for v2 and the baseline, and
    v2's answers carry the seeded 500s (scenario.build checks the rest before any test runs)."""
    ex = scenario.exchanges()
    assert len(ex) == len(scenario.planned) and len({e["id"] for e in ex}) == len(ex)
    ids = {e["id"] for e in ex}
    for name in ("shadow", "baseline"):
        res = scenario.results(name)
        assert sorted(r["id"] for r in res) == sorted(ids)
    shadow = Counter((scenario.endpoint_of[r["id"]], r["status"]) for r in scenario.results("shadow"))
    assert shadow[(STATUS_500, 500)] == _expected_500(scenario) >= 3
    assert set(scenario.endpoint_of.values()) == set(apps.ENDPOINTS)
    echo = [r for r in scenario.results("shadow") if scenario.endpoint_of[r["id"]] == apps.ECHO]
    assert echo and all(json.loads(r["body"])["headers"]["Host"] == SHADOW_HOST for r in echo)


# ------------------------------------------------------------------------------------------
# With the baseline


def test_report_verdict_and_totals(full: Run, scenario: Scenario) -> None:
    r = full.report
    n = len(scenario.planned)
    assert r["tool"] == "shadowtap" and r["target"] == "shadow" and r["baseline"] == "baseline"
    assert r["verdict"] == "fail" and r["reasons"], r
    assert Path(r["recording"]).resolve() == scenario.rec.resolve()
    t = r["totals"]
    assert t["exchanges"] == t["requests"] == t["sampled"] == t["replayed"] == n, t
    assert t["errors"] == 0 and t["error_rate"] == 0, t
    assert t["identical"] + t["different"] + t["noise"] + t["artifacts"] == n, t
    assert t["diff_rate"] == pytest.approx(t["different"] / t["replayed"]), t
    assert r["problems"] == [], r["problems"]
    for e in r["endpoints"]:
        assert e["identical"] + e["different"] + e["noise"] + e["artifacts"] == e["replayed"], e["endpoint"]
        assert all(f["classification"] in CLASSES for f in e["fields"]), e["endpoint"]


def test_changes_are_exactly_the_seeded_regressions(full: Run, shadow_status: dict[str, int | None]) -> None:
    """Recall: every seeded regression is a `change`. Precision: nothing else is, except a
    changed body's Content-Length and the error body of the seeded 500s."""
    changed = full.changes()
    missing = EXPECTED - changed
    assert not missing, f"seeded regressions not reported as change: {sorted(missing)}\n{full.why()}"
    extra = []
    for ep, f in full.fields("change"):
        key = (ep, f["path"])
        if key in EXPECTED:
            continue
        if ep in BODY_REGRESSED | {STATUS_500} and f["path"] == "header.content-length":
            continue
        if ep == STATUS_500 and (f["path"].startswith("body") or f["path"] == "header.content-type"):
            ids = [x["id"] for x in f.get("examples") or []] + [f["example"]]
            if ids and all(shadow_status.get(i) == 500 for i in ids):
                continue
        extra.append(key)
    assert not extra, f"reported as change but not seeded: {sorted(extra)}\n{full.why()}"


def test_noise_is_never_a_change(full: Run) -> None:
    wrong = [(ep, f["path"]) for ep, f in full.fields("change") if _is_noise_path(f["path"])]
    assert not wrong, f"noise reported as change: {wrong}\n{full.why()}"
    # Declared unordered: the shuffled tags are not a difference at all.
    assert not [(ep, f["path"]) for ep, f in full.fields() if f["path"].startswith("body.tags")
                and f["classification"] == "change"]


def test_the_slow_endpoint_fails_the_latency_gate(full: Run) -> None:
    slow = full.endpoints()[apps.SLOW]
    assert slow["latency"]["p99_increase"] is not None and slow["latency"]["p99_increase"] > 0.2, slow["latency"]
    assert slow["latency"]["shadow"]["p99"] >= apps.SLOW_SECONDS * 1000, slow["latency"]
    path = _endpoint_path(apps.SLOW)
    assert [x for x in full.report["reasons"] if "latency" in x and path in x], full.report["reasons"]
    # The slowness is not a field change.
    assert not [f for f in slow["fields"] if f["classification"] == "change"], full.why()


def test_the_latency_gate_names_no_other_endpoint(full: Run) -> None:
    """Only the seeded slowdown fails the gate: the other endpoints answer in 1-5 ms on both
    sides, and a few milliseconds of scheduling jitter on a shared machine is not a regression."""
    others = [e for e in apps.ENDPOINTS if e != apps.SLOW]
    wrong = [(x, e) for x in full.report["reasons"] if "latency" in x for e in others
             if re.search(re.escape(_endpoint_path(e)) + r"(?![\w/{])", x)]
    lat = {ep: e["latency"] for ep, e in full.endpoints().items()}
    assert not wrong, f"latency reasons for endpoints v2 did not slow down: {wrong}\np99 ms: {lat}"


def test_status_transitions(full: Run, scenario: Scenario) -> None:
    eps = full.endpoints()
    assert eps[STATUS_500]["status_transitions"] == {"200->500": _expected_500(scenario)}, eps[STATUS_500]
    others = {ep: e["status_transitions"] for ep, e in eps.items() if ep != STATUS_500 and e["status_transitions"]}
    assert not others, others


def test_endpoint_templates(full: Run, scenario: Scenario) -> None:
    eps = full.endpoints()
    assert set(eps) == set(apps.ENDPOINTS), sorted(eps)
    want = _counts(scenario)
    assert {ep: e["requests"] for ep, e in eps.items()} == dict(want)
    assert all(e["replayed"] == want[ep] for ep, e in eps.items())


def test_fields_rank_changes_first_and_examples_show_them(full: Run, scenario: Scenario) -> None:
    rep = full.report
    for e in rep["endpoints"]:
        kinds = [f["classification"] == "change" for f in e["fields"]]
        assert kinds == sorted(kinds, reverse=True), (e["endpoint"], [f["path"] for f in e["fields"]])
    fields = {(ep, f["path"]): f for ep, f in full.fields()}
    ids = {e["id"] for e in scenario.exchanges()}
    for key in EXPECTED:
        f = fields[key]
        assert f["raw"] > 0 and f["example"] in ids and f["example"] in rep["examples"], (key, f)
        assert key[1] in rep["examples"][f["example"]]["paths"], (key, rep["examples"][f["example"]]["paths"])
        assert 1 <= len(f["examples"]) <= 3 and all(x["id"] in ids for x in f["examples"]), (key, f["examples"])
        assert rep["examples"][f["example"]]["endpoint"] == key[0]
    ex = {k[1]: fields[k]["examples"][0] for k in EXPECTED}
    assert isinstance(ex["body.age"]["primary"], int) and isinstance(ex["body.age"]["shadow"], str), ex["body.age"]
    assert str(ex["body.age"]["primary"]) == ex["body.age"]["shadow"]
    assert ex["body.total"]["primary"] != ex["body.total"]["shadow"], ex["body.total"]
    assert ex["body.total_pages"]["primary"] == 5, ex["body.total_pages"]
    assert (ex["status"]["primary"], ex["status"]["shadow"]) == (200, 500), ex["status"]
    assert (ex["header.cache-control"]["primary"], ex["header.cache-control"]["shadow"]) == (
        "public, max-age=60", "public, max-age=600"), ex["header.cache-control"]


@pytest.mark.parametrize("which", ["full", "nobase"])
def test_echoed_shadow_host_is_an_artifact(which: str, request: pytest.FixtureRequest) -> None:
    """The echo endpoint says `svc-shadow:8000` where v1 said `svc:8000`: the replayer put it
    there (Envoy's rule), so it is an artifact, never a change, with or without a baseline."""
    run: Run = request.getfixturevalue(which)
    echo = run.endpoints()[apps.ECHO]
    host = {f["path"]: f for f in echo["fields"] if "host" in f["path"].lower()}
    assert apps.ECHO_HOST_PATH in host, (sorted(host), run.why())
    assert host[apps.ECHO_HOST_PATH]["classification"] == "artifact", host[apps.ECHO_HOST_PATH]
    assert not [p for p, f in host.items() if f["classification"] == "change"], host
    ex = host[apps.ECHO_HOST_PATH]["examples"][0]
    assert (ex["primary"], ex["shadow"]) == (HOST, SHADOW_HOST), ex


def test_echo_endpoint_is_not_a_regression(full: Run) -> None:
    """With the baseline, whatever else the rewritten Host changes (the echo's Content-Length
    grows by len("-shadow")) shows in the baseline too: no pair of the echo endpoint differs."""
    echo = full.endpoints()[apps.ECHO]
    assert echo["different"] == 0 and echo["diff_rate"] == 0, (echo, full.why())
    assert echo["artifacts"] + echo["noise"] == echo["replayed"], echo


# ------------------------------------------------------------------------------------------
# Without the baseline


def test_without_baseline_every_regression_is_still_found(nobase: Run) -> None:
    r = nobase.report
    assert r["baseline"] is None and r["verdict"] == "fail", r["verdict"]
    missing = EXPECTED - nobase.changes()
    assert not missing, f"not found without the baseline: {sorted(missing)}\n{nobase.why()}"
    slow = nobase.endpoints()[apps.SLOW]
    assert slow["latency"]["baseline"] is None
    assert slow["latency"]["p99_increase"] is not None and slow["latency"]["p99_increase"] > 0.2, slow["latency"]
    assert [x for x in r["reasons"] if "latency" in x and _endpoint_path(apps.SLOW) in x], r["reasons"]


def test_without_baseline_noise_is_at_most_probable_noise(nobase: Run) -> None:
    wrong = [(ep, f["path"], f["classification"]) for ep, f in nobase.fields()
             if _is_noise_path(f["path"]) and f["classification"] != "probable_noise"]
    assert not wrong, f"noise paths classified other than probable_noise: {wrong}\n{nobase.why()}"


# ------------------------------------------------------------------------------------------
# v1 against its own copy


def test_v1_against_the_baseline_passes(null: Run, scenario: Scenario) -> None:
    r = null.report
    assert r["target"] == "baseline" and r["baseline"] is None
    assert r["verdict"] == "pass" and r["reasons"] == [], null.why()
    assert not null.changes(), null.why()
    t = r["totals"]
    assert t["replayed"] == len(scenario.planned) and t["different"] == 0 and t["errors"] == 0, t
    assert all(not e["status_transitions"] for e in r["endpoints"])


# ------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize("which", ["full", "nobase", "null"])
def test_no_credential_in_any_report(which: str, request: pytest.FixtureRequest) -> None:
    """Requests carried `Authorization: Bearer abc.def.ghi` and `Cookie: sid=…` (every
    GET /products and GET /headers, some others); /headers echoes them in its body and /session
    sets the cookie back. None of it may reach report.json, summary.md or index.html."""
    run: Run = request.getfixturevalue(which)
    for name, text in run.texts().items():
        for secret in (SECRET_TOKEN, SECRET_COOKIE):
            at = text.find(secret)
            assert at < 0, f"{secret!r} in {name}: …{text[max(0, at - 120):at + 60]}…"
    # Not vacuous: the report shows requests that carried the credentials, redacted (every
    # GET /products request carried them, and its seeded changes must have examples).
    carried = [x for x in run.report["examples"].values()
               if any(n.lower() == "authorization" for n, _ in x["request"]["headers"])]
    if which != "null":
        assert carried, "no example request with an Authorization header: the test would prove nothing"
    for x in carried:
        for n, v in x["request"]["headers"]:
            if n.lower() in ("authorization", "cookie"):
                assert "[redacted]" in v, (n, v)


def test_html_report_is_self_contained(full: Run) -> None:
    html = full.texts()["index.html"]
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", html, re.I), "external script"
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", html, re.I), "external stylesheet"
    assert apps.SLOW in html or _endpoint_path(apps.SLOW) in html
