"""What a body is, once its Content-Encoding is undone: JSON, text, or bytes.

Bodies are stored as they were on the wire (still gzip'd, br'd …); the differ compares what
the client would have read. Decoding is bomb-safe (capture.encoding stops at a limit).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from capture.encoding import DecodeError, decode_body

LIMIT = 16 << 20  # a decoded body larger than this is compared by length and hash


def header(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    if not headers:
        return None
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


@dataclass
class Body:
    """A decoded body. A JSON body is parsed only when asked (`resolve`): most pairs are
    byte-equal and need no parsing at all."""

    kind: str  # "json", "text", "bytes", "empty"
    raw: bytes  # decoded
    value: Any = None  # the parsed JSON
    problem: str | None = None  # why it is not what its headers say
    ctype: str = ""
    parsed: bool = True

    def resolve(self) -> "Body":
        """Parse a JSON body now; one that does not parse becomes text or bytes."""
        if self.parsed:
            return self
        self.parsed = True
        data = self.raw
        try:
            self.value = json.loads(data)
            return self
        except (ValueError, UnicodeDecodeError):
            lines = _json_lines(data)
            if lines is not None:
                self.value = lines
                return self
        if "json" in self.ctype:
            self.problem = "not the JSON its Content-Type says"
        self.kind = _text_or_bytes(data)
        return self


def _text_or_bytes(data: bytes) -> str:
    try:
        data.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "bytes"


def read(body: bytes | None, headers: list[tuple[str, str]] | None) -> Body:
    data = body or b""
    enc = header(headers, "content-encoding")
    if enc and data:
        try:
            data = decode_body(data, enc, LIMIT)
        except DecodeError as e:
            return Body("bytes", data, problem=f"{e.kind}: {e}")
    if not data:
        return Body("empty", b"")
    ctype = (header(headers, "content-type") or "").lower()
    if "json" in ctype or (not ctype and data[:1] in (b"{", b"[")):
        return Body("json", data, ctype=ctype, parsed=False)
    if ctype.startswith("text/") or "xml" in ctype or "javascript" in ctype or "x-www-form" in ctype:
        return Body(_text_or_bytes(data), data, ctype=ctype)
    return Body("bytes", data, ctype=ctype)


def _json_lines(data: bytes) -> list[Any] | None:
    """Newline-delimited JSON (a stream of documents): compared as a list of them."""
    try:
        docs = [json.loads(line) for line in data.splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError):
        return None
    return docs if len(docs) > 1 else None
