"""The native send loop (replay/native/sender.c) and planner (planner.c) seen from Python:
when they can be used, and the loop's results turned into Arrow record batches without a
Python object per row.

The C loop answers the same questions as replay.client (which stays the reference and serves
what the loop does not: https targets and mirror's live stream); results are the same records
either way (results.RESULT_SCHEMA).
"""
from __future__ import annotations

import select
from array import array
import socket
from typing import Any, Sequence

import pyarrow as pa

from capture.recording import HEADERS as RECORDING_HEADERS

from .results import RESULT_SCHEMA

try:
    from . import _sender  # type: ignore[attr-defined]
except ImportError:  # SHADOWTAP_PURE=1 builds, or a platform without epoll
    _sender = None

# The columns the loop fills, in its order (sender.c's C_* enum); `target` is added here.
_FIELDS = ("id", "host", "t_due", "t_send", "t_first_byte", "t_end", "status", "reason", "version",
           "headers", "header_names", "header_values", "body", "body_len", "interim", "interim_values",
           "error", "error_detail")
_HEADER_STRUCT = RESULT_SCHEMA.field("headers").type.value_type


def _spec(a: pa.Array) -> tuple[Any, Any, Any, int, int]:
    """A string or binary array as planner.c's column spec."""
    bufs = a.buffers()
    return bufs[0], bufs[1], bufs[2], a.offset, len(a)


def _list_spec(a: pa.Array) -> tuple[Any, Any, Any, int, int]:
    """A list array's validity and offsets (they index its unsliced `values`)."""
    bufs = a.buffers()
    return bufs[0], bufs[1], None, a.offset, len(a)




def plan_columns(batch: pa.RecordBatch) -> tuple[Any, ...] | None:
    """A batch of plan.COLUMNS as Planner.plan takes it (planner.c's K_* order), or None when
    its types are not the recording's (then Python plans it)."""
    col = batch.column
    hdr, flags = col("req_headers"), col("flags")
    if (any(col(k).type != pa.string() for k in ("id", "server", "method", "target", "version"))
            or col("req_body").type != pa.binary() or hdr.type != RECORDING_HEADERS
            or flags.type != pa.list_(pa.string())):
        return None
    names, values = hdr.values.flatten()  # (flatten applies the struct's own offset)
    return (_spec(col("id")), _spec(col("server")), _spec(col("method")), _spec(col("target")),
            _spec(col("version")), _list_spec(hdr), _spec(names), _spec(values), _spec(col("req_body")),
            _list_spec(flags), _spec(flags.values))


def fast_planner(planner: Any, primary: Sequence[tuple[str, int]] | None) -> Any:
    """planner.c's Planner for a plan.Planner, or None where Python must plan every request:
    no native build, a resumed run (ids already sent), or edits that are not Latin-1 text.
    `primary`: the addresses a job's server must not be (None: --allow-primary)."""
    if _sender is None or planner.done:
        return None
    e = planner.edits
    sets = {k.lower(): (k, v) for k, v in e.set_headers}  # as request.build orders them
    try:
        return _sender.Planner(
            e.host.mode, e.host.literal, e.host.suffix, [(lk, k, v) for lk, (k, v) in sets.items()],
            sorted(e.drop_headers), sorted(planner.methods), planner.sampler.limit, planner.sampler.key,
            planner.sampler.header, planner.allow_writes, None if primary is None else sorted(primary))
    except (UnicodeEncodeError, ValueError, TypeError):
        return None


def plan_batch(fast: Any, planner: Any, batch: pa.RecordBatch) -> Any:
    """The batch's Planned (jobs ready for the loop, skips counted), or None: plan it in Python."""
    cols = plan_columns(batch)
    if cols is None:
        return None
    mask = None
    if planner.include or planner.exclude:  # Python's regular expressions decide, as in admit()
        inc, exc = planner.include, planner.exclude
        mask = bytes(t is None or ((not inc or any(p.search(t) for p in inc)) and not any(p.search(t) for p in exc))
                     for t in batch.column("target").to_pylist())
    return fast.plan(cols, mask)


def available() -> bool:
    return _sender is not None


def usable(targets: Sequence[Any], mode: str, live: bool) -> bool:
    """The loop serves replays to plain-http targets, paced or fast (mirror's live stream and
    https go through replay.client)."""
    return _sender is not None and mode != "live" and not live and all(t.scheme == "http" for t in targets)


def chosen(sender: str, targets: Sequence[Any], mode: str, live: bool) -> bool:
    """Does a run with `--sender` (auto, native or asyncio) send through the native loop?"""
    return sender != "asyncio" and usable(targets, mode, live)


