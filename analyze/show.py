"""`shadowtap show`: one exchange in full, the primary's side and each target's, like the
`tcpdump -A` output in Istio's mirroring task.

    shadowtap show REC [--id ID | --endpoint 'GET /headers'] [--target shadow] [--baseline NAME]

For one exchange it prints the request as captured (request line, headers, body), the primary's
response, then for the target (and the baseline, when there is one) the request as it was sent
and the answer that came back. The request sent is not rebuilt with replay's logic (analyze
never imports replay's sender): it is the captured request with the Host the result recorded
(the `host` column), and the output says the Host was rewritten. Bodies are shown decoded
(gzip, br, …) and cut at --max-body; secrets are redacted as in the reports.
"""
from __future__ import annotations

import argparse
import json
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq

from capture.errors import UserError
from capture.recording import is_recording
from replay.results import target_dir, targets

from . import redact
from .bodies import Body, header, read
from .endpoints import Endpoints

DEFAULT_MAX_BODY = 4096  # characters of a body shown; 0 shows all
MAX_LINES = 80  # lines of a body shown, when --max-body is not 0
RULE = "─"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="print one exchange in full: the captured request, the primary's answer, the shadow's",
        description="Print one exchange of a recording the way `tcpdump -A` shows it: the request as "
        "captured and the primary's response, then the request as sent to the target (with the Host "
        "replay gave it) and the target's response. Bodies are decoded and secrets redacted.",
    )
    p.add_argument("rec", metavar="REC", help="a recording (extract -o, then replay)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--id", metavar="ID", help="the exchange id (as in extract --jsonl, or report.json's examples)")
    which.add_argument("--endpoint", metavar="'METHOD /path'",
                       help="the first replayed exchange of this endpoint ('GET /headers', 'GET /status/{id}')")
    p.add_argument("--target", default=None, metavar="NAME",
                   help="the results to show (default shadow, or the only target there is)")
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="also show this target's answer (default: baseline if present; none: off)")
    p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="CHARS",
                   help=f"show at most this much of each body (default {DEFAULT_MAX_BODY}; 0: all of it)")
    p.set_defaults(func=cmd_show)


