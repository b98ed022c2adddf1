"""The JSON-lines view: the hand-written encoder must say exactly what json.dumps says."""
from __future__ import annotations

import json
from pathlib import Path

from capture.exchange import json_line
from capture.extract import Extractor, InputReport, read_capture
from tests.capture.craft import Conv, extract, ok

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_json_line_equals_json_dumps_on_real_captures() -> None:
    n = 0
    for pcap in sorted(FIXTURES.glob("*.pcap")):
        ex = Extractor()
        rep = InputReport(str(pcap))
        out = [e for recs in read_capture(str(pcap), rep) for e in ex.feed(recs)] + ex.finish()
        for e in out:
            line = json_line(e)
            assert json.loads(line) == e.summary()
            assert line == json.dumps(e.summary())
            n += 1
    assert n > 100


def test_json_line_escapes_what_needs_escaping() -> None:
    c = Conv().handshake()
    c.c('GET /q?"a"=\\\u00e9\t HTTP/1.1\r\n\r\n'.encode("latin-1"))
    c.s(ok(status='200 "quoted" r\u00e9ason'.encode("latin-1").decode("latin-1")))
    c.c(b"\x01\x02junk")  # not HTTP: an orphan response gets its own line
    c.ack_c()
    for e in extract(c.fin().pkts):
        assert json.loads(json_line(e)) == e.summary()
