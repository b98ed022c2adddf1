"""Timing one child process for the ``bench/`` scripts (extract, replay, analyze).

The child runs in its own session (so it leads its own process group) and is reaped with
``os.wait4``, which gives exact per-process wall time, CPU seconds and peak RSS with no
dependency on GNU time. A watchdog kills the child's group after ``timeout`` seconds, so no
run can hang a benchmark, and Ctrl-C (or any other exception while waiting) kills it too:
having its own session, the child would not get the terminal's SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Run:
    """One timed child: wall seconds, CPU seconds and peak RSS (its rusage), and what it said."""

    argv: list[str]
    seconds: float
    cpu_s: float
    max_rss_mib: float
    returncode: int
    parent_rss_mib: float  # this script's RSS when it started the child: the floor of max_rss_mib
    stdout: str = field(repr=False, default="")  # "" when the caller did not keep it
    stderr: str = field(repr=False, default="")


def run_timed(argv: Sequence[str], timeout: float, *, ok: Sequence[int] | None = (0,),
              cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
              keep_stdout: bool = True) -> Run:
    """Run ``argv`` in its own session; wall time and rusage via ``os.wait4``.

    An exit code not in ``ok`` raises with the tail of its stderr; with ``ok=None`` the caller
    judges the exit code itself. Without ``keep_stdout`` the child's stdout goes to /dev/null
    (nothing is buffered or written for it).
    """
    parent_rss = own_rss_mib()
    with contextlib.ExitStack() as stack:
        out: IO[bytes] = (stack.enter_context(tempfile.TemporaryFile()) if keep_stdout
                          else stack.enter_context(open(os.devnull, "wb")))
        err = stack.enter_context(tempfile.TemporaryFile())
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, cwd=cwd, env=env)
        timer = threading.Timer(timeout, lambda: kill_group(proc.pid))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: the child has its own session, so it must be told
            kill_group(proc.pid)
            os.waitpid(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        stdout = ""
        if keep_stdout:
            out.seek(0)
            stdout = out.read().decode(errors="replace")
        err.seek(0)
        run = Run(list(argv), seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0,
                  proc.returncode, parent_rss, stdout, err.read().decode(errors="replace"))
    if ok is not None and run.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv)} exited {run.returncode} after {seconds:.1f}s: {run.stderr[-2000:]}")
    return run


def own_rss_mib() -> float:
    """This process's resident set now (Linux): a child's ru_maxrss is at least this much,
    because exec records the hiwater mark of the memory it replaces, which a fork copied."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a child started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
