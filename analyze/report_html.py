"""The self-contained HTML page of `shadowtap analyze` (REC/report/index.html).

`render_html(report)` turns the report.json dict (contract v1) into one HTML string. It is a
pure function, so a page can be re-rendered from an archived report.json and tested without a
recording, and it reads nothing but the report: every word on the page comes from it.

The page is attached to release reviews and opened offline, from a ticket or a mail, so it
fetches nothing: no fonts, no scripts, no CDN, inline CSS and inline SVG charts only. It has no
JavaScript at all, and a Content-Security-Policy that forbids every fetch and every script, so
even a slip in escaping could not run code or beacon out from captured traffic. Bodies and
headers are production traffic (already redacted by the analyzer): each string goes through
`html.escape` on the way out.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = ["render_html"]

# Forbids every fetch (the icon is a data: URI) and every script, inline ones included.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
MAX_BODY_LINES = 300  # a longer body shows its head and the context of its highlights
HEAD_LINES = 60  # the head kept of such a body
CONTEXT_LINES = 3  # lines kept around each highlight in such a body
MAX_LINE_CHARS = 2000  # one minified megabyte must not become one unreadable line
MAX_DIFF_LINES = 5000  # difflib is quadratic at worst: past this, no line diff
MAX_VALUE_CHARS = 120  # field example values in the ranked table
LABEL_CHARS = 40  # endpoint names in the charts (the full name is in the bar's tooltip)

CLASSIFICATIONS = ("change", "probable_noise", "noise", "artifact")
# Bidi overrides can make a body read differently from what it is ("Trojan Source"), and C0
# controls are invisible: show both as escapes, so a reviewer sees what was sent.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_LAST_SEGMENT = re.compile(r"(\.[^.\[]*|\[[^\]]*\])$")


# ---------------------------------------------------------------- small formatting helpers


def esc(value: object) -> str:
    """Escape for HTML text and attributes alike, so no call site has to choose."""
    return html.escape("" if value is None else str(value), quote=True)


def _visible(text: str) -> str:
    """Show invisible and direction-changing characters as escapes, and cap very long lines."""
    text = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]}… ({len(text) - MAX_LINE_CHARS:,} more characters)"
    return text


def _num(value: object) -> str:
    """Counts with thousands separators; a missing count is a dash, not a zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _pct(value: object) -> str:
    """A rate as a percentage with the digits that matter at release thresholds (0.5 %…)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    pct = value * 100
    if pct == 0:
        return "0%"
    if abs(pct) < 0.1:
        return f"{pct:.3f}%"
    return f"{pct:.2f}%" if abs(pct) < 10 else f"{pct:.1f}%"


def _ms(value: object) -> str:
    """Milliseconds, one decimal."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:,.1f}"


def _float(value: object) -> float | None:
    """A number from the report, or None: the report may lack any optional figure."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _over(value: object, limit: object) -> bool:
    """True when a rate is over its threshold (both known)."""
    v, lim = _float(value), _float(limit)
    return v is not None and lim is not None and v > lim


def _slug(text: str) -> str:
    """A fragment-safe piece of an id: anchors must survive any endpoint name or exchange id."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def _short(text: str, limit: int) -> str:
    """Cut a label to limit characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value: object) -> str:
    """A field's example value as JSON text, capped (escaping happens at output)."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return _short(_visible(text), MAX_VALUE_CHARS)


def _when(epoch: object) -> str:
    """The report's epoch as UTC: reviewers across time zones read the same time."""
    seconds = _float(epoch)
    if seconds is None:
        return "–"
    try:
        return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "–"


def _mapping(value: object) -> Mapping[str, Any]:
    """The report is another module's output: a missing or odd section renders as empty."""
    return value if isinstance(value, Mapping) else {}


def _seq(value: object) -> Sequence[Any]:
    """As _mapping, for lists."""
    return value if isinstance(value, (list, tuple)) else ()


# ---------------------------------------------------------------- code blocks and highlights


@dataclass
class Line:
    """One line of a status/header/body block, with why it is highlighted."""

    text: str
    kind: str = ""  # "" | "hl" | "hl-near" (ancestor of a path this side lacks) | "err" | "gap" | "absent hl"
    marks: set[str] = field(default_factory=set)  # the report paths this line shows
    number: int | None = None

    def mark(self, path: str, kind: str = "hl") -> None:
        """Highlight for path; a full highlight wins over a near one."""
        self.marks.add(path)
        if self.kind != "hl":
            self.kind = kind


class _Raw(str):
    """A JSON number or constant kept as sent: "0.5410" must not be shown as 0.541, nor
    10.0 as 10, in a tool whose point is telling two answers apart."""


@dataclass
class Body:
    """A body as displayed: JSON pretty-printed with each node's line span, else its lines."""

    lines: list[str]
    spans: dict[str, tuple[int, int]] | None  # "body.a[0].b" -> (first, last) line; None if not JSON
    note: str = ""  # shown instead of lines: "(no body)", "(empty body)"