# -- reading ------------------------------------------------------------------------------
def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def _rows_with_id(directory: Path, ident: str) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet dataset with this id, reading only the row groups that can hold it."""
    for part in _parts(directory):
        yield from pq.read_table(part, filters=[("id", "==", ident)]).to_pylist()


def _ids(directory: Path) -> set[str]:
    out: set[str] = set()
    for part in _parts(directory):
        out.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    return out


def _index(rec: Path) -> Iterator[dict[str, Any]]:
    """id, method and target of every exchange, in recording order (no bodies are read)."""
    for part in _parts(rec / "exchanges"):
        pf = pq.ParquetFile(part)
        for batch in pf.iter_batches(columns=["id", "method", "target"], batch_size=8192):
            yield from batch.to_pylist()


def _normalise(text: str) -> str:
    method, _, path = text.strip().partition(" ")
    return f"{method.upper()} {path.strip()}"


def choose(rec: Path, ident: str | None, endpoint: str | None, replayed: set[str], target: str) -> str:
    """The id of the exchange to show; every way of not finding one is a one-line error."""
    if ident is not None:
        if not any(True for _ in _rows_with_id(rec / "exchanges", ident)):
            raise UserError(f"{rec}: no exchange with id {ident} (ids are in `shadowtap extract --jsonl` "
                            "and in report.json's examples)")
        if ident not in replayed:
            raise UserError(f"{rec}: exchange {ident} has no result in results/{target} (it was not "
                            "sampled, or it is a write that replay held back without --allow-writes)")
        return ident
    if endpoint is None:
        for row in _index(rec):
            if row["id"] in replayed:
                return str(row["id"])
        raise UserError(f"{rec}: no exchange of the recording has a result in results/{target}")
    want = _normalise(endpoint)
    try:
        mine = Endpoints([want])  # the user's text as a pattern: 'GET /status/{code}' or '/status/418'
    except ValueError as e:
        raise UserError(str(e)) from None
    learned = Endpoints()
    matched = 0
    for row in _index(rec):
        m, t = row["method"], row["target"]
        if m is None:
            continue
        if learned.of(m, t) == want or mine.of(m, t) == want:
            matched += 1
            if row["id"] in replayed:
                return str(row["id"])
    if matched:
        raise UserError(f"{rec}: none of the {matched} exchanges of {want} has a result in results/{target}")
    raise UserError(f"{rec}: no exchange of endpoint {want} (see the endpoints in report.json or `shadowtap analyze`)")


def _replay_urls(rec: Path) -> dict[str, str]:
    try:
        manifest = json.loads((rec / "manifest.json").read_text())
        return {name: t.get("url") for name, t in manifest.get("replay", {}).get("targets", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


# -- printing -----------------------------------------------------------------------------
def _pairs(headers: Any) -> list[tuple[str, str]]:
    return [(h["name"], h["value"]) if isinstance(h, dict) else (h[0], h[1]) for h in headers or []]


def _clock(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d} UTC"


def _ms(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{(b - a) * 1e3:.1f} ms"


def _cut(text: str, limit: int) -> str:
    if limit <= 0:
        return text
    more = ""
    if len(text) > limit:
        more = f"… {len(text) - limit} more characters (--max-body 0 shows all)"
        text = text[:limit]
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        more = f"… {len(lines) - MAX_LINES} more lines (--max-body 0 shows all)"
        text = "\n".join(lines[:MAX_LINES])
    return text + ("\n" + more if more else "")


def body_text(data: bytes | None, headers: list[tuple[str, str]], limit: int) -> list[str]:
    """A body as the client would read it, redacted and cut, as lines (none for no body)."""
    if not data:
        return []
    b: Body = read(data, headers).resolve()
    notes = []
    enc = header(headers, "content-encoding")
    if enc and not b.problem:
        notes.append(f"[{len(data)} bytes on the wire, {len(b.raw)} after undoing Content-Encoding: {enc}]")
    if b.problem:
        notes.append(f"[{b.problem}]")
    if b.kind == "json":
        # As it was sent, unless redaction masked something: then re-written, redacted.
        raw = b.raw.decode("utf-8", "replace")
        try:
            doc = json.loads(b.raw)
            masked = redact.value(doc)
            text = redact.text(raw) if masked == doc else json.dumps(masked, indent=2, ensure_ascii=False)
        except (ValueError, UnicodeDecodeError):  # newline-delimited JSON: one document a line
            docs = b.value or []
            masked = [redact.value(d) for d in docs]
            text = redact.text(raw) if masked == docs else "\n".join(json.dumps(d, ensure_ascii=False) for d in masked)
    elif b.kind == "text":
        text = redact.text(b.raw.decode("utf-8", "replace"))  # form pairs and secret query values too
    elif b.kind == "bytes":
        preview = " ".join(f"{c:02x}" for c in b.raw[:16])
        what = b.ctype or "no Content-Type"
        text = f"[{len(b.raw)} bytes of binary ({what}), not shown; first {min(16, len(b.raw))}: {preview}]"
    else:
        return notes
    return notes + _cut(text.rstrip("\n"), limit).split("\n")


def _heading(text: str) -> str:
    return f"{RULE * 2} {text} " + RULE * max(3, 96 - len(text))


def _request_lines(ex: dict[str, Any], headers: list[tuple[str, str]], limit: int) -> list[str]:
    lines = [f"{ex['method']} {redact.text(ex['target'] or '')} {ex.get('version') or 'HTTP/1.1'}"]
    lines += [f"{k}: {v}" for k, v in redact.headers(headers)]
    body = body_text(ex.get("req_body"), headers, limit)
    return lines + ([""] + body if body else [])


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _response_lines(version: str | None, status: int | None, reason: str | None, headers: Any,
                    body: bytes | None, interim: list[int] | None, limit: int) -> list[str]:
    hs = _pairs(headers)
    lines = [f"{version or 'HTTP/1.1'} {c} {_phrase(c)}".rstrip() for c in interim or []]
    lines.append(f"{version or 'HTTP/1.1'} {status} {reason or ''}".rstrip())
    lines += [f"{k}: {v}" for k, v in redact.headers(hs)]
    b = body_text(body, hs, limit)
    return lines + ([""] + b if b else [])


def _sent_request(ex: dict[str, Any], captured: list[tuple[str, str]], host: str | None) -> tuple[list[tuple[str, str]], list[str]]:
    """The captured headers with the Host the result says was sent, and what to say about it."""
    notes = []
    if "chunked" in (header(captured, "transfer-encoding") or "").lower():
        notes.append("[replay sends a chunked body with a Content-Length instead]")
    old = header(captured, "host")
    if host is None:
        notes.append("[the result does not record the Host it sent; headers as captured]")
        return captured, notes
    if old is None:
        notes.append(f"[Host: {host} added by replay (the captured request had none)]")
        return captured + [("Host", host)], notes
    if old != host:
        notes.append(f"[Host rewritten by replay: {old} -> {host}; the rest as captured]")
    else:
        notes.append("[Host sent as captured (--no-shadow-suffix); the rest as captured]")
    return [(k, host) if k.lower() == "host" else (k, v) for k, v in captured], notes


def render(rec: Path, ex: dict[str, Any], results: list[tuple[str, dict[str, Any] | None]], limit: int,
           urls: dict[str, str]) -> str:
    captured = _pairs(ex.get("req_headers"))
    ep = Endpoints().of(ex["method"], ex["target"])
    out = [f"exchange {ex['id']}: {ex['method']} {redact.text(ex['target'] or '')}   (endpoint {ep}; "
           f"request {ex['index'] + 1} on connection {ex['conn']})"]
    if ex.get("flags"):
        out.append(f"flags: {', '.join(ex['flags'])}" + (f" ({ex['error']})" if ex.get("error") else ""))
    out += ["", _heading(f"request, as captured: {ex['client']} > {ex['server']} at {_clock(ex.get('t_req_start'))}")]
    out += _request_lines(ex, captured, limit)
    out.append("")
    if ex.get("status") is None:
        out += [_heading(f"primary {ex['server']}: no response captured"), ""]
    else:
        out.append(_heading(f"response from the primary: {ex['server']} > {ex['client']}, "
                            f"{_ms(ex.get('t_req_start'), ex.get('t_resp_end'))}"))
        out += _response_lines(ex.get("resp_version"), ex["status"], ex.get("reason"), ex.get("resp_headers"),
                               ex.get("resp_body"), ex.get("interim"), limit)
        out.append("")
    for name, r in results:
        url = urls.get(name)
        where = f"{name} ({url})" if url else name
        if r is None:
            out += [_heading(f"{where}: this exchange was not replayed to it"), ""]
            continue
        headers, notes = _sent_request(ex, captured, r.get("host"))
        out.append(_heading(f"request, as sent to {where} at {_clock(r.get('t_send'))}"))
        out += _request_lines(ex, headers, limit)
        out += notes
        out.append("")
        if r.get("error") and r.get("status") is None:
            detail = f": {r['error_detail']}" if r.get("error_detail") else ""
            out += [_heading(f"response from {name}: none ({r['error']}{detail})"), ""]
            continue
        extra = f"; {r['error']}: {r.get('error_detail') or ''}".rstrip(": ") if r.get("error") else ""
        out.append(_heading(f"response from {name}, {_ms(r.get('t_send'), r.get('t_end'))}{extra}"))
        out += _response_lines(r.get("version"), r.get("status"), r.get("reason"), r.get("headers"),
                               r.get("body"), r.get("interim"), limit)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def cmd_show(args: argparse.Namespace) -> int:
    rec = Path(args.rec)
    if not is_recording(rec):
        raise UserError(f"{rec}: not a recording (no exchanges/ in it; make one with shadowtap extract -o)")
    names = targets(rec)
    if not names:
        raise UserError(f"{rec}: no results yet (run shadowtap replay {rec} --target URL first)")
    target = args.target
    if target is None:
        others = [n for n in names if n != "baseline"]
        target = "shadow" if "shadow" in names else others[0] if len(others) == 1 else None
        if target is None:
            raise UserError(f"{rec}: several results, choose one with --target ({', '.join(names)})")
    elif target not in names:
        raise UserError(f"{rec}: no results for --target {target} (there are: {', '.join(names)})")
    base = args.baseline
    if base is None:
        base = "baseline" if "baseline" in names and target != "baseline" else None
    elif base == "none":
        base = None
    elif base not in names:
        raise UserError(f"{rec}: no results for --baseline {base} (there are: {', '.join(names)})")
    ident = choose(rec, args.id, args.endpoint, _ids(target_dir(rec, target)), target)
    ex = next(_rows_with_id(rec / "exchanges", ident))
    results: list[tuple[str, dict[str, Any] | None]] = [(target, next(_rows_with_id(target_dir(rec, target), ident)))]
    if base:
        results.append((base, next(_rows_with_id(target_dir(rec, base), ident), None)))
    print(render(rec, ex, results, args.max_body, _replay_urls(rec)), end="")
    return 0
