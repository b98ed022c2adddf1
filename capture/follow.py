"""Following the capture files an engine is writing, in order, as they grow.

The agent never sits in the engine's data path: the engine (tcpdump, or shadowtap's own
engine process) writes its files and the agent reads them behind it, like `tail -F` across
rotations. That keeps the files exactly the engine's, lets one code path count packets and
stream exchanges for both engines, and means a slow extraction can never make the capture
drop packets: it only makes the reader lag.

A file is known to be complete once a newer one exists: both engines close a file before they
create the next. So the directory is listed *before* the current file is read to its end; if a
newer file was already listed, nothing more can be appended to the current one.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Collection

from .pcapfile import CaptureDecoder, CaptureError, Record
from .rotation import sort_key

CHUNK = 1 << 20


@dataclass
class FollowedFile:
    name: str
    read: int = 0  # bytes consumed so far
    packets: int = 0
    done: bool = False  # read to its end after it was closed
    deleted: bool = False  # removed by the ring
    skipped: bool = False  # removed before it could be read
    truncated: int = 0  # bytes of an incomplete last record
    error: str | None = None

    def size(self, directory: str) -> int:
        if self.deleted:
            return self.read
        try:
            return os.stat(os.path.join(directory, self.name)).st_size
        except OSError:
            return self.read


class Follower:
    """Reads every new capture file in `directory` (except `ignore`d names) in capture order."""

    def __init__(self, directory: str, ignore: Collection[str] = (),
                 sink: Callable[[list[Record]], None] | None = None) -> None:
        self.directory = directory
        self.ignore = set(ignore)
        self.sink = sink
        self.files: list[FollowedFile] = []
        self.packets = 0
        self.warnings: list[str] = []
        self._cur = 0  # index of the first file not yet done
        self._fd = -1
        self._dec: CaptureDecoder | None = None

    def scan(self) -> None:
        """Add files the engine created since the last scan, in capture order."""
        known = {f.name for f in self.files}
        last = sort_key(self.files[-1].name) if self.files else None
        new = []
        for name in os.listdir(self.directory):
            key = sort_key(name)
            if key is None or name in known or name in self.ignore:
                continue
            if last is not None and key <= last:
                continue  # not one of ours: ours only ever come later
            new.append((key, name))
        self.files.extend(FollowedFile(name) for _, name in sorted(new))

    def poll(self, final: bool = False, budget: int = 16 << 20) -> int:
        """Read what was appended; move past files once complete. `final`: the engine has
        exited, so every file is complete and everything is read. Returns records read."""
        self.scan()
        got = 0
        while self._cur < len(self.files):
            f = self.files[self._cur]
            if self._fd < 0 and not self._open(f):
                self._cur += 1
                continue
            closed = final or self._cur < len(self.files) - 1
            while final or budget > 0:
                data = os.read(self._fd, CHUNK)
                if not data:
                    break
                budget -= len(data)
                got += self._feed(f, data)
            else:
                return got  # budget spent: come back on the next poll
            if not closed:
                return got
            self._finish(f)
            self._cur += 1
        return got

    def _open(self, f: FollowedFile) -> bool:
        try:
            # Never block on a FIFO or follow a link someone put in the directory.
            fd = os.open(os.path.join(self.directory, f.name), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            f.skipped = f.deleted = f.done = True
            self.warnings.append(f"{f.name} was removed before it could be read")
            return False
        except OSError as e:
            f.skipped = f.done = True
            self.warnings.append(f"{f.name} cannot be read ({os.strerror(e.errno or 0)}); skipped")
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            f.skipped = f.done = True
            self.warnings.append(f"{f.name} is not a regular file; skipped")
            return False
        self._fd = fd
        self._dec = CaptureDecoder()
        return True

    def _feed(self, f: FollowedFile, data: bytes) -> int:
        f.read += len(data)
        if f.error is not None or self._dec is None:
            return 0
        try:
            recs = self._dec.feed(data)
        except CaptureError as e:
            f.error = str(e)
            self.warnings.append(f"{f.name}: {e}")
            return 0
        if self._dec.error is not None:
            f.error = self._dec.error
            self.warnings.append(f"{f.name}: {f.error}")
        if recs:
            f.packets += len(recs)
            self.packets += len(recs)
            if self.sink is not None:
                self.sink(recs)
        return len(recs)

    def _finish(self, f: FollowedFile) -> None:
        if self._dec is not None and f.error is None:
            f.truncated = self._dec.leftover()
            if f.truncated:
                self.warnings.append(f"{f.name}: last record truncated ({f.truncated} bytes)")
        os.close(self._fd)
        self._fd = -1
        self._dec = None
        f.done = True

    def prune(self, keep: int) -> list[str]:
        """The ring (-W): delete the oldest files so at most `keep` remain; never the newest,
        which the engine may still be writing. A file being read stays readable (its
        descriptor is open); one not yet opened is counted as skipped when reached."""
        alive = [f for f in self.files if not f.deleted]
        removed = []
        for f in alive[: max(0, len(alive) - max(keep, 1))]:
            try:
                os.unlink(os.path.join(self.directory, f.name))
            except FileNotFoundError:
                pass
            f.deleted = True
            removed.append(f.name)
        return removed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
