"""The Markdown summary: what a pull request or a release ticket needs, and no more."""
from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{x:.2%}" if x else "0%"


def _cell(v: Any) -> str:
    """A value as JSON (so that 26 and "26" read differently), cut to fit a table cell."""
    import json

    s = json.dumps(v, ensure_ascii=False, default=str) if v is not None else "(absent)"
    s = s.replace("|", "\\|").replace("\n", " ").replace("``", "`\u200b`")  # stays inside its code span
    return s if len(s) <= 60 else s[:57] + "…"


def render_markdown(r: dict[str, Any]) -> str:
    t = r["totals"]
    icon = "✅" if r["verdict"] == "pass" else "❌"
    out = [f"## {icon} shadowtap: {r['verdict'].upper()} — `{r['target']}` against the primary"
           + (f" (noise from `{r['baseline']}`)" if r.get("baseline") else " (no baseline: rules and detectors for noise)"),
           ""]
    for reason in r["reasons"]:
        out.append(f"- {reason}")
    if r["reasons"]:
        out.append("")
    out.append(f"{t['replayed']} of {t['requests']} requests replayed and compared: {t['identical']} identical, "
               f"**{t['different']} different**, {t['noise']} noise, {t['artifacts']} mirroring artifacts, "
               f"{t['errors']} errors (diff rate {_pct(t['diff_rate'])}, error rate {_pct(t['error_rate'])}).")
    ref = "baseline" if r.get("baseline") else "primary"
    out += ["", f"| endpoint | replayed | different | noise | artifacts | errors | status changes | p99 {ref} → shadow |",
            "|---|---:|---:|---:|---:|---:|---|---|"]
    for e in r["endpoints"]:
        lat = e["latency"]
        p, s = lat.get(ref) or {}, lat.get("shadow") or {}
        trans = ", ".join(f"{k}: {v}" for k, v in e["status_transitions"].items())
        out.append(f"| `{e['endpoint']}` | {e['replayed']} | {e['different']} | {e['noise']} | {e['artifacts']} | "
                   f"{e['errors']} | {trans} | {p.get('p99', '-')} → {s.get('p99', '-')} ms |")
    changes = [(e["endpoint"], f) for e in r["endpoints"] for f in e["fields"] if f["classification"] == "change"]
    if changes:
        out += ["", "**What changed**", "", "| endpoint | field | pairs | noise | example: primary → shadow |",
                "|---|---|---:|---:|---|"]
        for ep, f in changes[:50]:
            ex = f["examples"][0] if f["examples"] else {}
            out.append(f"| `{ep}` | `{f['path']}` | {f['raw']} | {f['noise']} | "
                       f"`` {_cell(ex.get('primary'))} `` → `` {_cell(ex.get('shadow'))} `` |")
    quiet = [(e["endpoint"], f) for e in r["endpoints"] for f in e["fields"] if f["classification"] != "change"]
    if quiet:
        out += ["", "<details><summary>Noise and mirroring artifacts (not counted as changes)</summary>", ""]
        for ep, f in quiet[:50]:
            out.append(f"- `{ep}` `{f['path']}`: {f['classification'].replace('_', ' ')} ({f['raw']} pairs)")
        out += ["", "</details>"]
    if r.get("problems"):
        out += ["", "**Input problems**", ""] + [f"- {p}" for p in r["problems"]]
    return "\n".join(out) + "\n"
