"""Run a command that dies with the process that started it.

``python -m workers.lifeline PARENT_PID -- COMMAND...`` asks Linux to send
SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``), checks
the parent is still the one named (it may have died already), then becomes COMMAND. The
devstack starts the broker, the simulator and every worker this way: a ``parcelflow up``
that is killed leaves no orphan holding its ports. Elsewhere than Linux it only execs.
Linux sends the signal when the *thread* that started the child ends, not only the
process: start children from a thread that lives as long as they should.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        sys.exit("usage: python -m workers.lifeline PARENT_PID -- COMMAND...")
    parent, command = int(argv[0]), argv[2:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took hold
            sys.exit(1)
    os.execvp(command[0], command)  # noqa: S606 (our own processes, by their path)


def wrap(command: list[str]) -> list[str]:
    """``command`` as a child of this process that dies with it."""
    return [sys.executable, "-m", "workers.lifeline", str(os.getpid()), "--", *command]


if __name__ == "__main__":
    main(sys.argv[1:])
