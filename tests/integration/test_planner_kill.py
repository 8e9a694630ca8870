"""The planner under failure: two Faust workers, one SIGKILLed mid-run; and a restart.

Every order must get exactly one label job and every box its plan, with no item id in
two boxes, with the auditor on (it republishes boxes Faust may have skipped).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bench.planner import events, fill
from schemas.box import BoxClosed
from schemas.label import LabelJob
from schemas.order import Order
from schemas.plan import ParcelPlan
from schemas.topics import BOXES, LABEL_JOBS, ORDERS, PLANS
from tests.integration.kafka_helpers import consume, models, produce
from tests.integration.processes import worker_process
from tests.unit.factories import box, order
from workers.auditor.worker import run as run_auditor
from workers.settings import Settings
from workers.topics import ensure_topics

pytestmark = pytest.mark.slow

ORDERS_COUNT = 2000
READY = b"Worker]: Ready"
# Enough orders that a busy planner is still joining when SIGTERM comes (about 3 s of work
# here; with 3,000 it sometimes finished before the test saw its first 300 jobs).
ORDERS_IN_FLIGHT = 6000
# The planner's seek to the committed offsets, delayed by this: Faust's race then loses
# 50 to 90 orders of 6,000 in every run here (0 with a delay of 0.3 s: the agent keeps up).
SLOW_SEEK_S = 1.0


def boxes_by_order(items: list[Order | BoxClosed]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, BoxClosed):
            out.setdefault(item.order_id, []).append(item.box_id)
    return out


@asynccontextmanager
async def auditor_running(settings: Settings) -> AsyncIterator[Callable[[], float]]:
    """The auditor, on for the block; yields a function giving its repairs so far."""

    def total() -> float:
        return REGISTRY.get_sample_value("parcelflow_auditor_repairs_total") or 0.0

    before = total()
    stop = asyncio.Event()
    task = asyncio.create_task(run_auditor(settings, stop))
    try:
        yield lambda: total() - before
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def assert_one_job_per_order(jobs: list[LabelJob], orders: set[str]) -> dict[str, set[str]]:
    """Every order has a job and no order two different ones; the job ids per order."""
    by_order: dict[str, set[str]] = {}
    for job in jobs:
        by_order.setdefault(job.order_id, set()).add(job.job_id)
    assert set(by_order) == orders
    assert all(len(ids) == 1 for ids in by_order.values()), "an order got two different jobs"
    return by_order


def worker_settings(base: Settings, root: Path, name: str) -> Settings:
    return base.model_copy(update={"planner_data_dir": root / name})


@pytest.fixture
def base(make_settings: Any) -> Iterator[Settings]:
    yield make_settings(topic_partitions=4, auditor_repair_after_s=20.0, auditor_interval_s=1.0)


async def test_sigkill_of_one_of_two_planners_loses_and_duplicates_nothing(
    base: Settings, tmp_path: Path
) -> None:
    await ensure_topics(base)
    items = events(ORDERS_COUNT, "K")  # 2 A + 1 B + 1 C per order, in 1 to 3 boxes
    boxes_of = boxes_by_order(items)
    a_settings = worker_settings(base, tmp_path, "a")
    b_settings = worker_settings(base, tmp_path, "b")
    async with auditor_running(base) as repairs:
        with worker_process("planner", b_settings, tmp_path / "b.log", READY):
            with worker_process("planner", a_settings, tmp_path / "a.log", READY) as a:
                await asyncio.sleep(3)  # let the group settle on two members
                third = len(items) // 3
                await fill(base, items[:third])
                await fill(base, items[third : 2 * third])
                # kill A mid-run: once the join is well under way, with work still arriving
                await consume(base, LABEL_JOBS, distinct(LabelJob, "order_id", 400), timeout_s=60)
                a.send_signal(signal.SIGKILL)
                a.wait()
                await fill(base, items[2 * third :])
            with worker_process("planner", a_settings, tmp_path / "a.log", READY, timeout_s=90):
                jobs = models(
                    LabelJob,
                    await consume(
                        base,
                        LABEL_JOBS,
                        distinct(LabelJob, "order_id", ORDERS_COUNT),
                        timeout_s=150,
                    ),
                )
                all_boxes = sum(len(b) for b in boxes_of.values())
                plans = models(
                    ParcelPlan,
                    await consume(base, PLANS, distinct(ParcelPlan, "box_id", all_boxes), 60),
                )
    by_order = assert_one_job_per_order(jobs, set(boxes_of))
    latest = {(p.order_id, p.box_id): p for p in plans}
    assert set(latest) == {(o, b) for o, bs in boxes_of.items() for b in bs}
    assert all(p.status == "planned" for p in latest.values())
    for order_id in boxes_of:
        items_of = [i.item_id for (o, _), p in latest.items() if o == order_id for i in p.items]
        assert len(items_of) == len(set(items_of)) == 4, order_id
    print(
        f"\nplanner kill test: {len(jobs)} job events for {len(by_order)} orders, "
        f"{repairs():.0f} orders republished by the auditor"
    )


def distinct(model: type[LabelJob] | type[ParcelPlan], field: str, want: int) -> Any:
    """A ``consume`` predicate: ``want`` distinct values of ``field`` (reads each value once)."""
    seen: set[str] = set()
    read = 0

    def enough(values: list[bytes]) -> bool:
        nonlocal read
        for value in values[read:]:
            seen.add(getattr(model.model_validate_json(value), field))
        read = len(values)
        return len(seen) >= want

    return enough


async def test_sigterm_mid_batch_loses_nothing(base: Settings, tmp_path: Path) -> None:
    """A graceful stop while batches are in flight, then a restart: every order still
    gets exactly one job. The auditor is on, as in production: without it, about one run
    in four lost a few orders' jobs (see the README); the repairs are printed."""
    settings = base
    await ensure_topics(settings)
    items = events(ORDERS_IN_FLIGHT, "T")
    await fill(settings, items)
    async with auditor_running(settings) as repairs:
        with worker_process("planner", settings, tmp_path / "p.log", READY) as planner:
            await consume(settings, LABEL_JOBS, distinct(LabelJob, "order_id", 200), timeout_s=60)
            planner.send_signal(signal.SIGTERM)
            planner.wait(timeout=30)
        before = await consume(settings, LABEL_JOBS, lambda v: False, timeout_s=2)
        assert len(before) < ORDERS_IN_FLIGHT, "the worker finished first: nothing was in flight"
        with worker_process("planner", settings, tmp_path / "p.log", READY, timeout_s=90):
            values = await consume(
                settings,
                LABEL_JOBS,
                distinct(LabelJob, "order_id", ORDERS_IN_FLIGHT),
                timeout_s=120,
            )
    assert_one_job_per_order(models(LabelJob, values), set(boxes_by_order(items)))
    print(f"\nplanner SIGTERM test: {repairs():.0f} orders republished by the auditor")