def resolve(host: str, port: int) -> str:
    """The address to connect to (asyncio's create_connection takes the first one too)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def new_sender(targets: list[tuple[str, int, int]], concurrency: int, timeout: float, max_body: int,
               discard: bool) -> Any:
    assert _sender is not None
    return _sender.Sender(targets, concurrency, timeout, max_body, discard)


def _buffers(col: tuple[bytes | None, bytes | None, bytes, int]) -> tuple[list[Any], int]:
    valid, offsets, data, rows = col
    bufs = [pa.py_buffer(valid) if valid is not None else None]
    if offsets is not None:
        bufs.append(pa.py_buffer(offsets))
    bufs.append(pa.py_buffer(data))
    return bufs, rows


def _array(typ: pa.DataType, col: Any, children: list[pa.Array] | None = None) -> pa.Array:
    bufs, rows = _buffers(col)
    if children is not None:  # a list: validity and offsets here, the values are the child
        return pa.Array.from_buffers(typ, rows, bufs[:2], children=children)
    return pa.Array.from_buffers(typ, rows, bufs)


def _repeated(text: str, n: int) -> pa.Array:
    """`text` n times, from buffers: pa.array on Python objects imports pandas (0.25 s)."""
    b = text.encode()
    offsets = array("i", range(0, (n + 1) * len(b), len(b))) if b else array("i", [0] * (n + 1))
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b * n)])


def record_batch(cols: tuple[Any, ...], target: str) -> pa.RecordBatch:
    """One collected batch of the loop's results as RESULT_SCHEMA rows."""
    c = dict(zip(_FIELDS, cols))
    n = c["id"][3]
    names = _array(pa.string(), c["header_names"])
    values = _array(pa.string(), c["header_values"])
    pairs = pa.StructArray.from_arrays([names, values], fields=list(_HEADER_STRUCT))
    interim_values = _array(pa.int32(), c["interim_values"])
    arrays = {
        "id": _array(pa.string(), c["id"]),
        "target": _repeated(target, n),
        "host": _array(pa.string(), c["host"]),
        "t_due": _array(pa.float64(), c["t_due"]),
        "t_send": _array(pa.float64(), c["t_send"]),
        "t_first_byte": _array(pa.float64(), c["t_first_byte"]),
        "t_end": _array(pa.float64(), c["t_end"]),
        "status": _array(pa.int32(), c["status"]),
        "reason": _array(pa.string(), c["reason"]),
        "version": _array(pa.string(), c["version"]),
        "headers": _array(RESULT_SCHEMA.field("headers").type, c["headers"], [pairs]),
        "body": _array(pa.binary(), c["body"]),
        "body_len": _array(pa.int64(), c["body_len"]),
        "interim": _array(RESULT_SCHEMA.field("interim").type, c["interim"], [interim_values]),
        "error": _array(pa.string(), c["error"]),
        "error_detail": _array(pa.string(), c["error_detail"]),
    }
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in RESULT_SCHEMA], schema=RESULT_SCHEMA)


class NativePool:
    """One target's share of the C loop, with the surface runner.Run uses of a client.Pool."""

    def __init__(self, owner: "NativeLoop", index: int, target: Any) -> None:
        self.owner = owner
        self.index = index
        self.target = target
        self.in_flight = 0  # an upper bound between collections: the loop only lowers it
        self.sent = 0

    def submit_batch(self, jobs: Sequence[Any], dues: Sequence[float | None],
                     ats: Sequence[float] | None = None) -> None:
        """`ats`: each job's time.monotonic() instant, for the loop to send it then, not before."""
        self.in_flight += len(jobs)
        self.owner.sender.submit(
            self.index, [j.id for j in jobs], [j.data for j in jobs], [j.host for j in jobs],
            bytes(j.close for j in jobs), bytes(j.method == "HEAD" for j in jobs),
            None if all(d is None for d in dues) else list(dues), None if ats is None else list(ats))

    def submit_planned(self, planned: Any) -> None:
        """A Planned's jobs (planner.c), shared with the other targets' queues."""
        self.in_flight += len(planned)
        self.owner.sender.submit_planned(self.index, planned)

    def abandon(self, kind: str, detail: str) -> None:
        self.owner.abandon(kind, detail)

    def close(self) -> None:
        self.owner.close()


class NativeLoop:
    """Every target's connections in one C thread; results reach the asyncio loop through an
    eventfd, a batch at a time, as Arrow record batches."""

    def __init__(self, loop: Any, targets: Sequence[Any], journal_fds: Sequence[int], concurrency: int,
                 timeout: float, max_body: int, discard: bool, on_batch: Any, on_room: Any,
                 on_failure: Any) -> None:
        self.loop = loop
        self.on_batch = on_batch
        self.on_room = on_room
        self.on_failure = on_failure
        spec = [(resolve(t.host, t.port), t.port, fd) for t, fd in zip(targets, journal_fds)]
        self.sender = new_sender(spec, concurrency, timeout, max_body, discard)
        self.pools = [NativePool(self, i, t) for i, t in enumerate(targets)]
        self.closed = False
        self.sender.start()
        loop.add_reader(self.sender.ready_fd, self.collect)

    def collect(self) -> bool:
        """Hand on what the loop finished; True once the loop has ended."""
        batches = self.sender.collect()
        finished, failure, per = self.sender.counts()
        for pool, (in_flight, sent) in zip(self.pools, per):
            pool.in_flight = in_flight
            pool.sent = sent
        for pool, cols in zip(self.pools, batches):
            if cols is not None:
                self.on_batch(pool.target.name, record_batch(cols, pool.target.name))
        if failure:
            self.on_failure(failure)
        self.on_room()
        return bool(finished)

    def abandon(self, kind: str, detail: str) -> None:
        if not self.closed:
            self.sender.abandon(kind, detail)
            self.close()

    def close(self) -> None:
        """No more jobs: wait for the loop to finish what it holds (the runner drained it, or
        abandoned it), then collect the last results."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sender.ready_fd)
        self.sender.close_input()
        while not self.collect():  # (the loop may be waiting for a batch to be taken)
            select.select([self.sender.ready_fd], [], [], 0.05)
        self.sender.join()
        self.collect()
