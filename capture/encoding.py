"""Content-Encoding decoders with a decompressed-size limit (bomb-safe).

Exchanges keep bodies as they were on the wire (still encoded) so that replay can send them
unchanged; analyze decodes them here before comparing. A 1 KB gzip bomb can inflate to
gigabytes, so every decoder stops at `limit` bytes and says so instead of trying.
"""
from __future__ import annotations

import zlib

import brotli
import zstandard

DEFAULT_LIMIT = 64 * 1024 * 1024


class DecodeError(Exception):
    """`kind` is 'too_large', 'corrupt' or 'unsupported'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _zlib(data: bytes, wbits: int, limit: int) -> bytes:
    out = []
    total = 0
    d = zlib.decompressobj(wbits)
    buf = data
    while True:
        chunk = d.decompress(buf, limit + 1 - total)
        out.append(chunk)
        total += len(chunk)
        if total > limit:
            raise DecodeError("too_large", f"decompressed body exceeds {limit} bytes")
        if d.eof:
            rest = d.unused_data
            # gzip allows several members back to back (pigz, concatenated logs).
            if wbits == 31 and rest.lstrip(b"\0"):
                d = zlib.decompressobj(wbits)
                buf = rest
                continue
            return b"".join(out)
        buf = d.unconsumed_tail
        if not buf:
            raise DecodeError("corrupt", "compressed body ends early")


def gunzip(data: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    try:
        return _zlib(data, 31, limit)
    except zlib.error as e:
        raise DecodeError("corrupt", f"gzip: {e}") from None


def inflate(data: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    """HTTP `deflate` is meant to be zlib-wrapped, but many servers send raw deflate."""
    try:
        return _zlib(data, 15, limit)
    except zlib.error:
        try:
            return _zlib(data, -15, limit)
        except zlib.error as e:
            raise DecodeError("corrupt", f"deflate: {e}") from None


def unbrotli(data: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    d = brotli.Decompressor()
    out = []
    total = 0
    try:
        chunk = d.process(data, output_buffer_limit=min(limit + 1, 1 << 20))
        while True:
            out.append(chunk)
            total += len(chunk)
            if total > limit:
                raise DecodeError("too_large", f"decompressed body exceeds {limit} bytes")
            if d.is_finished() or d.can_accept_more_data():
                break
            chunk = d.process(b"", output_buffer_limit=min(limit + 1 - total, 1 << 20))
    except brotli.error as e:
        raise DecodeError("corrupt", f"br: {e}") from None
    if not d.is_finished():
        raise DecodeError("corrupt", "br: compressed body ends early")
    return b"".join(out)


def unzstd(data: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        out = reader.read(limit + 1)
    except zstandard.ZstdError as e:
        raise DecodeError("corrupt", f"zstd: {e}") from None
    if len(out) > limit:
        raise DecodeError("too_large", f"decompressed body exceeds {limit} bytes")
    return out


DECODERS = {
    "gzip": gunzip,
    "x-gzip": gunzip,
    "deflate": inflate,
    "br": unbrotli,
    "zstd": unzstd,
}


def decode_body(body: bytes, content_encoding: str | None, limit: int = DEFAULT_LIMIT) -> bytes:
    """Undo a Content-Encoding list ("gzip, br" was applied gzip first, so undo br first)."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        fn = DECODERS.get(coding)
        if fn is None:
            raise DecodeError("unsupported", f"unsupported content-encoding {coding!r}")
        body = fn(body, limit)
    return body