def _pretty_json(value: object) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Pretty-print JSON (indent 2) and record the lines each path covers.

    json.dumps cannot tell which line holds which key, and highlighting needs exactly that:
    the path "body.plan.price" must light the line `"price": 12.99,`, and "body.plan" the
    whole object from its key to its closing brace.
    """
    lines: list[str] = []
    spans: dict[str, tuple[int, int]] = {}

    def emit(node: object, path: str, depth: int, lead: str, tail: str) -> None:
        pad = "  " * depth
        start = len(lines)
        children: list[tuple[str, str, object]] = []
        if isinstance(node, dict) and node:
            opener, closer = "{", "}"
            children = [(f"{path}.{k}", json.dumps(k, ensure_ascii=False) + ": ", v) for k, v in node.items()]
        elif isinstance(node, list) and node:
            opener, closer = "[", "]"
            children = [(f"{path}[{i}]", "", v) for i, v in enumerate(node)]
        if children:
            lines.append(f"{pad}{lead}{opener}")
            for i, (child_path, child_lead, child) in enumerate(children):
                emit(child, child_path, depth + 1, child_lead, "," if i < len(children) - 1 else "")
            lines.append(f"{pad}{closer}{tail}")
        else:
            scalar = str(node) if isinstance(node, _Raw) else json.dumps(node, ensure_ascii=False)
            lines.append(f"{pad}{lead}{scalar}{tail}")
        spans[path] = (start, len(lines) - 1)

    emit(value, "body", 0, "", "")
    return lines, spans


def _parse_body(text: object) -> Body:
    """Decide how a body is shown: JSON objects and arrays pretty, anything else as sent."""
    if text is None:
        return Body([], None, "(no body)")
    text = str(text)
    if text == "":
        return Body([], None, "(empty body)")
    if text.lstrip()[:1] in ("{", "["):
        try:
            lines, spans = _pretty_json(json.loads(text, parse_int=_Raw, parse_float=_Raw, parse_constant=_Raw))
            return Body(lines, spans)
        except (ValueError, RecursionError):
            pass
    return Body(text.splitlines() or [""], None)


def _is_json_path(path: str) -> bool:
    """Paths into a JSON body ("body.x", "body[0]"), as opposed to "body" or "body:…"."""
    return path.startswith("body.") or path.startswith("body[")


def _path_pattern(path: str) -> re.Pattern[str]:
    """Match a path exactly, with "[*]" standing for any array index (unordered arrays)."""
    return re.compile("^" + re.escape(path).replace(re.escape("[*]"), r"\[\d+\]") + "$")


def _parent(path: str) -> str:
    """The path one level up ("body.a[2].b" -> "body.a[2]"); "body" is the top."""
    return _LAST_SEGMENT.sub("", path) if path not in ("", "body") else ""


def _mark_json(lines: list[Line], spans: Mapping[str, tuple[int, int]], path: str) -> None:
    """Light every line of the node(s) at path; if this side lacks it, its nearest ancestor's
    opening line, dimmer: the key was added or removed there."""
    pattern = _path_pattern(path)
    found = False
    for node, (first, last) in spans.items():
        if pattern.match(node):
            found = True
            for line in lines[first : last + 1]:
                line.mark(path)
    ancestor = _parent(path)
    while not found and ancestor:
        if ancestor in spans:
            lines[spans[ancestor][0]].mark(path, "hl-near")
            return
        ancestor = _parent(ancestor)


def _mark_line_diff(lines: list[Line], mine: Sequence[str], theirs: Sequence[str], path: str) -> None:
    """Light the lines that differ from the other side's: for "body" and non-JSON bodies,
    where there is no key to point at."""
    if len(mine) > MAX_DIFF_LINES or len(theirs) > MAX_DIFF_LINES:
        return
    matcher = difflib.SequenceMatcher(None, list(mine), list(theirs), autojunk=False)
    for tag, first, last, _, _ in matcher.get_opcodes():
        if tag != "equal":
            for line in lines[first:last]:
                line.mark(path)


def _body_lines(body: Body, other: Body, paths: Iterable[str]) -> list[Line]:
    """The numbered lines of one side's body, with the differing paths highlighted."""
    lines = [Line(_visible(text), number=i + 1) for i, text in enumerate(body.lines)]
    for path in paths:
        if body.spans is not None and _is_json_path(path):
            _mark_json(lines, body.spans, path)
        elif path.startswith("body:") and body.spans is None and path[5:].isdigit():
            index = int(path[5:]) - 1  # "body:N": line N of a text body
            if 0 <= index < len(lines):
                lines[index].mark(path)
        elif path == "body" or path.startswith("body:") or _is_json_path(path):
            _mark_line_diff(lines, body.lines, other.lines, path)
    return _window(lines)


def _window(lines: list[Line]) -> list[Line]:
    """Keep a long body readable: its head, and the context of every highlight."""
    if len(lines) <= MAX_BODY_LINES:
        return lines
    keep = set(range(HEAD_LINES))
    for i, line in enumerate(lines):
        if line.kind:
            keep.update(range(i - CONTEXT_LINES, i + CONTEXT_LINES + 1))
    shown: list[Line] = []
    hidden = 0
    for i, line in enumerate(lines):
        if i in keep:
            if hidden:
                shown.append(Line(f"… {hidden:,} lines not shown", kind="gap"))
                hidden = 0
            shown.append(line)
        else:
            hidden += 1
    if hidden:
        shown.append(Line(f"… {hidden:,} lines not shown", kind="gap"))
    return shown


