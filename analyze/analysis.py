"""The analysis: every pair compared once, then fields classified, then pairs and endpoints.

Two passes because Diffy's method judges a field by its counts over the whole endpoint: the
first pass compares each primary answer with the shadow's (raw) and the baseline's (noise) and
keeps, per pair, only the paths that differed; the second classifies each (endpoint, path)
and then each pair by the worst of its paths. Aggregation per endpoint is done with pandas.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import redact
from .bodies import Body, header, read
from .diff import Answer, Diff, HostRewrite, Rules, compare
from .endpoints import Endpoints
from .noise import ABSOLUTE, RELATIVE, classify, volatile

MAX_EXAMPLES = 3  # per field
MAX_FULL_EXAMPLES = 100  # side-by-side examples kept for the report
MIN_ENDPOINT_ERRORS = 3  # an endpoint's own error rate is judged from this many errors up
MIN_LATENCY_SAMPLES = 10  # an endpoint's latency is judged from this many answers up
P99_SAMPLES = 100  # below this many, p99 is one or two outliers: the gate judges p90 instead
LATENCY_FLOOR_MS = 5.0  # against a baseline: an increase smaller than this is jitter
# Against the primary (no baseline) the two sides are measured differently: the primary on the
# wire at capture, the shadow inside the replayer, which queues at its own concurrency. Only a
# clear slowdown counts then.
LATENCY_FLOOR_NO_BASELINE_MS = 25.0


@dataclass
class Thresholds:
    max_diff_rate: float = 0.01
    max_error_rate: float = 0.005
    max_p99_increase: float = 0.20
    relative: float = RELATIVE
    absolute: float = ABSOLUTE


@dataclass
class FieldStats:
    raw: int = 0
    noise: int = 0
    artifacts: int = 0
    volatile: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)  # real differences first
    artifact_example: dict[str, Any] | None = None  # shown only when there is nothing else


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((b - a) * 1000.0, 3)


def _body_text(b: Body) -> str | None:
    b.resolve()
    if b.kind == "empty":
        return None
    if b.kind == "json":
        text = json.dumps(redact.value(b.value), indent=2, ensure_ascii=False)
        return text if len(text) <= 20000 else text[:20000] + f"\n… {len(text) - 20000} more characters"
    if b.kind == "text":
        return redact.text(b.raw[:20000].decode("utf-8", "replace"))
    return f"({len(b.raw)} bytes)"


class Analyzer:
    def __init__(self, rules: Rules, endpoints: Endpoints, has_baseline: bool, thresholds: Thresholds) -> None:
        self.rules = rules
        self.endpoints = endpoints
        self.has_baseline = has_baseline
        self.t = thresholds
        self.rows: list[dict[str, Any]] = []  # one per exchange with a request: the pandas frame
        # id -> (endpoint, its differences as (path, artifact, volatile))
        self.pair_paths: dict[str, tuple[str, tuple[tuple[str, bool, bool], ...]]] = {}
        self.fields: dict[tuple[str, str], FieldStats] = defaultdict(FieldStats)
        self.noise_pairs: Counter[str] = Counter()  # per endpoint: primary/baseline pairs compared
        self.examples: dict[str, dict[str, Any]] = {}
        self.problems: Counter[str] = Counter()

    # -- pass one ------------------------------------------------------------------------
    def add(self, ex: dict[str, Any], shadow: dict[str, Any] | None, base: dict[str, Any] | None) -> None:
        if ex.get("method") is None:
            return  # a response without its request: nothing was replayable
        ep = self.endpoints.of(ex["method"], ex["target"])
        row: dict[str, Any] = {"endpoint": ep, "sampled": shadow is not None, "outcome": None,
                               "status_p": ex.get("status"), "status_s": None, "error": None,
                               "lat_p": _ms(ex.get("t_req_start"), ex.get("t_resp_end")),
                               "lat_s": None, "lat_b": None}
        self.rows.append(row)
        if shadow is None:
            return
        row["status_s"] = shadow.get("status")
        row["lat_s"] = _ms(shadow.get("t_send"), shadow.get("t_end"))
        err = shadow.get("error")
        if err and err != "too_large":
            row["error"] = err
            row["outcome"] = "error"
            return
        if ex.get("status") is None:
            row["outcome"] = "unpaired"  # the primary's answer was not captured
            self.problems["exchanges without the primary's answer (not compared)"] += 1
            return
        req_headers = [(h["name"], h["value"]) if isinstance(h, dict) else (h[0], h[1])
                       for h in ex.get("req_headers") or []]
        client_ip = (ex.get("client") or "").rpartition(":")[0].strip("[]") or None
        host = HostRewrite(header(req_headers, "host"), shadow.get("host"), client_ip)
        cut = _CUT_FLAGS.intersection(ex.get("flags") or ())
        if cut or shadow.get("error") == "too_large":  # bodies not whole: compare the rest only
            self.problems[f"{ep}: bodies not compared, {'cut at capture (' + ', '.join(sorted(cut)) + ')' if cut else 'over --max-body at replay'}"] += 1
            primary = self._answer(ex.get("status"), ex.get("resp_headers"), None, ep, "primary")
            other = self._answer(shadow.get("status"), shadow.get("headers"), None, ep, "shadow")
        else:
            primary = self._answer(ex.get("status"), ex.get("resp_headers"), ex.get("resp_body"), ep, "primary")
            other = self._answer(shadow.get("status"), shadow.get("headers"), shadow.get("body"), ep, "shadow")
        diffs = compare(primary, other, self.rules, host)
        self._problems(ep, primary, "primary")
        self._problems(ep, other, "shadow")
        status_changed = primary.status != other.status
        marked = []
        for d in diffs:
            fs = self.fields[(ep, d.path)]
            fs.raw += 1
            vol = False
            if d.artifact:
                fs.artifacts += 1
            else:
                vol = d.volatile if d.volatile is not None else _volatile_pair(d.path, d.a, d.b, status_changed)
                fs.volatile += vol
            marked.append((d.path, d.artifact, vol))
            example = {"id": ex["id"], "primary": redact.path_value(d.path, _jsonable(d.a)),
                       "shadow": redact.path_value(d.path, _jsonable(d.b))}
            if d.artifact:
                fs.artifact_example = fs.artifact_example or example
            elif len(fs.examples) < MAX_EXAMPLES:
                fs.examples.append(example)
        self.pair_paths[ex["id"]] = (ep, tuple(marked))
        if diffs and len(self.examples) < MAX_FULL_EXAMPLES and not all(d.artifact for d in diffs):
            self.examples[ex["id"]] = self._example(ex, ep, req_headers, primary, other, shadow, diffs)
        if base is not None and not (base.get("error") and base.get("error") != "too_large"):
            row["lat_b"] = _ms(base.get("t_send"), base.get("t_end"))
            baseline = self._answer(base.get("status"), base.get("headers"), base.get("body"), ep, "baseline")
            self.noise_pairs[ep] += 1
            bhost = HostRewrite(header(req_headers, "host"), base.get("host"), client_ip)
            for d in compare(primary, baseline, self.rules, bhost):
                if not d.artifact:
                    self.fields[(ep, d.path)].noise += 1

    def _answer(self, status: int | None, headers: Any, body: bytes | None, ep: str, side: str) -> Answer:
        hs = [(h["name"], h["value"]) if isinstance(h, dict) else (h[0], h[1]) for h in headers or []]
        return Answer(status, hs, read(body, hs))

    def _problems(self, ep: str, answer: Answer, side: str) -> None:
        if answer.body.problem:
            self.problems[f"{ep}: {side} body: {answer.body.problem}"] += 1

    def _example(self, ex: dict[str, Any], ep: str, req_headers: list[tuple[str, str]], primary: Answer,
                 other: Answer, shadow: dict[str, Any], diffs: list[Diff]) -> dict[str, Any]:
        req_body = read(ex.get("req_body"), req_headers)
        return {
            "endpoint": ep,
            "request": {"method": ex["method"], "target": redact.text(ex["target"] or ""),
                        "headers": redact.headers(req_headers), "body": _body_text(req_body)},
            "primary": {"status": primary.status, "headers": redact.headers(primary.headers),
                        "body": _body_text(primary.body)},
            "shadow": {"status": other.status, "headers": redact.headers(other.headers),
                       "body": _body_text(other.body), "error": shadow.get("error")},
            "paths": [d.path for d in diffs],
        }

    # -- pass two ------------------------------------------------------------------------
    def classify_fields(self, replayed: dict[str, int]) -> dict[tuple[str, str], str]:
        out = {}
        for (ep, path), fs in self.fields.items():
            total = self.noise_pairs[ep] if self.has_baseline else replayed.get(ep, 0)
            out[(ep, path)] = classify(fs.raw, fs.noise, max(total, replayed.get(ep, 0)), fs.artifacts, fs.volatile,
                                       self.has_baseline, self.t.relative, self.t.absolute)
        return out

    def report(self) -> dict[str, Any]:
        frame = pd.DataFrame(self.rows, columns=["endpoint", "sampled", "outcome", "status_p", "status_s",
                                                 "error", "lat_p", "lat_s", "lat_b"])
        compared = frame[frame["outcome"].isna() & frame["sampled"]]
        replayed = compared.groupby("endpoint").size().to_dict() if len(compared) else {}
        classes = self.classify_fields(replayed)
        ids_outcome: dict[str, str] = {}
        for pid, (ep, diffs) in self.pair_paths.items():
            # A pair is judged by its own differences: one field's real change elsewhere does
            # not make this pair's Host echo, or (without a baseline) its timestamp, a change.
            real = [(p, vol) for p, art, vol in diffs if not art]
            if not diffs:
                ids_outcome[pid] = "identical"
            elif not real:
                ids_outcome[pid] = "artifact"
            elif any(classes[(ep, p)] == "change" and not (vol and not self.has_baseline) for p, vol in real):
                ids_outcome[pid] = "different"
            else:
                ids_outcome[pid] = "noise"
        order = list(self.pair_paths)
        outcomes = pd.Series([ids_outcome[i] for i in order], dtype="object")
        compared_mask = frame["outcome"].isna() & frame["sampled"]
        frame.loc[compared_mask, "outcome"] = outcomes.values
        return self._assemble(frame, classes)

    def _assemble(self, frame: pd.DataFrame, classes: dict[tuple[str, str], str]) -> dict[str, Any]:
        endpoints = []
        for ep, g in frame.groupby("endpoint", sort=True):
            counts = g["outcome"].value_counts().to_dict()
            sampled = int(g["sampled"].sum())
            replayed = sum(int(counts.get(k, 0)) for k in ("identical", "different", "noise", "artifact"))
            errors = int(counts.get("error", 0))
            changed = g[g["status_s"].notna() & g["status_p"].notna() & (g["status_p"] != g["status_s"])
                        & (g["outcome"] != "error")]
            transitions = Counter(f"{int(a)}->{int(b)}" for a, b in zip(changed["status_p"], changed["status_s"]))
            fields = []
            for (fep, path), fs in self.fields.items():
                if fep != ep:
                    continue
                examples = fs.examples or ([fs.artifact_example] if fs.artifact_example else [])
                fields.append({"path": path, "raw": fs.raw, "noise": fs.noise, "classification": classes[(fep, path)],
                               "example": examples[0]["id"] if examples else None, "examples": examples})
            rank = {"change": 0, "probable_noise": 1, "noise": 2, "artifact": 3}
            fields.sort(key=lambda f: (rank[f["classification"]], -f["raw"], f["path"]))
            lat: dict[str, Any] = {k: _percentiles(g[col]) for k, col in
                                   (("primary", "lat_p"), ("shadow", "lat_s"), ("baseline", "lat_b"))}
            if not self.has_baseline:
                lat["baseline"] = None
            ref = lat["baseline"] if self.has_baseline else lat["primary"]
            shadow_n = int(g["lat_s"].notna().sum())
            lat["p99_increase"] = None
            lat["judged"] = None
            if ref and lat["shadow"] and ref["p99"] and shadow_n >= MIN_LATENCY_SAMPLES:
                lat["p99_increase"] = round(lat["shadow"]["p99"] / ref["p99"] - 1.0, 4)
                q = "p99" if shadow_n >= P99_SAMPLES else "p90"
                lat["judged"] = {"percentile": q, "samples": shadow_n, "against": "baseline" if self.has_baseline else "primary",
                                 "increase": round(lat["shadow"][q] / ref[q] - 1.0, 4) if ref[q] else None,
                                 "delta_ms": round(lat["shadow"][q] - ref[q], 3)}
            endpoints.append({
                "endpoint": ep, "requests": int(len(g)), "sampled": sampled, "replayed": replayed,
                "identical": int(counts.get("identical", 0)), "different": int(counts.get("different", 0)),
                "noise": int(counts.get("noise", 0)), "artifacts": int(counts.get("artifact", 0)), "errors": errors,
                "diff_rate": round(counts.get("different", 0) / replayed, 6) if replayed else 0.0,
                "error_rate": round(errors / sampled, 6) if sampled else 0.0,
                "status_transitions": dict(sorted(transitions.items())),
                "latency": lat, "fields": fields,
            })
        endpoints.sort(key=lambda e: (-e["diff_rate"], -e["different"], e["endpoint"]))
        tot = {k: sum(e[k] for e in endpoints) for k in
               ("requests", "sampled", "replayed", "identical", "different", "noise", "artifacts", "errors")}
        tot["diff_rate"] = round(tot["different"] / tot["replayed"], 6) if tot["replayed"] else 0.0
        tot["error_rate"] = round(tot["errors"] / tot["sampled"], 6) if tot["sampled"] else 0.0
        return {"totals": tot, "endpoints": endpoints, "examples": self.examples,
                "problems": [f"{k} ({v})" for k, v in sorted(self.problems.items())]}


_CUT_FLAGS = frozenset(("body_truncated", "snaplen", "gap", "incomplete"))


def _volatile_pair(path: str, a: Any, b: Any, status_changed: bool) -> bool:
    """Both values volatile and of one type; or, in an answer whose status changed (an error
    in place of a record), a volatile field gone or new: the status says what changed."""
    name = path.rsplit(".", 1)[-1]
    if a is None or b is None:
        present = b if a is None else a
        return status_changed and present is not None and volatile(present, name)
    return type(a) is type(b) and volatile(a, name) and volatile(b, name)


def _percentiles(col: pd.Series) -> dict[str, float] | None:
    s = col.dropna()
    if s.empty:
        return None
    q = s.astype(float).quantile([0.5, 0.9, 0.95, 0.99], interpolation="higher")
    return {"p50": round(float(q.loc[0.5]), 3), "p90": round(float(q.loc[0.9]), 3),
            "p95": round(float(q.loc[0.95]), 3), "p99": round(float(q.loc[0.99]), 3)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


def verdict(report: dict[str, Any], t: Thresholds) -> tuple[str, list[str]]:
    """The gate: any endpoint over the diff rate, the whole run over the error rate, or any
    endpoint's p99 over the allowed increase fails the release."""
    reasons = []
    for e in report["endpoints"]:
        if e["replayed"] and e["diff_rate"] > t.max_diff_rate:
            top = next((f["path"] for f in e["fields"] if f["classification"] == "change"), None)
            reasons.append(f"{e['endpoint']}: {e['diff_rate']:.1%} of answers differ (max {t.max_diff_rate:.2%})"
                           + (f", first in {top}" if top else ""))
        j = e["latency"].get("judged")
        floor = LATENCY_FLOOR_MS if j and j["against"] == "baseline" else LATENCY_FLOOR_NO_BASELINE_MS
        if j and j["increase"] is not None and j["increase"] > t.max_p99_increase and j["delta_ms"] >= floor:
            note = "" if j["percentile"] == "p99" else f"; {j['samples']} answers are too few to judge a p99"
            reasons.append(f"{e['endpoint']}: {j['percentile']} latency {j['increase']:+.0%} against the "
                           f"{j['against']} (+{j['delta_ms']:.0f} ms; max +{t.max_p99_increase:.0%}{note})")
        if e["errors"] >= MIN_ENDPOINT_ERRORS and e["error_rate"] > t.max_error_rate:
            # A rarely called endpoint that always fails hides in the run's overall rate.
            reasons.append(f"{e['endpoint']}: {e['errors']} of {e['sampled']} replayed requests failed "
                           f"({e['error_rate']:.1%}, max {t.max_error_rate:.2%})")
    tot = report["totals"]
    if tot["error_rate"] > t.max_error_rate:
        reasons.append(f"{tot['errors']} of {tot['sampled']} replayed requests failed "
                       f"({tot['error_rate']:.2%}, max {t.max_error_rate:.2%})")
    if not tot["sampled"]:
        reasons.append("nothing was replayed: no results to judge")
    return ("fail" if reasons else "pass"), reasons
