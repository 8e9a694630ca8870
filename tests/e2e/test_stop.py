"""Stopping the devstack: Ctrl-C stops everything quickly and cleanly, a killed
``parcelflow up`` leaves nothing behind, and every worker exits on SIGTERM even when the
broker is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from devstack.stack import Stack

pytestmark = pytest.mark.slow


def start_up(run_dir: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """``parcelflow up`` in a process group of its own, as a terminal starts it; returns
    once it printed its summary (everything started and the demo orders labeled)."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "workers.cli", "up", "--orders", "5"),
            *("--label-latency", "0.1", "--run-dir", str(run_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")},
    )
    lines: list[str] = []
    summary = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("summary:"):
                summary.set()

    threading.Thread(target=read, daemon=True).start()
    if not summary.wait(120):
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("parcelflow up printed no summary:\n" + "".join(lines[-30:]))
    return proc, lines


def family(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def gone_within(processes: list[psutil.Process], timeout_s: float) -> float:
    """Seconds until every process has exited (zombies reaped by their parent count)."""
    started = time.monotonic()
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    assert alive == [], f"still running after {timeout_s} s: {[p.cmdline()[:4] for p in alive]}"
    return time.monotonic() - started


def logs_of(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in run_dir.rglob("*.log")}


def test_ctrl_c_on_parcelflow_up_stops_everything_in_5_s_without_a_traceback(
    tmp_path: Path,
) -> None:
    proc, lines = start_up(tmp_path)
    children = family(proc.pid)[1:]
    assert proc.stdout is not None
    assert len(children) >= 8  # broker, simulator and the seven workers (the TLS-less stack)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the terminal's process group
    code = proc.wait(15)
    gone_within(children, 15)
    took = time.monotonic() - started
    proc.stdout.close()
    print(f"\nCtrl-C: {len(children) + 1} processes stopped in {took:.1f} s")
    assert code in (0, 130)  # stopped as asked (130: by SIGINT)
    assert took <= 5.0
    assert not any("Traceback" in line for line in lines)
    traced = {name: text for name, text in logs_of(tmp_path).items() if "Traceback" in text}
    assert traced == {}, next(iter(traced.values()))[-2000:]


def test_a_killed_parcelflow_up_leaves_no_process_behind(tmp_path: Path) -> None:
    proc, _ = start_up(tmp_path)
    processes = family(proc.pid)[1:]
    proc.kill()  # no chance to stop anything: its children must notice by themselves
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    took = gone_within(processes, 15)
    print(f"\nSIGKILL of up: its {len(processes)} processes gone in {took:.1f} s")


def test_every_worker_exits_within_10_s_of_sigterm_with_the_broker_gone(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    with stack.running(say=False):
        assert stack.broker is not None
        stack.hold()  # no restarts: each worker is measured as it is
        stack.broker.stop()  # the broker is gone, as a crashed cluster or a lost network
        time.sleep(2.0)  # the workers notice
        took, exited = {}, {}
        for process in stack.processes:
            if process.proc.poll() is not None:  # it could not go on, and said so by exiting
                exited[process.name] = process.proc.returncode
                continue
            started = time.monotonic()
            process.proc.terminate()
            try:
                process.proc.wait(12)
            except subprocess.TimeoutExpired:
                pass
            took[process.name] = time.monotonic() - started
    print(
        "\nSIGTERM without a broker: "
        + ", ".join(f"{n} {s:.1f}s" for n, s in took.items())
        + f"; exited by themselves: {exited}"
    )
    assert all(seconds <= 10.0 for seconds in took.values()), took
    assert len(took) + len(exited) == 7 and "planner" in took