def _headers(value: object) -> list[tuple[str, str]]:
    """[[name, value], ...] from the report, tolerating tuples and odd entries."""
    out = []
    for item in _seq(value):
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            out.append((str(item[0]), str(item[1])))
    return out


def _status_text(status: object) -> str:
    """A status line as reviewers know it: "HTTP 500 Internal Server Error"."""
    try:
        return f"HTTP {status} {HTTPStatus(int(str(status))).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _head_lines(side: Mapping[str, Any], other: Mapping[str, Any], paths: Sequence[str]) -> list[Line]:
    """Status line (or the shadow's error) and headers, the differing ones highlighted; a
    header only the other side has appears as an absent line, so the gap is visible."""
    lines: list[Line] = []
    status, error = side.get("status"), side.get("error")
    if status is not None:
        lines.append(Line(_visible(_status_text(status))))
        if "status" in paths:
            lines[-1].mark("status")
    if error:
        lines.append(Line(_visible(f"error: {error}"), kind="err"))
    elif status is None:
        lines.append(Line("(no response)", kind="err"))
    wanted = {p[len("header.") :].lower() for p in paths if p.startswith("header.")}
    mine = _headers(side.get("headers"))
    for name, value in mine:
        line = Line(_visible(f"{name}: {value}"))
        if name.lower() in wanted:
            line.mark(f"header.{name.lower()}")
        lines.append(line)
    present = {name.lower() for name, _ in mine}
    theirs = {name.lower() for name, _ in _headers(other.get("headers"))}
    for name in sorted((wanted & theirs) - present):
        line = Line(_visible(f"({name}: absent)"))
        line.mark(f"header.{name}", "absent hl")
        lines.append(line)
    return lines


def _code(lines: Sequence[Line], label: str, note: str = "") -> str:
    """A code block: one div per line, so highlights span the width and copy as lines."""
    if note and not lines:
        return f'<div class="code" aria-label="{esc(label)}"><div class="line note">{esc(note)}</div></div>'
    rows = []
    for line in lines:
        cls = " ".join(["line", line.kind or "", "" if line.number is not None else "plain"]).split()
        title = f' title="{esc(", ".join(sorted(line.marks)))}"' if line.marks else ""
        number = "" if line.number is None else f'<span class="no">{line.number}</span>'
        rows.append(f'<div class="{esc(" ".join(cls))}"{title}>{number}{esc(line.text)}</div>')
    return f'<div class="code" aria-label="{esc(label)}">{"".join(rows)}</div>'


# ---------------------------------------------------------------- page sections