async def test_a_restarted_planner_recovers_its_table_exactly(
    make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings()
    await ensure_topics(settings)
    with worker_process("planner", settings, tmp_path / "p.log", READY):
        await produce(settings, ORDERS, "R1", order("R1", skus={"A": 2, "B": 1}))
        await produce(settings, BOXES, "R1", box("R1-B2", {"A": 1}, order_id="R1"))
        plans = await consume(settings, PLANS, lambda v: False, timeout_s=3)
        assert plans == []  # two units still to pack: the order waits, in the table
    started = time.monotonic()
    with worker_process("planner", settings, tmp_path / "p.log", READY):
        await produce(settings, BOXES, "R1", box("R1-B1", {"A": 1, "B": 1}, order_id="R1"))
        jobs = models(LabelJob, await consume(settings, LABEL_JOBS, lambda v: len(v) >= 1))
    assert len(jobs) == 1, time.monotonic() - started
    # the box from before the restart is in the job: the table came back exactly
    assert sorted(p.box_id for p in jobs[0].parcels) == ["R1-B1", "R1-B2"]
    assert sorted(i.item_id for p in jobs[0].parcels for i in p.items) == [
        "R1-001",
        "R1-002",
        "R1-003",
    ]


async def test_sigterm_stops_the_planner_within_its_stop_timeout_even_without_a_broker(
    make_settings: Any, tmp_path: Path
) -> None:
    """A stop that waits on a broker gone away (a commit, a flush) must not hang the
    process: past ``planner_stop_timeout_s`` it exits anyway, non-zero."""
    from devstack.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:  # a broker of its own: this test stops it
        settings = make_settings(
            kafka_bootstrap=broker.bootstrap, kafka_embedded=True, planner_stop_timeout_s=4.0
        )
        await ensure_topics(settings)
        with worker_process("planner", settings, tmp_path / "p.log", READY) as planner:
            await produce(settings, ORDERS, "S1", order("S1"))
            await produce(settings, BOXES, "S1", box("S1-B1", {"A": 2, "B": 1}, order_id="S1"))
            await consume(settings, LABEL_JOBS, lambda v: len(v) >= 1)
            broker.stop()
            await asyncio.sleep(1)
            started = time.monotonic()
            planner.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(planner.wait, 30)
            took = time.monotonic() - started
    print(f"\nplanner stop without a broker: exit {code} after {took:.1f} s")
    assert took < 4.0 + 3.0


async def test_a_planner_whose_writes_fail_exits_non_zero_and_a_restart_loses_nothing(
    make_settings: Any, tmp_path: Path
) -> None:
    """The broker stops answering for longer than the producer's request timeout while
    batches are in flight: the join cannot go on, so the planner exits non-zero by itself
    (a supervisor restarts it) instead of staying alive and idle. Restarted, it plans every
    order."""
    from devstack.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:  # a broker of its own: this test pauses it
        settings = make_settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            kafka_request_timeout_s=3.0,
            planner_stop_timeout_s=5.0,
        )
        await ensure_topics(settings)
        items = events(ORDERS_IN_FLIGHT, "W")
        await fill(settings, items)
        assert broker.proc is not None
        with worker_process("planner", settings, tmp_path / "p.log", READY) as planner:
            await consume(settings, LABEL_JOBS, distinct(LabelJob, "order_id", 200), timeout_s=60)
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                code = await asyncio.to_thread(planner.wait, 40)
            finally:
                broker.proc.send_signal(signal.SIGCONT)
        assert code != 0
        log = (tmp_path / "p.log").read_text(errors="replace")
        assert "planner_join_failed" in log, log[-3000:]
        with worker_process("planner", settings, tmp_path / "p.log", READY, timeout_s=90):
            values = await consume(
                settings, LABEL_JOBS, distinct(LabelJob, "order_id", ORDERS_IN_FLIGHT), 120
            )
    assert_one_job_per_order(models(LabelJob, values), set(boxes_by_order(items)))


