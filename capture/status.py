"""The agent's outputs besides the pcap files: DIR/capture.json, the live exchange stream, and
the directory itself.

capture.json is rewritten whole, through a temporary file and a rename, so whoever reads it
(a person, the bench, a sidecar shipping files) never sees half of one, even if the agent is
killed mid-write. It says what runs (engine, interface, filter, namespace, argv), what exists
(this run's files, open and closed, with sizes and packet counts), what was counted (packets
written, the kernel's received/dropped counters) and how it ended (state, error).
"""
from __future__ import annotations

import json
import os
import pwd
import queue
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from .cli import version
from .engines import CaptureOptions, EngineProcess
from .errors import UserError
from .exchange import Exchange, json_line
from .extract import Extractor
from .follow import Follower
from .pcapfile import Record

RESERVE = 512 << 10  # room kept for the last capture.json (1,000 files listed fit)
MAX_LISTED = 1000  # capture.json lists the newest files; a week of -G 60 is 10,000 of them


def _writable_by(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return st.st_mode & 0o300 == 0o300
    if st.st_gid in gids:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003


def prepare_directory(path: str, user: str | None) -> None:
    """Create DIR (0700) or check it, before any engine starts: a directory problem must be one
    line and exit 2, not an engine's error halfway through. With -Z USER the engine creates
    files as USER, so a directory we create is given to USER; an existing one must already
    be writable by USER (we never chown a directory we did not make)."""
    created = False
    if not os.path.exists(path):
        try:
            os.makedirs(path, mode=0o700)
        except OSError as e:
            raise UserError(f"cannot create {path}: {e.strerror}") from None
        created = True
    elif not os.path.isdir(path):
        raise UserError(f"{path}: not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".shadowtap-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{path}: not writable ({e.strerror})") from None
    if user:
        pw = pwd.getpwnam(user)
        if created and os.geteuid() == 0:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        gids = set(os.getgrouplist(user, pw.pw_gid))
        if not _writable_by(os.stat(path), pw.pw_uid, gids):
            raise UserError(f"{path}: not writable by {user} (chown it to {user}, or name a new directory)")


class ExchangeStream:
    """`--exchanges`: records in, JSON lines out, through the same Extractor as `extract`.

    Lines are written by a thread of their own through a bounded queue: a reader that stops
    reading (a stalled pipe) must not stall the agent, whose loop also answers SIGTERM and
    keeps capture.json current. When the queue is full, lines are dropped and counted."""

    MAX_QUEUED = 256  # batches waiting for the reader

    def __init__(self, ports: list[int], on_broken: Callable[[], None], out: Any = None) -> None:
        self.extractor = Extractor(ports)
        self.out = out if out is not None else sys.stdout
        self.on_broken = on_broken
        self.count = 0
        self.dropped = 0
        self.broken = False
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=self.MAX_QUEUED)
        self._writer = threading.Thread(target=self._write_loop, name="exchanges-out", daemon=True)
        self._writer.start()

    def feed(self, records: list[Record]) -> None:
        if not self.broken:
            self._emit(self.extractor.feed(records))

    def finish(self, timeout: float = 5.0) -> None:
        """Emit what the end of the capture completes, then give the reader `timeout` seconds."""
        if not self.broken:
            self._emit(self.extractor.finish())
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._writer.join(timeout)

    def _emit(self, exchanges: list[Exchange]) -> None:
        if not exchanges:
            return
        try:
            self._queue.put_nowait("".join(json_line(ex) + "\n" for ex in exchanges))
            self.count += len(exchanges)
        except queue.Full:
            self.dropped += len(exchanges)

    def flush(self) -> None:
        """Kept for the agent's loop; the writer thread flushes after every batch."""

    def drop_warning(self) -> str:
        return f"stdout did not keep up: {self.dropped} exchanges were not printed (they are in the files)"

    def _write_loop(self) -> None:
        while True:
            text = self._queue.get()
            if text is None:
                return
            if self.broken:
                continue
            try:
                self.out.write(text)
                self.out.flush()
            except BrokenPipeError:
                self._broken()

    def _broken(self) -> None:
        """The reader left (`… | head`): stop capturing, quietly, like a pipeline does."""
        self.broken = True
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        self.on_broken()


class StatusFile:
    """DIR/capture.json."""

    def __init__(self, opts: CaptureOptions, command: list[str], engine: EngineProcess,
                 follower: Follower, stream: ExchangeStream | None) -> None:
        self.opts = opts
        self.command = command
        self.engine = engine
        self.follower = follower
        self.stream = stream
        self.path = os.path.join(opts.directory, "capture.json")
        self.reserve_path = os.path.join(opts.directory, ".capture.json.reserve")
        self.started = time.time()
        self.stopped: float | None = None
        self.deleted = 0

    def document(self, state: str, error: str | None) -> dict[str, Any]:
        o = self.opts
        s = self.engine.stats
        d = o.directory
        files = [f for f in self.follower.files if not f.deleted]
        listed = files[-MAX_LISTED:]
        last = files[-1] if files else None
        return {
            "tool": "shadowtap", "version": version(), "command": self.command,
            "state": state, "error": error,
            "engine": o.engine, "engine_argv": self.engine.argv, "engine_pid": self.engine.pid,
            "agent_pid": os.getpid(),
            "interface": o.interface, "filter": o.filter, "netns": o.netns, "pid": o.pid, "user": o.user,
            "directory": d, "format": o.fmt, "snaplen": o.snaplen,
            "rotate": {"size_bytes": o.size_limit, "seconds": o.seconds, "ring_files": o.ring},
            "limits": {"duration": o.duration, "count": o.count},
            "started": self.started, "stopped": self.stopped, "updated": time.time(),
            "files": [{"name": f.name, "bytes": f.size(d), "packets": f.packets,
                       "state": "open" if f is last and state == "running" else "closed",
                       **({"truncated_bytes": f.truncated} if f.truncated else {}),
                       **({"error": f.error} if f.error else {})} for f in listed],
            "files_total": len(files),
            "files_deleted": self.deleted,
            "files_skipped": sum(1 for f in self.follower.files if f.skipped),
            "packets": self.follower.packets,
            "kernel": {"received": s.received, "dropped": s.dropped, "if_dropped": s.if_dropped},
            "engine_captured": s.captured,
            "exchanges": self.stream.count if self.stream is not None else None,
            "exchanges_dropped": self.stream.dropped if self.stream is not None else None,
            "warnings": self.follower.warnings[-20:],
        }

    def write(self, state: str, error: str | None = None) -> None:
        """Atomically replace capture.json; a full disk must not stop the capture itself."""
        try:
            data = memoryview(json.dumps(self.document(state, error), indent=1).encode() + b"\n")
            # A fresh, unpredictable name (mode 0600): the directory may belong to the -Z user,
            # who must not be able to point a fixed temporary name at a file root then writes.
            fd, tmp = tempfile.mkstemp(prefix=".capture.json.", dir=os.path.dirname(self.path))
            try:
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            pass

    def reserve(self) -> None:
        """Set aside room for the last capture.json. A fast capture fills a disk between two
        checks of the free space, and the final state ("failed: no space left") is exactly
        what must still be written then; this file is removed just before that write."""
        try:
            self._unreserve()  # never reuse (or follow) whatever has that name
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE)
            finally:
                os.close(fd)
        except OSError as e:
            self._unreserve()
            raise UserError(f"{self.opts.directory}: {os.strerror(e.errno or 0).lower()}") from None

    def _unreserve(self) -> None:
        try:
            os.unlink(self.reserve_path)
        except OSError:
            pass

    def finish(self, state: str, error: str | None) -> None:
        self.stopped = time.time()
        self._unreserve()
        self.write(state, error)