def _anchors(report: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Unique ids for endpoint sections and examples, whatever their names hold."""
    used: set[str] = set()

    def unique(base: str) -> str:
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}-{n}", n + 1
        used.add(candidate)
        return candidate

    endpoints = [unique(f"ep-{i + 1}-{_slug(str(_mapping(ep).get('endpoint', '')))}")
                 for i, ep in enumerate(_seq(report.get("endpoints")))]
    examples = {str(ex_id): unique(f"ex-{_slug(str(ex_id))}") for ex_id in _mapping(report.get("examples"))}
    return endpoints, examples


def _verdict(report: Mapping[str, Any]) -> str:
    """The banner: PASS/FAIL, why, and against which thresholds — the first thing read."""
    verdict = str(report.get("verdict") or "unknown").lower()
    cls = verdict if verdict in ("pass", "fail") else "unknown"
    reasons = [str(r) for r in _seq(report.get("reasons"))]
    if reasons:
        why = "<ul class=\"reasons\">" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>"
    elif cls == "pass":
        why = '<p class="reasons">Every threshold is met.</p>'
    else:
        why = '<p class="reasons">The report gives no reason.</p>'
    th = _mapping(report.get("thresholds"))
    known = [("max_diff_rate", "diff rate ≤"), ("max_error_rate", "error rate ≤"),
             ("max_p99_increase", "p99 increase ≤")]
    limits = [f"{label} {_pct(th[key])}" for key, label in known if key in th]
    limits += [f"{key} {th[key]}" for key in th if key not in dict(known)]
    limits_html = f'<p class="thresholds">Thresholds: {esc(" · ".join(limits))}</p>' if limits else ""
    return (f'<header id="verdict" class="verdict {cls}"><div class="verdict-word">{esc(verdict.upper())}</div>'
            f'<div class="verdict-body"><h1>shadowtap release review: {esc(report.get("target") or "shadow")}'
            f' vs primary</h1>{why}{limits_html}</div></header>')


def _meta(report: Mapping[str, Any]) -> str:
    """Which recording, target, baseline and tool version the verdict is about."""
    items = [("recording", report.get("recording")), ("target", report.get("target")),
             ("baseline", report.get("baseline") or "none"), ("generated", _when(report.get("generated"))),
             ("tool", f"{report.get('tool') or 'shadowtap'} {report.get('version') or ''}".strip())]
    return '<dl class="meta">' + "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items) + "</dl>"


def _problems(report: Mapping[str, Any]) -> str:
    """Input trouble the analyzer met: it bounds how far the verdict can be trusted."""
    problems = [str(p) for p in _seq(report.get("problems"))]
    if not problems:
        return ""
    return ('<section class="problems" id="problems"><h2>Input problems</h2><ul>'
            + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></section>")


def _totals(report: Mapping[str, Any]) -> str:
    """The whole run in a row of figures; rates over their threshold are marked."""
    totals = _mapping(report.get("totals"))
    th = _mapping(report.get("thresholds"))
    cards = [(key.replace("_", " "), _num(totals.get(key)), "")
             for key in ("exchanges", "requests", "sampled", "replayed", "identical", "different",
                         "noise", "artifacts", "errors")]
    for key, limit in (("diff_rate", "max_diff_rate"), ("error_rate", "max_error_rate")):
        cls = "bad" if _over(totals.get(key), th.get(limit)) else ""
        cards.append((key.replace("_", " "), _pct(totals.get(key)), cls))
    body = "".join(f'<div class="card {cls}"><div class="figure">{esc(v)}</div><div class="label">{esc(k)}</div></div>'
                   for k, v, cls in cards)
    return f'<section id="totals"><h2>Totals</h2><div class="cards">{body}</div></section>'


def _p99_cell(latency: Mapping[str, Any], limit: object) -> str:
    """p99 primary / shadow, and the increase, marked when over the threshold."""
    primary = _mapping(latency.get("primary")).get("p99")
    shadow = _mapping(latency.get("shadow")).get("p99")
    increase = _float(latency.get("p99_increase"))
    text = esc(f"{_ms(primary)} / {_ms(shadow)}")
    if increase is None:
        return text
    cls = "bad" if _over(increase, limit) else "muted"
    return f'{text} <span class="{cls}">({esc(("+" if increase >= 0 else "") + _pct(increase))})</span>'


ENDPOINT_COLUMNS = ("requests", "sampled", "replayed", "identical", "different", "noise", "artifacts", "errors")


def _endpoint_table(report: Mapping[str, Any], anchors: Sequence[str]) -> str:
    """Every endpoint in the report's order (most different first), each linking to its section."""
    th = _mapping(report.get("thresholds"))
    head = ("<tr><th>endpoint</th>" + "".join(f"<th>{c}</th>" for c in ENDPOINT_COLUMNS)
            + "<th>diff rate</th><th>p99 primary / shadow (ms)</th></tr>")
    rows = []
    for ep, anchor in zip(_seq(report.get("endpoints")), anchors):
        ep = _mapping(ep)
        over = _over(ep.get("diff_rate"), th.get("max_diff_rate"))
        cells = "".join(f'<td class="num">{esc(_num(ep.get(c)))}</td>' for c in ENDPOINT_COLUMNS)
        link = f'<a href="#{esc(anchor)}">{esc(ep.get("endpoint"))}</a>'
        rows.append(f'<tr class="{"bad-row" if over else ""}"><td>{link}</td>'
                    f'{cells}<td class="num{" bad" if over else ""}">{esc(_pct(ep.get("diff_rate")))}</td>'
                    f'<td class="num">{_p99_cell(_mapping(ep.get("latency")), th.get("max_p99_increase"))}</td></tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{len(ENDPOINT_COLUMNS) + 3}" class="muted">No endpoint in the report.</td></tr>')
    return (f'<section id="endpoints"><h2>Endpoints</h2><div class="scroll"><table class="endpoints">'
            f'<thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div></section>')


# ---------------------------------------------------------------- charts (inline SVG)


def _bar(x: float, y: float, width: float, height: float, cls: str) -> str:
    """One bar; a non-zero value keeps at least a sliver, so it is not read as zero."""
    return f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}"/>'


def _label(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    """A text element (escaped: endpoint names are request paths)."""
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{cls_attr}>{esc(text)}</text>'


def _svg(width: int, height: int, label: str, body: str) -> str:
    """An inline SVG that scales to the page width (no xmlns: inline SVG in HTML needs none)."""
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}"'
            f' preserveAspectRatio="xMinYMin meet"><title>{esc(label)}</title>{body}</svg>')


def _length(value: float, vmax: float, span: float) -> float:
    """Bar length for value on a 0..vmax scale of span pixels."""
    if value <= 0 or vmax <= 0:
        return 0.0
    return max(span * value / vmax, 1.5)


