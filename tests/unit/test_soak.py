"""The soak run's report: percentiles, windows, the last line."""

from __future__ import annotations

import os
import time

from devstack.soak import BrokerGauge, SoakResult, Window, percentile
from devstack.verify import Verdict


def test_percentiles_of_latencies() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 51
    assert percentile(values, 0.99) == 100
    assert percentile([], 0.99) == 0.0


def test_the_last_line_compares_the_first_window_with_the_last() -> None:
    windows = [Window(300, 6000, 410, 900, 0.31, 180), Window(1800, 6000, 430, 1210, 0.42, 950)]
    verdict = Verdict(orders=36000, labeled=36000, label_calls=36000, duplicate_calls=0, lost=0)
    result = SoakResult(30, verdict, windows)
    assert result.ok
    assert result.last_line() == (
        "soak: minutes=30 orders=36000 labels=36000 lost=0 p99_first_ms=900 "
        "p99_last_ms=1210 broker_cpu_first=0.31 broker_cpu_last=0.42"
    )
    assert str(windows[0]) == (
        "  5.0 min: 6000 labels, box -> label p50 410 ms p99 900 ms; broker CPU 31% RSS 180 MB"
    )


def test_the_gauge_reads_a_process_cpu_and_memory() -> None:
    gauge = BrokerGauge(os.getpid())
    started = time.process_time()
    while time.process_time() - started < 0.1:  # CPU of this process: /proc counts 10 ms ticks
        sum(n * n for n in range(10_000))
    assert gauge.share() > 0
    assert gauge.rss_mb() > 10
