"""`shadowtap analyze`: compare the shadow's answers with the primary's and decide."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from capture.cli import version
from capture.errors import UserError
from capture.recording import is_recording, private_dir, write_private
from replay.results import targets

from .analysis import Analyzer, Thresholds, verdict
from .diff import DEFAULT_IGNORED_HEADERS, Rules, path_pattern
from .endpoints import Endpoints
from .report_md import render_markdown


def _rate(text: str) -> float:
    t = text.strip()
    try:
        return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (try 1%)") from None


def _tolerance(text: str) -> tuple[re.Pattern[str], float]:
    path, sep, amount = text.rpartition("=")
    try:
        return path_pattern(path), abs(float(amount))
    except (ValueError, re.error):
        raise argparse.ArgumentTypeError(f"want PATH=AMOUNT, like body.price=0.01, not {text!r}") from None


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return path_pattern(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"bad path pattern {text!r}: {e}") from None


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="compare the shadow's answers with the primary's, per endpoint, and decide (pass/fail)",
        description="Pair each captured exchange with the shadow's answer, diff status, headers and "
        "bodies, cancel noise (with a baseline: Diffy's method), and write a release-review report. "
        "Exit 0 pass, 1 fail, 2 usage or input error.",
    )
    p.add_argument("rec", metavar="REC", help="a recording with results (extract, then replay)")
    p.add_argument("--target", default="shadow", help="the results to judge (default shadow)")
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="results of a second copy of the primary, for noise (default: baseline if present; none: off)")
    p.add_argument("--ignore-header", action="append", default=[], metavar="H", help="never compare header H")
    p.add_argument("--compare-header", action="append", default=[], metavar="H",
                   help="compare a header ignored by default (Date, Server, X-Request-Id, trace headers …)")
    p.add_argument("--ignore-field", action="append", default=[], type=_pattern, metavar="PATH",
                   help="never compare this path (body.meta.*, header.etag, or a regular expression)")
    p.add_argument("--unordered", action="append", default=[], type=_pattern, metavar="PATH",
                   help="compare the array at PATH ignoring order (body.tags, body.items[*].ids)")
    p.add_argument("--tolerance", action="append", default=[], type=_tolerance, metavar="PATH=X",
                   help="numbers at PATH within X are equal (body.price=0.01)")
    p.add_argument("--endpoint", action="append", default=[], metavar="'METHOD /path/{id}'",
                   help="group by this template (wins over the learned ones)")
    p.add_argument("--json", metavar="FILE", help="report.json (default REC/report/report.json)")
    p.add_argument("--markdown", metavar="FILE", help="summary.md (default REC/report/summary.md)")
    p.add_argument("--html", metavar="FILE", help="the HTML report (default REC/report/index.html)")
    p.add_argument("--max-diff-rate", type=_rate, default=0.01, metavar="R",
                   help="fail when an endpoint's answers differ more often (default 1%%)")
    p.add_argument("--max-error-rate", type=_rate, default=0.005, metavar="R",
                   help="fail when more replayed requests fail (default 0.5%%)")
    p.add_argument("--max-p99-increase", type=_rate, default=0.20, metavar="R",
                   help="fail when an endpoint's p99 latency grows more (default 20%%)")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    rec = Path(args.rec)
    if not is_recording(rec):
        raise UserError(f"{rec}: not a recording (no exchanges/ in it; make one with shadowtap extract -o)")
    names = targets(rec)
    if args.target not in names:
        raise UserError(f"{rec}: no results for --target {args.target}"
                        + (f" (there are: {', '.join(names)})" if names else " (run shadowtap replay first)"))
    base = args.baseline
    if base is None:
        base = "baseline" if "baseline" in names and args.target != "baseline" else None
    elif base == "none":
        base = None
    elif base not in names:
        raise UserError(f"{rec}: no results for --baseline {base} (there are: {', '.join(names)})")
    if base == args.target:
        raise UserError(f"--baseline {base} is the --target: noise would always equal the differences")
    ignored = (DEFAULT_IGNORED_HEADERS | {h.lower() for h in args.ignore_header}) - {h.lower() for h in args.compare_header}
    rules = Rules(frozenset(ignored), tuple(args.ignore_field), tuple(args.unordered), tuple(args.tolerance))
    try:
        endpoints = Endpoints(args.endpoint)
    except ValueError as e:
        raise UserError(str(e)) from None
    t = Thresholds(args.max_diff_rate, args.max_error_rate, args.max_p99_increase)
    started = time.time()
    order = _exchange_order(rec)
    shadow = Results(rec, args.target, order)
    baseline = Results(rec, base, order) if base else None
    a = Analyzer(rules, endpoints, base is not None, t)
    seen: set[str] = set()
    repeated = 0
    for batch in exchange_batches(rec):
        fresh = []
        for ex in batch:  # an id twice (extract run twice into one recording): the first counts
            if ex["id"] in seen:
                repeated += 1
            else:
                seen.add(ex["id"])
                fresh.append(ex)
        batch = fresh
        ids = [ex["id"] for ex in batch]
        theirs = shadow.rows(ids)
        base_rows = baseline.rows(ids) if baseline is not None else [None] * len(ids)
        for ex, r, b in zip(batch, theirs, base_rows):
            a.add(ex, r, b)
    report = a.report()
    if repeated:
        report["problems"].append(f"{repeated} exchanges repeat an id already read (extracted twice into one recording?): skipped")
    unknown = len(shadow.ids - seen)
    if unknown:
        report["problems"].append(f"{unknown} results of {args.target} are for exchanges not in the recording (ignored)")
    interrupted = shadow.count_error("interrupted")
    if interrupted:
        report["problems"].append(f"{interrupted} requests were interrupted by a stopped replay (counted as errors)")
    v, reasons = verdict(report, t)
    full = {
        "tool": "shadowtap", "version": version(), "recording": str(rec), "generated": started,
        "target": args.target, "baseline": base, "verdict": v, "reasons": reasons,
        "thresholds": {"max_diff_rate": t.max_diff_rate, "max_error_rate": t.max_error_rate,
                       "max_p99_increase": t.max_p99_increase, "relative": t.relative, "absolute": t.absolute},
        "totals": {"exchanges": len(seen), **report["totals"]},
        "endpoints": report["endpoints"], "examples": report["examples"], "problems": report["problems"],
    }
    out = rec / "report"
    paths = {"json": Path(args.json) if args.json else out / "report.json",
             "markdown": Path(args.markdown) if args.markdown else out / "summary.md",
             "html": Path(args.html) if args.html else out / "index.html"}
    _write(paths, full)
    print_summary(full, paths, time.time() - started)
    if not full["totals"]["sampled"]:
        raise UserError(f"{rec}: the results of {args.target} pair with none of the recording's exchanges")
    return 0 if v == "pass" else 1


EXCHANGE_COLUMNS = ["id", "client", "method", "target", "req_headers", "req_body", "status", "resp_headers",
                    "resp_body", "t_req_start", "t_resp_end", "flags"]


class Results:
    """One target's results, put in the recording's order once, then read alongside it a
    batch at a time: bodies stay in Arrow's buffers until the batch that needs them (a dict of
    Python rows would hold every body of the run as Python objects, several times their size),
    and one sort beats a random lookup per exchange."""

    def __init__(self, rec: Path, name: str, order: dict[str, int]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from replay.results import RESULT_SCHEMA, target_dir

        parts = sorted(target_dir(rec, name).glob("part-*.parquet"))
        tables = [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables, promote_options="default") if tables else RESULT_SCHEMA.empty_table()
        ids = table.column("id").to_pylist()
        last = {i: n for n, i in enumerate(ids)}  # a repeated id (a damaged run): the last wins
        self.ids = set(last)
        known = sorted((order[i], n) for i, n in last.items() if i in order)
        self.table = table.take(pa.array([n for _, n in known], pa.int64())) if known else table.slice(0, 0)
        self.have = {ids[n] for _, n in known}
        self.cursor = 0
        self.errors = table.column("error").to_pylist()
        self.table = self.table.select(RESULT_COLUMNS)

    def rows(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """The results for `ids`, the recording's next exchanges, in their order."""
        mine = [i in self.have for i in ids]
        k = sum(mine)
        chunk = iter(python_rows(self.table.slice(self.cursor, k))) if k else iter(())
        self.cursor += k
        return [next(chunk) if m else None for m in mine]

    def count_error(self, kind: str) -> int:
        return sum(1 for e in self.errors if e == kind)


