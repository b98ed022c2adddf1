"""The public capture corpus: every file extracts, and its message counts are the true ones.

The corpus (117 public pcap/pcapng files with HTTP/1.x, see its README.md) lives outside the
repository, in shared/corpus beside the checkout (or $SHADOWTAP_CORPUS). CI lays shared/ out
the same way, so a missing corpus is a failure, not a skip.

`corpus_expected.tsv` has one row per corpus file: the number of exchanges that should carry a
request and a response, tshark's frame counts from the corpus MANIFEST.tsv, and `why` the two
differ. The expected counts are the truth at the level of HTTP messages (what the server's
access log would count), decided by reading each file; they are not shadowtap's output. Where
shadowtap is wrong, `why` starts with "shadowtap bug:" and the test fails until it is fixed.

How messages are counted: an exchange has a request when it is not flagged `no_request` (a
request message was seen, even one whose request line could not be parsed), and a response
when it is not flagged `no_response`. Messages must also be identified: a request has a method
or says why not (`error`), a response has a status (or is a headless HTTP/0.9 response) or says
why not.
"""
from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from capture.extract import Extractor, InputReport, read_capture

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("SHADOWTAP_CORPUS", REPO.parent / "shared" / "corpus"))
PCAPS = CORPUS / "pcaps"
TABLE = Path(__file__).with_name("corpus_expected.tsv")
COLUMNS = ["file", "requests", "responses", "tshark_requests", "tshark_responses", "why"]



def test_corpus_is_present() -> None:
    assert PCAPS.is_dir(), f"the corpus is expected at {PCAPS} (shared/ beside the checkout)"


def _table() -> dict[str, dict[str, str]]:
    with TABLE.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert reader.fieldnames == COLUMNS, f"{TABLE.name} columns are {reader.fieldnames}"
        rows = list(reader)
    table = {r["file"]: r for r in rows}
    assert len(table) == len(rows), "a file is listed twice"
    return table


TABLE_ROWS = _table()


@dataclass
class Result:
    requests: int = 0
    responses: int = 0
    problems: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=None)
def extract(name: str) -> Result:
    """Extract one corpus file in-process and check what must hold for any input."""
    path = str(PCAPS / name)
    ex = Extractor()
    rep = InputReport(path)
    out = []
    for recs in read_capture(path, rep):
        out += ex.feed(recs)
    out += ex.finish()

    res = Result()
    bad = res.problems.append
    if rep.error:
        bad(f"reading stopped: {rep.error}")
    flag_count: Counter[str] = Counter()
    for e in out:
        flag_count.update(e.flags)
        req, resp = e.request, e.response
        # Accounting: an exchange has both messages, or says which one is missing.
        if (req is None) != ("no_request" in e.flags):
            bad(f"{e.id}: request {'missing' if req is None else 'present'} but flags {sorted(e.flags)}")
        if (resp is None) != ("no_response" in e.flags):
            bad(f"{e.id}: response {'missing' if resp is None else 'present'} but flags {sorted(e.flags)}")
        if req is None and resp is None:
            bad(f"{e.id}: an exchange with neither request nor response")
        # Identification: a message that is emitted says what it is, or why it cannot.
        if req is not None and req.method is None and req.error is None:
            bad(f"{e.id}: request without a method and without an error (flags {sorted(e.flags)})")
        if resp is not None and resp.status is None and resp.error is None:
            if resp.version != "HTTP/0.9":
                bad(f"{e.id}: response without a status and without an error (flags {sorted(e.flags)})")
            elif b"".join(resp.body)[:8].startswith(b"HTTP/1."):
                bad(f"{e.id}: HTTP/0.9 response whose body starts with a status line")
        res.requests += "no_request" not in e.flags
        res.responses += "no_response" not in e.flags

    c = ex.counts()
    if c["exchanges"] != len(out):
        bad(f"counts: exchanges {c['exchanges']} but {len(out)} emitted")
    if c["packets"] != rep.records:
        bad(f"counts: packets {c['packets']} but {rep.records} records read")
    if sum(c["packets_by_linktype"].values()) != c["packets"]:
        bad(f"counts: packets_by_linktype {c['packets_by_linktype']} does not add up to {c['packets']}")
    if c["http_connections"] > c["tcp_connections"]:
        bad(f"counts: http_connections {c['http_connections']} > tcp_connections {c['tcp_connections']}")
    if c["http_connections"] + sum(c["non_http_connections"].values()) != c["tcp_connections"]:
        bad(f"counts: http {c['http_connections']} + non-http {c['non_http_connections']} "
            f"!= tcp_connections {c['tcp_connections']}: every connection is accounted for")
    if c["requests_without_response"] != flag_count["no_response"]:
        bad(f"counts: requests_without_response {c['requests_without_response']} "
            f"but {flag_count['no_response']} exchanges flagged no_response")
    if c["responses_without_request"] != flag_count["no_request"]:
        bad(f"counts: responses_without_request {c['responses_without_request']} "
            f"but {flag_count['no_request']} exchanges flagged no_request")
    if c["exchanges_by_flag"] != dict(flag_count):
        bad(f"counts: exchanges_by_flag {c['exchanges_by_flag']} but flags emitted {dict(flag_count)}")
    return res


def corpus_files() -> list[str]:
    return sorted(p.name for p in PCAPS.iterdir() if p.is_file()) if PCAPS.is_dir() else []


def test_table_covers_the_corpus() -> None:
    present = set(corpus_files())
    listed = set(TABLE_ROWS)
    assert not present - listed, f"corpus files missing from {TABLE.name}: {sorted(present - listed)}"
    assert not listed - present, f"{TABLE.name} lists files not in the corpus: {sorted(listed - present)}"


def test_table_is_consistent() -> None:
    """tshark's columns are the MANIFEST's; every difference from tshark is explained."""
    manifest_path = CORPUS / "MANIFEST.tsv"
    manifest = {}
    if manifest_path.is_file():
        with manifest_path.open(newline="") as f:
            manifest = {r["file"]: r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    wrong = []
    for name, row in TABLE_ROWS.items():
        for col in ("requests", "responses", "tshark_requests", "tshark_responses"):
            if not row[col].isdigit():
                wrong.append(f"{name}: {col} is {row[col]!r}")
        m = manifest.get(name)
        if m is not None and (row["tshark_requests"], row["tshark_responses"]) != (
            m["http_requests"], m["http_responses"]
        ):
            wrong.append(f"{name}: tshark columns differ from MANIFEST.tsv")
        differs = (row["requests"], row["responses"]) != (row["tshark_requests"], row["tshark_responses"])
        if differs and not row["why"].strip():
            wrong.append(f"{name}: differs from tshark without a why")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", corpus_files())
def test_counts(name: str) -> None:
    row = TABLE_ROWS.get(name)
    if row is None:
        pytest.fail(f"{name} is not in {TABLE.name}")
    res = extract(name)
    got = (res.requests, res.responses)
    want = (int(row["requests"]), int(row["responses"]))
    assert got == want, (
        f"requests/responses {got[0]}/{got[1]}, expected {want[0]}/{want[1]} "
        f"(tshark {row['tshark_requests']}/{row['tshark_responses']}): {row['why']}"
    )


@pytest.mark.parametrize("name", corpus_files())
def test_invariants(name: str) -> None:
    problems = extract(name).problems
    assert not problems, "\n".join(problems[:20]) + (f"\n… {len(problems) - 20} more" if len(problems) > 20 else "")
