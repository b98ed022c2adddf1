"""Content-Encoding decoders: every coding, stacked codings, corrupt input, and bombs."""
from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from capture.encoding import DecodeError, decode_body

BODY = b'{"slideshow": {"title": "Sample"}}' * 50


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("coding,encoded", [
    ("gzip", gzip.compress(BODY)),
    ("x-gzip", gzip.compress(BODY)),
    ("deflate", zlib.compress(BODY)),
    ("deflate", raw_deflate(BODY)),  # what many servers really send
    ("br", brotli.compress(BODY)),
    ("zstd", zstandard.ZstdCompressor().compress(BODY)),
    ("identity", BODY),
    (None, BODY),
    ("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two gzip members
])
def test_each_coding(coding: str | None, encoded: bytes) -> None:
    assert decode_body(encoded, coding) == BODY


def test_stacked_codings_are_undone_in_reverse() -> None:
    assert decode_body(brotli.compress(gzip.compress(BODY)), "gzip, br") == BODY


@pytest.mark.parametrize("coding,bomb", [
    ("gzip", gzip.compress(b"\0" * (64 << 20))),
    ("deflate", zlib.compress(b"\0" * (64 << 20))),
    ("br", brotli.compress(b"\0" * (64 << 20))),
    ("zstd", zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))),
])
def test_bombs_stop_at_the_limit(coding: str, bomb: bytes) -> None:
    assert len(bomb) < 200_000
    with pytest.raises(DecodeError) as e:
        decode_body(bomb, coding, limit=1 << 20)
    assert e.value.kind == "too_large"


@pytest.mark.parametrize("coding,bad", [
    ("gzip", gzip.compress(BODY)[:-30]),
    ("br", brotli.compress(BODY)[:-4]),
    ("gzip", b"not gzip at all"),
    ("compress", b"x"),
])
def test_corrupt_or_unknown(coding: str, bad: bytes) -> None:
    with pytest.raises(DecodeError) as e:
        decode_body(bad, coding)
    assert e.value.kind in ("corrupt", "unsupported")
