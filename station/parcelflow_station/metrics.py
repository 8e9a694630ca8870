"""The agent's metrics, for Prometheus (``--metrics-port``; off by default on a station)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PRINTED = Counter("parcelflow_station_printed", "Labels the printer took.")
PRINTER_AWAY = Counter(
    "parcelflow_station_printer_away", "Prints the printer did not take (tried again)."
)
QUEUED = Gauge("parcelflow_station_queue", "Labels waiting to be printed.")
FOLLOWING = Gauge("parcelflow_station_following", "1 while the label stream is connected.")
AGENT_SECONDS = Histogram(
    "parcelflow_station_agent_seconds",
    "From a label's event to the printer's acknowledgement.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
