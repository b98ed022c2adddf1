"""Stops the capture engine if the agent dies without stopping it (SIGKILL, the OOM killer).

Run as a script (standard library only) with an inherited pidfd of the engine:
`python -I guard.py AGENT_PID ENGINE_PIDFD`. A long-running agent must never leave an orphan
tcpdump filling a disk. The engine cannot watch its parent itself: the kernel clears
PR_SET_PDEATHSIG when a process changes its uid, which is exactly what `-Z USER` does. So this
small sibling holds the parent-death signal instead, and on the agent's death interrupts the
engine the clean way (SIGINT: the engine closes its current file), then kills it if it hangs.
The pidfd makes the signal reach that engine process and nothing else, even if PIDs are
reused. It exits as soon as the engine does.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    agent, pidfd = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C is the agent's to handle
    rd, wr = os.pipe()
    os.set_blocking(wr, False)
    signal.set_wakeup_fd(wr)
    signal.signal(signal.SIGTERM, lambda *_: None)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == agent:
        # Readable pidfd: the engine exited. Readable pipe: the agent died (or we were told to).
        ready, _, _ = select.select([pidfd, rd], [], [])
        if pidfd in ready:
            return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGINT)
        if not select.select([pidfd], [], [], 10.0)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