def _diff_chart(report: Mapping[str, Any]) -> str:
    """Diff rate per endpoint as horizontal bars, with the threshold as a dashed line."""
    rows = [(str(_mapping(ep).get("endpoint", "")), _float(_mapping(ep).get("diff_rate")) or 0.0,
             _mapping(ep)) for ep in _seq(report.get("endpoints"))]
    if not rows:
        return ""
    limit = _float(_mapping(report.get("thresholds")).get("max_diff_rate"))
    left, span, row_h, top = 300, 560, 26, 28
    width, height = left + span + 110, top + row_h * len(rows) + 8
    vmax = max([rate for _, rate, _ in rows] + [limit or 0.0, 0.001]) * 1.1
    parts = [f'<line class="axis" x1="{left}" y1="{top - 6}" x2="{left}" y2="{height - 4}"/>']
    if limit is not None:
        x = left + span * limit / vmax
        parts.append(f'<line class="limit" x1="{x:.1f}" y1="{top - 10}" x2="{x:.1f}" y2="{height - 4}"/>')
        parts.append(_label(x, top - 14, f"max {_pct(limit)}", "middle", "limit-label"))
    for i, (name, rate, ep) in enumerate(rows):
        y = top + i * row_h
        cls = "bar over" if limit is not None and rate > limit else "bar"
        length = _length(rate, vmax, span)
        tip = f"{name}: {_pct(rate)} ({_num(ep.get('different'))} of {_num(ep.get('replayed'))} replayed pairs differ)"
        parts.append(f"<g><title>{esc(tip)}</title>{_label(left - 8, y + 14, _short(name, LABEL_CHARS), 'end')}"
                     f"{_bar(left, y + 3, length, 16, cls)}"
                     f"{_label(left + length + 6, y + 15, _pct(rate), cls='value')}</g>")
    return _svg(width, height, "Diff rate per endpoint", "".join(parts))


LATENCY_SERIES = (("p50", "primary", "lat p50 primary"), ("p50", "shadow", "lat p50 shadow"),
                  ("p99", "primary", "lat p99 primary"), ("p99", "shadow", "lat p99 shadow"))


def _latency_chart(report: Mapping[str, Any]) -> str:
    """p50 and p99, primary beside shadow, per endpoint: a regression is a longer orange bar."""
    endpoints = [_mapping(ep) for ep in _seq(report.get("endpoints"))]
    if not endpoints:
        return ""
    left, span, bar_h, gap, group_gap, top = 300, 560, 10, 2, 14, 34
    group_h = len(LATENCY_SERIES) * (bar_h + gap) + group_gap
    width, height = left + span + 110, top + group_h * len(endpoints)
    values = [_float(_mapping(_mapping(ep.get("latency")).get(side)).get(q))
              for ep in endpoints for q, side, _ in LATENCY_SERIES]
    vmax = max([v for v in values if v is not None] + [1.0]) * 1.1
    legend = []
    for i, (q, side, cls) in enumerate(LATENCY_SERIES):
        legend.append(f'{_bar(left + i * 140, 6, 12, 12, cls)}{_label(left + i * 140 + 18, 16, f"{q} {side}")}')
    parts = ["".join(legend), f'<line class="axis" x1="{left}" y1="{top - 4}" x2="{left}" y2="{height - 6}"/>']
    for i, ep in enumerate(endpoints):
        name = str(ep.get("endpoint", ""))
        latency = _mapping(ep.get("latency"))
        y0 = top + i * group_h
        parts.append(_label(left - 8, y0 + group_h / 2 - 3, _short(name, LABEL_CHARS), "end"))
        for j, (q, side, cls) in enumerate(LATENCY_SERIES):
            value = _float(_mapping(latency.get(side)).get(q))
            y = y0 + j * (bar_h + gap)
            length = _length(value or 0.0, vmax, span)
            tip = f"{name}: {q} {side} {_ms(value)} ms"
            parts.append(f"<g><title>{esc(tip)}</title>{_bar(left, y, length, bar_h, cls)}"
                         f"{_label(left + length + 5, y + bar_h - 1, _ms(value), cls='value small')}</g>")
    return _svg(width, height, "Latency per endpoint, p50 and p99 in ms, primary and shadow", "".join(parts))


def _charts(report: Mapping[str, Any]) -> str:
    """Both charts, drawn without any library."""
    diff, latency = _diff_chart(report), _latency_chart(report)
    if not diff and not latency:
        return ""
    return ('<section id="charts"><h2>Charts</h2>'
            f'<figure><figcaption>Diff rate per endpoint</figcaption>{diff}</figure>'
            f'<figure><figcaption>Latency per endpoint (ms)</figcaption>{latency}</figure></section>')


# ---------------------------------------------------------------- endpoint sections


