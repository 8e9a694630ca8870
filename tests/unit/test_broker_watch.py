"""The devstack's broker watch: when it alerts, and what its metrics say."""

from __future__ import annotations

import os

from prometheus_client import generate_latest

from devstack.broker.watch import BrokerGauge, BrokerWatch, Reading
from workers.settings import Settings


def reading(age_s: float = 0.05, cpu: float = 0.2) -> Reading:
    return Reading(cpu=cpu, rss_mb=80, records=100, age_p50_s=age_s / 2, age_max_s=age_s)


def watch() -> BrokerWatch:
    settings = Settings(devstack_broker_alert_age_s=2.0, devstack_broker_alert_cpu=0.7)
    return BrokerWatch(settings, os.getpid(), port=0, say=False)


def test_three_slow_readings_in_a_row_alert_once_then_not_for_five_minutes() -> None:
    w = watch()
    assert not w.alert_due(reading(age_s=3.0), now=0)
    assert not w.alert_due(reading(age_s=0.1), now=10)  # the streak is broken
    assert not w.alert_due(reading(age_s=3.0), now=20)
    assert not w.alert_due(reading(cpu=0.9), now=30)  # CPU counts as slow too
    assert w.alert_due(reading(age_s=2.5), now=40)
    assert not w.alert_due(reading(age_s=9.0), now=50)  # alerted already
    assert w.alert_due(reading(age_s=9.0), now=40 + 301)


def test_metrics_show_the_last_reading_and_whether_it_is_slow() -> None:
    w = watch()
    for at in (0, 10, 20):
        w.alert_due(reading(age_s=4.0, cpu=0.5), now=at)
    text = generate_latest(w.metrics.registry).decode()
    assert "parcelflow_devstack_broker_slow 1.0" in text
    assert 'parcelflow_devstack_broker_record_age_seconds{quantile="1"} 4.0' in text
    assert "parcelflow_devstack_broker_cpu_share 0.5" in text


def test_the_gauge_reads_this_process() -> None:
    gauge = BrokerGauge(os.getpid())
    sum(i * i for i in range(300_000))  # some CPU
    assert gauge.rss_mb() > 10
    assert gauge.share() > 0