RESULT_COLUMNS = ["id", "host", "status", "headers", "body", "error", "t_send", "t_end"]


def python_rows(table: Any) -> list[dict[str, Any]]:
    """Arrow rows as dicts, column by column; header lists become (name, value) tuples. Four
    times faster than Table.to_pylist, which makes a dict of every header of every row."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {}
    for name in table.column_names:
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_list(col.type) and pa.types.is_struct(col.type.value_type):
            offsets = col.offsets.to_pylist()
            flat = col.values
            pairs = list(zip(flat.field(0).to_pylist(), flat.field(1).to_pylist()))
            valid = col.is_valid().to_pylist()
            cols[name] = [pairs[offsets[i] : offsets[i + 1]] if valid[i] else None for i in range(len(col))]
        else:
            cols[name] = col.to_pylist()
    names = list(cols)
    return [dict(zip(names, row)) for row in zip(*(cols[n] for n in names))]


def exchange_batches(rec: Path, size: int = 1024) -> Any:
    """The recording's exchanges in read order, a batch of dicts at a time."""
    import pyarrow.parquet as pq

    for part in sorted((rec / "exchanges").glob("part-*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(columns=EXCHANGE_COLUMNS, batch_size=size):
            yield python_rows(batch)


def _exchange_order(rec: Path) -> dict[str, int]:
    """Each exchange id's position in read order (read_exchanges: parts sorted, rows in order)."""
    import pyarrow.parquet as pq

    order: dict[str, int] = {}
    for part in sorted((rec / "exchanges").glob("part-*.parquet")):
        for i in pq.read_table(part, columns=["id"]).column("id").to_pylist():
            order[i] = len(order)
    return order


def _write(paths: dict[str, Path], report: dict[str, Any]) -> None:
    from .report_html import render_html

    texts = {"json": json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
             "markdown": render_markdown(report), "html": render_html(report)}
    for kind, path in paths.items():
        try:
            if path.parent.name == "report" and is_recording(path.parent.parent):
                private_dir(path.parent)  # reports quote captured traffic: owner only, as the rest
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, texts[kind].encode())
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def print_summary(r: dict[str, Any], paths: dict[str, Path], seconds: float) -> None:
    t = r["totals"]
    err = sys.stderr
    print(f"analyze: {t['replayed']} pairs compared ({t['identical']} identical, {t['different']} different, "
          f"{t['noise']} noise, {t['artifacts']} artifacts), {t['errors']} errors, "
          f"{len(r['endpoints'])} endpoints; {seconds:.1f} s", file=err)
    for e in r["endpoints"]:
        changed = [f["path"] for f in e["fields"] if f["classification"] == "change"]
        if changed or e["errors"] or e["status_transitions"]:
            trans = ", ".join(f"{k} {v}" for k, v in e["status_transitions"].items())
            print(f"  {e['endpoint']}: {e['different']} of {e['replayed']} differ"
                  + (f" in {', '.join(changed[:5])}" if changed else "")
                  + (f"; {trans}" if trans else "") + (f"; {e['errors']} errors" if e["errors"] else ""), file=err)
    for p in r["problems"]:
        print(f"  input: {p}", file=err)
    print(f"verdict: {r['verdict'].upper()}" + "".join(f"\n  {x}" for x in r["reasons"]), file=err)
    print("report: " + ", ".join(str(p) for p in paths.values()), file=err)
