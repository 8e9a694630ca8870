"""Ports for the devstack's servers: distinct, free, and never from the ephemeral range.

A CI run failed when two servers of one stack drew the same port from bind(0): one could
not bind, and the other answered at its address (404 for the simulator's routes)."""

from __future__ import annotations

import random
import socket

import pytest

from devstack.broker import embedded
from devstack.broker.embedded import free_port, free_ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_ports(40) + [free_port() for _ in range(10)]
    assert len(set(ports)) == len(ports)  # not even across calls of one process
    low, high = embedded._PORT_RANGE
    assert all(low <= port <= high < 32768 for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        first = random.sample  # the busy port is the first candidate drawn
        monkeypatch.setattr(random, "sample", lambda pool, k: [taken, *first(pool, k)])
        monkeypatch.setattr(embedded, "_PORT_RANGE", (taken + 1, taken + 2000))
        ports = free_ports(3)
    assert taken not in ports
    assert len(set(ports)) == 3