def _transitions(ep: Mapping[str, Any]) -> str:
    """Status changes, most frequent first; a change to a 5xx is marked."""
    pairs = sorted(_mapping(ep.get("status_transitions")).items(), key=lambda kv: (-(_float(kv[1]) or 0), str(kv[0])))
    if not pairs:
        return '<h3>Status transitions</h3><p class="muted">No status changed.</p>'
    rows = []
    for pair, count in pairs:
        primary, _, shadow = str(pair).partition("->")
        cls = ' class="bad"' if shadow.strip().startswith("5") else ""
        rows.append(f"<tr><td>{esc(primary)}</td><td>→</td><td{cls}>{esc(shadow)}</td>"
                    f'<td class="num">{esc(_num(count))}</td></tr>')
    return ('<h3>Status transitions</h3><table class="transitions"><thead><tr><th>primary</th><th></th>'
            f'<th>shadow</th><th>pairs</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _badge(classification: object) -> str:
    """A coloured classification, so changes stand out from noise at a glance."""
    text = str(classification or "unknown")
    cls = text if text in CLASSIFICATIONS else "unknown"
    return f'<span class="badge {cls}">{esc(text.replace("_", " "))}</span>'


def _example_link(ex_id: object, example_anchors: Mapping[str, str], shown: set[str]) -> str:
    """A link to the example when this page shows it; its bare id otherwise."""
    if ex_id is None or ex_id == "":
        return '<span class="muted">–</span>'
    key = str(ex_id)
    if key in shown:
        return f'<a href="#{esc(example_anchors[key])}"><code>{esc(key)}</code></a>'
    return f"<code>{esc(key)}</code>"


def _fields(ep: Mapping[str, Any], example_anchors: Mapping[str, str], shown: set[str]) -> str:
    """Changed fields in the report's rank (changes first, then by raw count)."""
    fields = [_mapping(f) for f in _seq(ep.get("fields"))]
    if not fields:
        return '<h3>Changed fields</h3><p class="muted">No field differs.</p>'
    rows = []
    for f in fields:
        first = _mapping(next(iter(_seq(f.get("examples"))), {}))
        sample = ""
        if first:
            sample = (f'<code class="val">{esc(_value(first.get("primary")))}</code> → '
                      f'<code class="val">{esc(_value(first.get("shadow")))}</code>')
        rows.append(f'<tr><td><code>{esc(f.get("path"))}</code></td><td class="num">{esc(_num(f.get("raw")))}</td>'
                    f'<td class="num">{esc(_num(f.get("noise")))}</td><td>{_badge(f.get("classification"))}</td>'
                    f'<td>{_example_link(f.get("example"), example_anchors, shown)}</td>'
                    f'<td class="sample">{sample}</td></tr>')
    return ('<h3>Changed fields</h3><div class="scroll"><table class="fields"><thead><tr><th>path</th><th>raw</th>'
            '<th>noise</th><th>classification</th><th>example</th><th>e.g. primary → shadow</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _latency_table(ep: Mapping[str, Any]) -> str:
    """p50/p95/p99 per side, baseline included when there is one."""
    latency = _mapping(ep.get("latency"))
    rows = []
    for side in ("primary", "shadow", "baseline"):
        q = latency.get(side)
        if isinstance(q, Mapping):
            rows.append(f"<tr><td>{side}</td>" + "".join(f'<td class="num">{esc(_ms(q.get(k)))}</td>'
                                                         for k in ("p50", "p95", "p99")) + "</tr>")
    if not rows:
        return ""
    return ('<table class="latency"><thead><tr><th>latency (ms)</th><th>p50</th><th>p95</th><th>p99</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _request(request: Mapping[str, Any]) -> str:
    """The request as the shadow got it (redacted): method, target, headers, body."""
    lines = [Line(_visible(f"{request.get('method') or '?'} {request.get('target') or ''}"))]
    lines += [Line(_visible(f"{n}: {v}")) for n, v in _headers(request.get("headers"))]
    body = _parse_body(request.get("body"))
    numbered = [Line(_visible(t), number=i + 1) for i, t in enumerate(body.lines)]
    body_html = "" if request.get("body") is None else _code(_window(numbered), "request body", body.note)
    return f'<div class="request"><h5>request</h5>{_code(lines, "request line and headers")}{body_html}</div>'


def _side(role: str, label: str, side: Mapping[str, Any], other: Mapping[str, Any], paths: Sequence[str]) -> str:
    """One column of the side-by-side view: status line and headers, then body. role
    ("primary" or "shadow") picks the colours; label is what the column is called."""
    body, other_body = _parse_body(side.get("body")), _parse_body(other.get("body"))
    head = _code(_head_lines(side, other, paths), f"{label} status and headers")
    body_html = _code(_body_lines(body, other_body, paths), f"{label} body", body.note)
    return f'<div class="side {role}"><h5>{esc(label)}</h5>{head}{body_html}</div>'


def _shadow_label(target: str) -> str:
    """The shadow column's heading: the target's name says which candidate answered."""
    return "shadow" if target == "shadow" else f"shadow: {target}"


def _example(ex_id: str, anchor: str, example: Mapping[str, Any], target: str) -> str:
    """One exchange, primary beside shadow, the differing paths highlighted on both."""
    paths = [str(p) for p in _seq(example.get("paths"))]
    primary, shadow = _mapping(example.get("primary")), _mapping(example.get("shadow"))
    listed = ", ".join(f"<code>{esc(p)}</code>" for p in paths) or '<span class="muted">none listed</span>'
    return (f'<article class="example" id="{esc(anchor)}"><h4>Example <code>{esc(ex_id)}</code></h4>'
            f'<p class="paths">Differing: {listed}</p>{_request(_mapping(example.get("request")))}'
            f'<div class="sides">{_side("primary", "primary", primary, shadow, paths)}'
            f'{_side("shadow", _shadow_label(target), shadow, primary, paths)}</div></article>')


def _examples_for(ep: Mapping[str, Any], examples: Mapping[str, Any]) -> list[str]:
    """This endpoint's example ids: those the ranked fields cite first, then the rest."""
    name = ep.get("endpoint")
    cited: list[str] = []
    for f in _seq(ep.get("fields")):
        f = _mapping(f)
        cited += [str(f.get("example"))] + [str(_mapping(e).get("id")) for e in _seq(f.get("examples"))]
    ordered = list(dict.fromkeys(cited + [str(k) for k in examples]))
    return [i for i in ordered if i in examples and _mapping(examples[i]).get("endpoint") == name]


def _endpoint_section(ep: Mapping[str, Any], anchor: str, report: Mapping[str, Any],
                      example_anchors: Mapping[str, str], ids: Sequence[str], shown: set[str]) -> str:
    """An endpoint's detail: figures, status transitions, ranked fields, examples."""
    examples = _mapping(report.get("examples"))
    target = str(report.get("target") or "shadow")
    stats = " · ".join(f"{k} {_num(ep.get(k))}" for k in ("replayed", "different", "noise", "artifacts", "errors"))
    stats += f" · diff rate {_pct(ep.get('diff_rate'))} · error rate {_pct(ep.get('error_rate'))}"
    body = "".join(_example(i, example_anchors[i], _mapping(examples[i]), target) for i in ids)
    examples_html = "<h3>Examples</h3>" + (body or '<p class="muted">No example in the report.</p>')
    return (f'<section class="endpoint" id="{esc(anchor)}"><h2>{esc(ep.get("endpoint"))}</h2>'
            f'<p class="stats">{esc(stats)} <a class="noprint" href="#endpoints">↑ endpoints</a></p>'
            f"{_latency_table(ep)}{_transitions(ep)}{_fields(ep, example_anchors, shown)}{examples_html}</section>")


def _sections(report: Mapping[str, Any], anchors: Sequence[str], example_anchors: Mapping[str, str]) -> str:
    """All endpoint sections, then any example no listed endpoint claims (so none is lost)."""
    examples = _mapping(report.get("examples"))
    endpoints = [_mapping(ep) for ep in _seq(report.get("endpoints"))]
    plan: list[list[str]] = []
    taken: set[str] = set()
    for ep in endpoints:
        ids = [i for i in _examples_for(ep, examples) if i not in taken]
        taken.update(ids)
        plan.append(ids)
    orphans = [str(i) for i in examples if str(i) not in taken]
    shown = taken | set(orphans)
    parts = [_endpoint_section(ep, anchor, report, example_anchors, ids, shown)
             for ep, anchor, ids in zip(endpoints, anchors, plan)]
    if orphans:
        target = str(report.get("target") or "shadow")
        parts.append('<section class="endpoint" id="other-examples"><h2>Other examples</h2>'
                     + "".join(_example(i, example_anchors[i], _mapping(examples[i]), target) for i in orphans)
                     + "</section>")
    return "".join(parts)


# ---------------------------------------------------------------- the page


STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa;--pass:#1a7f37;--fail:#cf222e;
--primary:#4872b8;--primary-2:#9db6de;--shadow:#d9782b;--shadow-2:#f0bf8e;--hl:#fff0b3;--hl-edge:#d4a72c}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0 auto;max-width:1280px;padding:20px 24px 48px;color:var(--fg);background:#fff;
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:20px;margin:0 0 6px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:14px;margin:0 0 4px}h5{font-size:12px;margin:8px 0 4px;
text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
a{color:#0b5cad}
code,.code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace}
code{font-size:12.5px}.muted{color:var(--muted)}.bad{color:var(--fail);font-weight:600}
.verdict{display:flex;gap:24px;align-items:flex-start;
border:2px solid var(--muted);border-radius:10px;padding:16px 22px}
.verdict.pass{border-color:var(--pass);background:#e6f6ea}
.verdict.fail{border-color:var(--fail);background:#fdecea}
.verdict-word{font-size:56px;font-weight:800;line-height:1;letter-spacing:.03em}
.pass .verdict-word{color:var(--pass)}.fail .verdict-word{color:var(--fail)}
.reasons{margin:4px 0;padding-left:20px;font-size:15px}p.reasons{padding-left:0}
.thresholds{margin:6px 0 0;color:var(--muted);font-size:13px}
.meta{display:flex;flex-wrap:wrap;gap:4px 20px;margin:10px 0 0;font-size:13px;color:var(--muted)}
.meta div{display:flex;gap:4px}
.meta dt{font-weight:600}
.meta dt:after{content:":"}
.meta dd{margin:0;color:var(--fg)}
.problems{border:1px solid #d4a72c;background:#fff8c5;border-radius:8px;padding:4px 16px;margin-top:16px}
.problems h2{border:0;margin-top:8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(96px,1fr));gap:8px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 10px;background:var(--soft)}
.card .figure{font-size:20px;font-weight:700;font-variant-numeric:tabular-nums}
.card .label{color:var(--muted);font-size:12px}
.card.bad{border-color:var(--fail);background:#fdecea}.card.bad .figure{color:var(--fail)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px}table.endpoints,table.fields{width:100%}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.endpoints th:not(:first-child){text-align:right}
tr.bad-row td:first-child{box-shadow:inset 3px 0 0 var(--fail)}
td.sample{max-width:420px;overflow-wrap:anywhere}
code.val{background:var(--soft);padding:0 3px;border-radius:3px}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;
font-weight:600;border:1px solid;white-space:nowrap}
.badge.change{color:#a40e26;background:#ffebe9;border-color:#ff8182}
.badge.probable_noise{color:#7d4e00;background:#fff8c5;border-color:#d4a72c}
.badge.noise{color:#424a53;background:#eaeef2;border-color:#afb8c1}
.badge.artifact{color:#0a3069;background:#ddf4ff;border-color:#54aeff}
.badge.unknown{color:var(--muted)}
figure{margin:8px 0 16px}figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
svg.chart{width:100%;height:auto;max-width:980px;font-size:12px;font-family:inherit;display:block}
svg .axis{stroke:#8c959f;stroke-width:1}svg .limit{stroke:var(--fail);stroke-width:1.5;stroke-dasharray:5 4}
svg .limit-label{fill:var(--fail);font-size:11px}
svg text{fill:var(--fg)}
svg .value{fill:var(--muted)}
svg .small{font-size:10px}
svg .bar{fill:#8c959f}svg .bar.over{fill:var(--fail)}
svg .lat.p50.primary{fill:var(--primary-2)}svg .lat.p50.shadow{fill:var(--shadow-2)}
svg .lat.p99.primary{fill:var(--primary)}svg .lat.p99.shadow{fill:var(--shadow)}
.stats{color:var(--muted);font-size:13px;margin:0 0 8px}.stats a{margin-left:8px}
table.latency,table.transitions{margin-bottom:4px}
.example{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:12px 0}
.paths{margin:0 0 4px;font-size:13px}
.sides{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}
.side.shadow h5{color:#9a4f10}.side.primary h5{color:#2f5597}
.code{font-size:12px;line-height:1.45;background:var(--soft);
border:1px solid var(--line);border-radius:6px;padding:4px 0;margin-bottom:6px}
.line{white-space:pre-wrap;overflow-wrap:anywhere;min-height:1.45em;padding:0 8px 0 4.4em;text-indent:-4.4em}
.line.plain{padding-left:10px;text-indent:0}
.line .no{display:inline-block;width:4.1em;padding-right:.8em;text-align:right;text-indent:0;color:#8c959f;
user-select:none}
.line.hl{background:var(--hl);box-shadow:inset 3px 0 0 var(--hl-edge)}
.line.hl-near{background:#fffbe6;box-shadow:inset 3px 0 0 #e7d38a}
.line.absent{font-style:italic;color:var(--muted)}
.line.err{background:#fdecea;color:var(--fail);font-weight:600}
.line.gap,.line.note{color:var(--muted);font-style:italic}
footer{margin-top:32px;color:var(--muted);font-size:12px}
@media (max-width:820px){.sides{grid-template-columns:1fr}.verdict{flex-direction:column;gap:8px}}
@media print{
@page{margin:12mm}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{max-width:none;padding:0;font-size:11px}.noprint{display:none}
.verdict{padding:10px 14px}.verdict-word{font-size:40px}h1{font-size:16px}h2{font-size:15px}
table{font-size:10px}th,td{padding:2px 4px}th{white-space:normal}td.num{white-space:normal}
.cards{grid-template-columns:repeat(6,1fr);gap:4px}.card{padding:4px 6px}.card .figure{font-size:14px}
a{color:inherit;text-decoration:none}.scroll{overflow:visible}
section.endpoint{break-before:page}h2,h3,h4,h5{break-after:avoid}
tr,.line,.card,figure{break-inside:avoid}
.code{font-size:9px}.sides{gap:6px;grid-template-columns:minmax(0,1fr) minmax(0,1fr)}svg.chart{max-width:100%}
}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """Render a report.json dict as one self-contained HTML page (see the module docstring).

    Verdict first, then input problems, totals, the endpoint table and charts, then one section
    per endpoint with status transitions, ranked fields and side-by-side examples.
    """
    report = _mapping(report)
    anchors, example_anchors = _anchors(report)
    verdict = str(report.get("verdict") or "unknown").upper()
    title = f"{verdict}: shadowtap analyze, {report.get('recording') or 'recording'}"
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer"><meta name="color-scheme" content="light">',
        '<link rel="icon" href="data:,">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n",
        _verdict(report), _meta(report), _problems(report), _totals(report),
        _endpoint_table(report, anchors), _charts(report), _sections(report, anchors, example_anchors),
        f'<footer>Written by {esc(report.get("tool") or "shadowtap")} {esc(report.get("version") or "")} from '
        f"{esc(report.get('recording') or 'a recording')}. Self-contained: this page loads nothing.</footer>",
        "\n</body></html>\n",
    ])
