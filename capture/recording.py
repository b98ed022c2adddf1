"""The recording directory: the on-disk contract between capture, replay and analyze.

    REC/exchanges/part-NNNNN.parquet   primary exchanges (this module writes them)
    REC/results/<target>/part-*.parquet
    REC/manifest.json

Parquet so that pandas, DuckDB, Polars or Spark read it as it is. Each part is written under
a hidden temporary name and renamed when complete, so a killed process never leaves a
half-written part visible. Everything that holds captured traffic is created mode 0600
(directories 0700): it can hold credentials.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .exchange import Exchange, body_bytes

FORMAT_VERSION = 1
HEADERS = pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))

EXCHANGE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("conn", pa.string()),
    ("index", pa.int32()),
    ("client", pa.string()),
    ("server", pa.string()),
    ("method", pa.string()),
    ("target", pa.string()),
    ("version", pa.string()),
    ("req_headers", HEADERS),
    ("req_body", pa.binary()),
    ("req_body_len", pa.int64()),
    ("status", pa.int32()),
    ("reason", pa.string()),
    ("resp_version", pa.string()),
    ("resp_headers", HEADERS),
    ("resp_body", pa.binary()),
    ("resp_body_len", pa.int64()),
    ("t_req_start", pa.float64()),
    ("t_req_end", pa.float64()),
    ("t_resp_start", pa.float64()),
    ("t_resp_end", pa.float64()),
    ("interim", pa.list_(pa.int32())),
    ("flags", pa.list_(pa.string())),
    ("error", pa.string()),
])


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # an existing directory keeps its mode otherwise
    return path


def open_private_tmp(tmp: Path) -> int:
    """A fresh temporary file, owner-only; a stale one (a killed run's) is replaced, and a
    symbolic link planted under its name is never followed."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


def write_private(path: Path, data: bytes) -> None:
    """Write a file atomically (temp name, then rename), readable by its owner only."""
    tmp = path.with_name("." + path.name + ".tmp")
    with os.fdopen(open_private_tmp(tmp), "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class PartWriter:
    """Buffers rows and writes them as numbered Parquet parts, atomically, mode 0600."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_part: int = 50_000,
                 bytes_per_part: int = 256 * 1024 * 1024) -> None:
        self.dir = private_dir(directory)
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.bytes_per_part = bytes_per_part  # large bodies: flush by size, not only by count
        self.rows: list[dict[str, Any]] = []
        self.buffered = 0
        self.parts: list[str] = []
        self.written = 0
        self._next = 0
        while (self.dir / f"part-{self._next:05d}.parquet").exists():
            self._next += 1

    def add(self, row: dict[str, Any], size: int = 0) -> None:
        self.rows.append(row)
        self.buffered += size
        if len(self.rows) >= self.rows_per_part or self.buffered >= self.bytes_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        name = f"part-{self._next:05d}.parquet"
        tmp = self.dir / f".{name}.tmp"
        with os.fdopen(open_private_tmp(tmp), "wb") as f:
            pq.write_table(table, f, compression="zstd")
        os.replace(tmp, self.dir / name)
        self.parts.append(name)
        self.written += len(self.rows)
        self.rows = []
        self.buffered = 0
        self._next += 1


def exchange_row(ex: Exchange) -> dict[str, Any]:
    """The JSON-lines fields plus what they leave out: headers, bodies, response version."""
    req, resp = ex.request, ex.response
    row = ex.summary()
    row["req_headers"] = req.headers if req else None
    row["req_body"] = body_bytes(req)
    row["resp_version"] = resp.version if resp else None
    row["resp_headers"] = resp.headers if resp else None
    row["resp_body"] = body_bytes(resp)
    return row


class ExchangeWriter:
    """Writes REC/exchanges/ from scratch (an earlier extraction's parts are replaced)."""

    def __init__(self, rec: Path, rows_per_part: int = 50_000) -> None:
        self.rec = private_dir(rec)
        d = rec / "exchanges"
        if d.exists():
            for old in d.glob("part-*.parquet"):
                old.unlink()
        self.parts = PartWriter(d, EXCHANGE_SCHEMA, rows_per_part)

    def add(self, ex: Exchange) -> None:
        row = exchange_row(ex)
        self.parts.add(row, len(row["req_body"] or b"") + len(row["resp_body"] or b""))

    def close(self) -> None:
        self.parts.flush()


def write_manifest(rec: Path, section: str, data: dict[str, Any]) -> None:
    """Merge one stage's section into REC/manifest.json (each stage owns its section)."""
    path = rec / "manifest.json"
    manifest: dict[str, Any] = {}
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
    manifest["format_version"] = FORMAT_VERSION
    manifest[section] = data
    write_private(path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


def read_exchanges(rec: Path, columns: list[str] | None = None, batch_size: int = 65536,
                   limit: int | None = None, stride: tuple[int, int] = (0, 1)) -> Iterator[dict[str, Any]]:
    """Stream the exchanges of a recording, part by part, as dicts (see exchange_batches)."""
    for batch in exchange_batches(rec, columns, batch_size, limit, stride):
        yield from batch.to_pylist()


def exchange_batches(rec: Path, columns: list[str] | None = None, batch_size: int = 65536,
                     limit: int | None = None, stride: tuple[int, int] = (0, 1),
                     threads: bool = True) -> Iterator[pa.RecordBatch]:
    """Stream the exchanges of a recording, part by part, as record batches: the first `limit`,
    and of those, with `stride` (k, n), only the batches numbered k modulo n (readers in n
    processes share a recording without each converting every row)."""
    k, n = stride
    seen = 0
    number = 0
    for part in sorted((rec / "exchanges").glob("part-*.parquet")):
        pf = pq.ParquetFile(part)
        for batch in pf.iter_batches(columns=columns, batch_size=batch_size, use_threads=threads):
            if limit is not None and seen + batch.num_rows > limit:
                batch = batch.slice(0, limit - seen)
            seen += batch.num_rows
            if number % n == k:
                yield batch
            number += 1
            if limit is not None and seen >= limit:
                return


def count_exchanges(rec: Path) -> int:
    """From the parts' footers: no row is read."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (rec / "exchanges").glob("part-*.parquet"))


def is_recording(path: Path) -> bool:
    return path.is_dir() and (path / "exchanges").is_dir()