@pytest.mark.parametrize(
    "fix",
    [
        True,
        pytest.param(
            False,
            marks=pytest.mark.skipif(
                os.environ.get("PARCELFLOW_PROVE_RACE") != "1",
                reason="set PARCELFLOW_PROVE_RACE=1 to see Faust lose orders without the fix "
                "(a race: on a loaded machine it may not show, so not part of make test)",
            ),
        ),
    ],
    ids=["as-shipped", "without-the-fix"],
)
async def test_a_slow_seek_after_a_restart_loses_nothing_with_the_fix(
    base: Settings, tmp_path: Path, fix: bool
) -> None:
    """Faust's race at the end of recovery (workers/planner/delivery.py), made certain by a
    seek 1 s late, after a SIGTERM mid-run. No auditor: the join alone must be whole.
    Without ``deliver_every_offset`` the same run loses orders: that variant checks that
    this test can see the loss at all (if a Faust release fixes the race, it fails and the
    workaround can go)."""
    settings = base
    await ensure_topics(settings)
    items = events(ORDERS_IN_FLIGHT, "S")
    await fill(settings, items)
    with worker_process("planner", settings, tmp_path / "p.log", READY) as planner:
        await consume(settings, LABEL_JOBS, distinct(LabelJob, "order_id", 200), timeout_s=60)
        planner.send_signal(signal.SIGTERM)
        planner.wait(timeout=30)
    slow = [sys.executable, "-m", "tests.integration.slow_seek", str(SLOW_SEEK_S)]
    slow += [] if fix else ["--without-fix"]
    with worker_process("planner", settings, tmp_path / "p.log", READY, 90, command=slow):
        values = await consume(
            settings,
            LABEL_JOBS,
            distinct(LabelJob, "order_id", ORDERS_IN_FLIGHT),
            timeout_s=60 if fix else 20,  # what is lost stays lost: no need to wait long
        )
    jobs = models(LabelJob, values)
    missing = set(boxes_by_order(items)) - {job.order_id for job in jobs}
    print(f"\nslow seek, fix={fix}: {len(missing)} of {ORDERS_IN_FLIGHT} orders without a job")
    if fix:
        assert_one_job_per_order(jobs, set(boxes_by_order(items)))
    else:
        assert missing, "Faust lost nothing without the fix: is the race gone upstream?"
