"""The replay's records: one result per request sent, per target, as Parquet parts.

    REC/results/<target>/part-NNNNN.parquet   results (capture.recording's atomic parts)
    REC/results/<target>/_sent.log            ids handed to the sender, written before sending
                                              (the leading _ keeps Parquet readers off it)

The journal is what makes a re-run safe: an id is appended before its request can leave, so
a run that is killed and restarted skips it even if its result was still in memory. Such a
request gets an `interrupted` result on restart (it may or may not have reached the
target) and is never sent twice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from capture.recording import HEADERS, open_private_tmp, private_dir

# Error kinds (DESIGN.md's result record); `interrupted` is ours: see the module docstring.
ERROR_KINDS = ("timeout", "refused", "reset", "protocol", "too_large", "interrupted")

RESULT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("target", pa.string()),
    ("host", pa.string()),  # the Host header the request carried (the shadow rule's output)
    ("t_due", pa.float64()),  # epoch seconds the schedule asked for
    ("t_send", pa.float64()),  # epoch seconds the request was written
    ("t_first_byte", pa.float64()),
    ("t_end", pa.float64()),
    ("status", pa.int32()),
    ("reason", pa.string()),
    ("version", pa.string()),
    ("headers", HEADERS),
    ("body", pa.binary()),
    ("body_len", pa.int64()),  # de-chunked body bytes received (kept or not)
    ("interim", pa.list_(pa.int32())),
    ("error", pa.string()),  # one of ERROR_KINDS, or null
    ("error_detail", pa.string()),
])


@dataclass(slots=True)
class Result:
    id: str
    target: str
    host: str | None = None
    t_due: float | None = None
    t_send: float | None = None
    t_first_byte: float | None = None
    t_end: float | None = None
    status: int | None = None
    reason: str | None = None
    version: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None
    body_len: int = 0
    interim: list[int] = field(default_factory=list)
    error: str | None = None
    error_detail: str | None = None

    @property
    def lag(self) -> float | None:
        if self.t_send is None or self.t_due is None:
            return None
        return self.t_send - self.t_due


_NAMES = [f.name for f in RESULT_SCHEMA]


def results_table(rows: list[Result], slice_rows: int = 512) -> pa.Table:
    """Column by column, in slices: converting Python objects holds the GIL, and the loop
    that keeps the replay's schedule must get it back within a millisecond or so."""
    batches = []
    for at in range(0, len(rows), slice_rows):
        part = rows[at : at + slice_rows]
        cols: dict[str, list[Any]] = {n: [getattr(r, n) for r in part] for n in _NAMES}
        batches.append(pa.RecordBatch.from_pydict(cols, schema=RESULT_SCHEMA))
        time.sleep(0)  # let the loop run between slices
    return pa.Table.from_batches(batches, schema=RESULT_SCHEMA)


def target_dir(rec: Path, target: str) -> Path:
    return rec / "results" / target


def private_target_dir(rec: Path, target: str) -> Path:
    """results/ and results/<target>/, both owner-only (mkdir's mode reaches the leaf only)."""
    private_dir(rec / "results")
    return private_dir(target_dir(rec, target))


class ResultParts:
    """Numbered, atomically written parts for one target (the rename makes a part visible).
    `tag` keeps the names of concurrent writers (replay's worker processes) apart."""

    def __init__(self, directory: Path, tag: str = "") -> None:
        self.dir = private_dir(directory)
        self.tag = tag
        self.written = 0
        self._next = 0
        while (self.dir / self._name(self._next)).exists():
            self._next += 1

    def _name(self, n: int) -> str:
        return f"part-{n:05d}{self.tag}.parquet"

    def write(self, rows: list[Result], batches: list[pa.RecordBatch] | None = None) -> None:
        """One part from Result rows and/or record batches (the native loop's)."""
        if not rows and not batches:
            return
        table = results_table(rows) if rows else None
        if batches:
            extra = pa.Table.from_batches(batches, schema=RESULT_SCHEMA)
            table = extra if table is None else pa.concat_tables([table, extra])
        assert table is not None
        name = self._name(self._next)
        self._next += 1
        tmp = self.dir / f".{name}.tmp"
        with os.fdopen(open_private_tmp(tmp), "wb") as f:
            pq.write_table(table, f, compression="zstd")
        os.replace(tmp, self.dir / name)
        self.written += table.num_rows


class Journal:
    """Append-only list of ids handed to the sender (one per line, mode 0600); one file per
    writer process (`_sent.log`, `_sent-w1.log`, …)."""

    def __init__(self, directory: Path, tag: str = "") -> None:
        private_dir(directory)
        self.path = directory / f"_sent{tag}.log"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            # A line a killed run left cut: its request was never sent (the write comes first).
            tail = os.pread(self.fd, min(size, 4096), max(0, size - 4096))
            os.ftruncate(self.fd, size - (len(tail) - tail.rfind(b"\n") - 1))

    def add(self, ids: Iterable[str]) -> None:
        data = "".join(i + "\n" for i in ids).encode()
        while data:  # write(2) to a regular file is whole unless the disk is full
            n = os.write(self.fd, data)
            data = data[n:]

    def close(self) -> None:
        os.close(self.fd)


def read_journal(directory: Path) -> set[str]:
    ids: set[str] = set()
    for path in directory.glob("_sent*.log"):
        # A line cut by a kill mid-write is ignored: its id was not fully written, so not sent.
        lines = path.read_text().split("\n")
        ids.update(lines[:-1])
    ids.discard("")
    return ids


def recorded_ids(directory: Path) -> set[str]:
    ids: set[str] = set()
    for part in sorted(directory.glob("part-*.parquet")):
        ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
    return ids


def read_results(rec: Path, target: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in sorted(target_dir(rec, target).glob("part-*.parquet")):
        out.extend(pq.read_table(part, columns=columns).to_pylist())
    return out


def targets(rec: Path) -> list[str]:
    d = rec / "results"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


class Busy(Exception):
    """Another process is writing the same results."""


def lock_results(rec: Path, names: Iterable[str]) -> list[int]:
    """Hold `results/<name>/_lock` for each target while a run writes there: two runs into the
    same results would send the same requests and overwrite each other's parts."""
    import fcntl

    fds: list[int] = []
    for name in names:
        d = private_target_dir(rec, name)
        fd = os.open(d / "_lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for f in fds:
                os.close(f)
            raise Busy(f"{d} is being written by another replay or mirror; wait for it, or use another --name") from None
        fds.append(fd)
    return fds
