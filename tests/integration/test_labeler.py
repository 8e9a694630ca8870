"""The labeler on a real broker against the simulated Shipium label API."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devstack.simulator.app import Simulator
from devstack.simulator.faults import Fault
from schemas.alert import Alert
from schemas.common import now_ms
from schemas.label import LabelFailure, LabelResult
from schemas.rejected import RejectedRecord
from schemas.replay import ReplayRequest
from schemas.topics import (
    ALERTS,
    LABEL_ATTEMPTS,
    LABEL_FAILURES,
    LABEL_JOBS,
    LABEL_JOBS_REJECTED,
    LABELS,
    REPLAYS,
    TopicSpec,
)
from tests.integration.kafka_helpers import consume, models, produce, provisioned
from tests.integration.processes import in_process
from tests.integration.sim import start_simulator
from tests.unit.factories import job
from workers.labeler.decide import attempt
from workers.labeler.operations import replay
from workers.labeler.shipium.request import ITEM_REFERENCE_FIELD
from workers.labeler.worker import run
from workers.settings import Settings

MAX_IN_FLIGHT = 4
WRITE_RETRIES = "parcelflow_labeler_write_retries_total"


@pytest.fixture
async def labeler(
    make_settings: Callable[..., Settings], serve: Any
) -> AsyncIterator[tuple[Settings, Simulator]]:
    base = make_settings(sim_label_latency_median_s=0.3, sim_label_latency_sigma=0.0)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        shipium_base_url=url,
        labeler_max_in_flight=MAX_IN_FLIGHT,
        labeler_backoff_base_s=0.05,
        labeler_max_attempts=3,
    )
    await provisioned(settings)  # before any test produces: co-partitioned topics
    async with in_process(run, settings):
        yield settings, sim


async def test_every_job_gets_one_label_within_the_in_flight_bound(
    labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = labeler
    jobs = [job(f"L{n}", parcels=1 + n % 3) for n in range(20)]
    for j in jobs:
        await produce(settings, LABEL_JOBS, j.order_id, j)
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 20))
    assert sorted(lb.job_id for lb in labels) == sorted(j.job_id for j in jobs)
    assert 1 < sim.shipium.peak_in_flight <= MAX_IN_FLIGHT
    assert sim.shipium.duplicates == 0
    for label in labels:
        source = next(j for j in jobs if j.job_id == label.job_id)
        assert [p.box_id for p in label.parcels] == [p.box_id for p in source.parcels]
        for parcel in label.parcels:
            document = Path(parcel.document_path).read_bytes()
            assert document.startswith(b"%PDF-")
            assert hashlib.sha256(document).hexdigest() == parcel.document_sha256
        assert not label.tracking_available
    sent = {r["shipmentParameters"]["partnerShipmentId"]: r for r in sim.shipium.requests}
    three = next(j for j in jobs if len(j.parcels) == 3)
    packages = sent[three.job_id]["shipmentParameters"]["multiParcelShipmentParameters"]
    assert [[q[ITEM_REFERENCE_FIELD] for q in p["orderItemQuantities"]] for p in packages] == [
        [i.item_id for i in p.items] for p in three.parcels
    ]


async def test_retriable_errors_are_retried_then_labeled(
    labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = labeler
    sim.faults.push("shipium", [Fault(status=503), Fault(status=429, retry_after=0.1)])
    await produce(settings, LABEL_JOBS, "R1", job("R1"))
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert [(lb.job_id, lb.attempts) for lb in labels] == [("job-R1", 3)]


async def test_a_4xx_fails_the_job_at_once_with_shipiums_message(
    labeler: tuple[Settings, Simulator],
) -> None:
    settings, sim = labeler
    sim.faults.push("shipium", [Fault(status=400, message="destinationAddress.postalCode invalid")])
    await produce(settings, LABEL_JOBS, "F1", job("F1"))
    failures = models(LabelFailure, await consume(settings, LABEL_FAILURES, lambda v: len(v) >= 1))
    assert [(f.job_id, f.error_code, f.attempts) for f in failures] == [("job-F1", "http_400", 1)]
    assert failures[0].message == "destinationAddress.postalCode invalid"
    assert failures[0].job.parcels == job("F1").parcels  # replayable as it was

    # an operator of another warehouse cannot replay it (the job is of no warehouse it has)
    assert await replay(settings, {"job-F1"}, frozenset({"WH-OTHER"})) == []
    replayed = await replay(settings, {"job-F1", "job-unknown"})  # the address was fixed
    assert [f.job_id for f in replayed] == ["job-F1"]
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert [(lb.job_id, lb.attempts) for lb in labels] == [("job-F1", 1)]


async def test_malformed_job_is_dead_lettered_and_the_worker_goes_on(
    labeler: tuple[Settings, Simulator],
) -> None:
    settings, _ = labeler
    await produce(settings, LABEL_JOBS, "X", b'{"job_id": 42}')
    await produce(settings, LABEL_JOBS, "G1", job("G1"))
    rejected = models(
        RejectedRecord, await consume(settings, LABEL_JOBS_REJECTED, lambda v: len(v) >= 1)
    )
    assert rejected[0].original() == b'{"job_id": 42}'
    assert "job_id" in rejected[0].reason and rejected[0].worker == "labeler"
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert [lb.job_id for lb in labels] == ["job-G1"]


async def test_rejected_credentials_pause_alert_and_resume_by_themselves(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    base = make_settings(sim_label_latency_median_s=0.0)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(shipium_base_url=url, labeler_auth_retry_s=0.3)
    sim.faults.push("shipium", [Fault(status=401), Fault(status=403)])
    await provisioned(settings)
    async with in_process(run, settings):
        await produce(settings, LABEL_JOBS, "A1", job("A1"))
        labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
        alerts = models(Alert, await consume(settings, ALERTS, lambda v: len(v) >= 1))
    assert [(lb.job_id, lb.attempts) for lb in labels] == [("job-A1", 1)]
    assert [a.kind for a in alerts] == ["shipium_credentials_rejected"]
    assert await consume(settings, LABEL_FAILURES, lambda v: False, timeout_s=1) == []


async def test_a_restarted_labeler_never_calls_twice_for_a_labeled_job(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    base = make_settings(sim_label_latency_median_s=0.0)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(shipium_base_url=url)
    jobs = [job(f"D{n}") for n in range(6)]
    await provisioned(settings)  # before producing: topics made by the broker differ

    async def run_until(count: int) -> list[LabelResult]:
        async with in_process(run, settings):
            return models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= count))

    for j in jobs:
        await produce(settings, LABEL_JOBS, j.order_id, j)
    first = await run_until(6)
    for j in jobs:  # replayed after a restart: a fresh process, nothing in memory
        await produce(settings, LABEL_JOBS, j.order_id, j)
    second = await run_until(12)
    assert len(sim.shipium.requests) == 6
    assert sim.shipium.duplicates == 0
    assert {lb.event_id for lb in second} == {lb.event_id for lb in first}


async def test_a_job_past_its_max_age_is_not_retried(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    base = make_settings(sim_label_latency_median_s=0.0)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(shipium_base_url=url, labeler_max_age_s=60)
    sim.faults.push("shipium", [Fault(status=503)])
    old = job("OLD").model_copy(update={"created_at_ms": 1})  # made long ago
    await provisioned(settings)
    async with in_process(run, settings):
        await produce(settings, LABEL_JOBS, "OLD", old)
        failures = models(
            LabelFailure, await consume(settings, LABEL_FAILURES, lambda v: len(v) >= 1)
        )
    assert [(f.job_id, f.error_code, f.attempts, f.retriable) for f in failures] == [
        ("job-OLD", "http_503", 1, True)
    ]


async def test_cancellations_drop_unlabeled_jobs_and_say_to_void_labeled_ones(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    base = make_settings(sim_label_latency_median_s=0.0)
    url, sim = await start_simulator(serve, base)
    settings = make_settings(shipium_base_url=url)
    await provisioned(settings)
    labeled, unlabeled = job("V1"), job("V2")

    async def run_once(spec: TopicSpec, until: Callable[[list[bytes]], bool]) -> list[bytes]:
        async with in_process(run, settings):
            return await consume(settings, spec, until)

    await produce(settings, LABEL_JOBS, "V1", labeled)
    await produce(settings, LABEL_JOBS, "V1", labeled.model_copy(update={"kind": "cancel"}))
    await produce(settings, LABEL_JOBS, "V2", unlabeled.model_copy(update={"kind": "cancel"}))
    failures = models(LabelFailure, await run_once(LABEL_FAILURES, lambda v: len(v) >= 2))
    assert {(f.job_id, f.error_code) for f in failures} == {
        ("job-V1", "void_required"),
        ("job-V2", "cancelled"),
    }
    assert "TikTok Seller Center" in next(f.message for f in failures if f.job_id == "job-V1")
    # The create job for the cancelled order arrives late, after a restart: still dropped.
    # A sentinel on the same key (same partition, after it) shows it was handled.
    await produce(settings, LABEL_JOBS, "V2", unlabeled)
    sentinel = job("V2").model_copy(update={"job_id": "job-V2-sentinel", "event_id": "s"})
    await produce(settings, LABEL_JOBS, "V2", sentinel)
    await run_once(LABELS, lambda v: any(b"job-V2-sentinel" in x for x in v))
    called = [r["shipmentParameters"]["partnerShipmentId"] for r in sim.shipium.requests]
    assert called == ["job-V1", "job-V2-sentinel"]


async def test_slow_calls_cause_no_rebalance(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    base = make_settings(
        sim_label_latency_median_s=2.5, sim_label_latency_sigma=0.0, sim_label_tail_probability=0
    )
    url, sim = await start_simulator(serve, base)
    # every call lasts longer than the poll interval the group allows: a labeler that
    # waited for its calls between polls would be dropped from the group and rebalance
    settings = make_settings(
        shipium_base_url=url,
        labeler_max_in_flight=2,
        kafka_max_poll_interval_s=1.5,
        kafka_session_timeout_s=6,  # Kafka's least (group.min.session.timeout.ms)
    )
    await provisioned(settings)
    before = REGISTRY.get_sample_value("parcelflow_labeler_partition_assignments_total") or 0
    async with in_process(run, settings):
        for n in range(6):
            await produce(settings, LABEL_JOBS, f"S{n}", job(f"S{n}"))
        labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 6, 60))
    assert len({lb.job_id for lb in labels}) == 6 and sim.shipium.duplicates == 0
    after = REGISTRY.get_sample_value("parcelflow_labeler_partition_assignments_total") or 0
    assert after - before == 1, "slow calls caused a rebalance"


async def test_a_label_that_cannot_be_stored_ends_its_job_with_the_reason(
    make_settings: Callable[..., Settings], serve: Any, tmp_path: Path
) -> None:
    """The store refuses every write: the job ends in label-failures.v1 (store_failed,
    replayable) before its boxes are claimed, so no label is made that could not be
    stored, and the labeler goes on with other jobs."""
    base = make_settings(sim_label_latency_median_s=0.0)
    url, sim = await start_simulator(serve, base)
    not_a_folder = tmp_path / "labels-file"
    not_a_folder.write_bytes(b"a file where the label folder should be")
    settings = make_settings(shipium_base_url=url, label_dir=not_a_folder)
    await provisioned(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    try:
        for order_id in ("ST1", "ST2"):
            await produce(settings, LABEL_JOBS, order_id, job(order_id))
        failures = models(
            LabelFailure, await consume(settings, LABEL_FAILURES, lambda v: len(v) >= 2)
        )
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert sorted((f.job_id, f.error_code, f.retriable) for f in failures) == [
        ("job-ST1", "store_failed", True),
        ("job-ST2", "store_failed", True),
    ]
    assert failures[0].message.startswith("box claim not written: NotADirectoryError")
    assert sim.shipium.requests == []


async def test_writes_during_a_broker_pause_are_retried_and_every_job_ends(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    """The broker stops answering for longer than a write's timeout while label calls run:
    the labeler retries its writes, stays up, and every job gets exactly one label."""
    import signal

    from devstack.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:  # a broker of its own: this test pauses it
        base = make_settings(
            kafka_bootstrap=broker.bootstrap, kafka_embedded=True, sim_label_latency_median_s=1.0
        )
        url, sim = await start_simulator(serve, base)
        settings = make_settings(
            kafka_bootstrap=broker.bootstrap,
            kafka_embedded=True,
            shipium_base_url=url,
            kafka_request_timeout_s=2.0,
            labeler_publish_timeout_s=60.0,
            labeler_max_in_flight=4,
        )
        await provisioned(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(run(settings, stop))
        jobs = [job(f"BP{n}") for n in range(24)]
        retries_before = REGISTRY.get_sample_value(WRITE_RETRIES) or 0
        try:
            for j in jobs:
                await produce(settings, LABEL_JOBS, j.order_id, j)
            await consume(settings, LABELS, lambda v: len(v) >= 1)
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(6)  # label calls finish meanwhile; their writes time out
            broker.proc.send_signal(signal.SIGCONT)
            labels = models(
                LabelResult,
                await consume(
                    settings,
                    LABELS,
                    lambda v: len({lb.job_id for lb in models(LabelResult, v)}) >= 24,
                    90,
                ),
            )
            assert not task.done(), "the labeler stopped"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert {lb.job_id for lb in labels} == {j.job_id for j in jobs}
    assert sim.shipium.duplicates == 0
    # a write timed out during the pause and was retried (not dropped, not fatal)
    assert (REGISTRY.get_sample_value(WRITE_RETRIES) or 0) > retries_before


@pytest.mark.parametrize(
    "fault",
    [Fault(status=504, after="created"), Fault(status=0, after="created")],
    ids=["label-made-then-504", "label-made-then-connection-dropped"],
)
async def test_an_unclear_answer_is_looked_up_before_any_second_create(
    labeler: tuple[Settings, Simulator], fault: Fault
) -> None:
    """Shipium made the label but its answer was lost: the labeler finds the shipment by
    its partnerShipmentId instead of creating a second label."""
    settings, sim = labeler
    sim.faults.push("shipium", [fault])
    await produce(settings, LABEL_JOBS, "U1", job("U1"))
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert [lb.job_id for lb in labels] == ["job-U1"]
    assert labels[0].parcels[0].tracking_id  # the label Shipium had made
    assert sim.shipium.shipment_ids["job-U1"] == 1, "a second create for the same shipment"
    assert sim.shipium.duplicates == 0


async def test_the_adaptive_limit_finds_the_providers_capacity(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    # The simulator's capacity model: above 4 calls at once latency grows with the
    # crowd, above 8 calls are refused with 429 and Retry-After. The labeler starts at
    # 16 in flight, may go to 32, and must settle near 4 while labeling every job once.
    base = make_settings(
        sim_label_latency_median_s=0.2,
        sim_label_latency_sigma=0.0,
        sim_label_tail_probability=0,
        sim_label_capacity=4,
    )
    url, sim = await start_simulator(serve, base)
    settings = make_settings(
        shipium_base_url=url,
        labeler_max_in_flight=32,
        labeler_initial_in_flight=16,
        labeler_backoff_base_s=0.05,
    )
    await provisioned(settings)
    count = 240
    for n in range(count):
        await produce(settings, LABEL_JOBS, f"C{n}", job(f"C{n}"))
    limits: list[float] = []
    refused: list[tuple[int, int]] = []  # (calls, of them refused) so far

    async def sample() -> None:
        while True:
            limits.append(REGISTRY.get_sample_value("parcelflow_labeler_concurrency_limit") or 0)
            refused.append((sim.shipium.calls, sim.shipium.overloaded))
            await asyncio.sleep(0.1)

    async with in_process(run, settings):
        sampler = asyncio.create_task(sample())
        try:
            labels = models(
                LabelResult, await consume(settings, LABELS, lambda v: len(v) >= count, 90)
            )
        finally:
            sampler.cancel()
    assert len({lb.job_id for lb in labels}) == count and sim.shipium.duplicates == 0
    later = limits[len(limits) // 2 :]  # the second half of the run
    assert later and max(later) <= 8, f"the limit stays under twice the capacity: {later}"
    assert 3 <= sum(later) / len(later) <= 6, f"and near it: {later}"
    (calls, overloaded), half = refused[-1], refused[len(refused) // 2]
    assert overloaded > 0, "the start at 16 in flight was over twice the capacity"
    late = (overloaded - half[1]) / (calls - half[0])
    assert late < 0.05, f"once settled, few calls are refused: {late:.1%}"


async def test_lookups_do_not_teach_the_limiter_its_baseline(
    make_settings: Callable[..., Settings], serve: Any
) -> None:
    """Jobs a labeler that died had started are looked up before any create (a lookup
    answers in milliseconds): the limiter's latency without a queue is the creates'."""
    base = make_settings(
        sim_label_latency_median_s=0.3, sim_label_latency_sigma=0.0, sim_label_tail_probability=0
    )
    url, _ = await start_simulator(serve, base)
    settings = make_settings(shipium_base_url=url, labeler_max_in_flight=16)
    await provisioned(settings)
    count = 24
    for n in range(count):
        started = job(f"R{n}")
        await produce(settings, LABEL_ATTEMPTS, started.order_id, attempt(started, now_ms()))
        await produce(settings, LABEL_JOBS, started.order_id, started)
    async with in_process(run, settings):
        await consume(settings, LABELS, lambda v: len(v) >= count, 60)
        baseline = REGISTRY.get_sample_value("parcelflow_labeler_baseline_seconds")
    assert baseline is not None and baseline >= 0.25, baseline


async def test_a_replay_asked_on_label_replays_runs_the_recorded_job_only(
    labeler: tuple[Settings, Simulator],
) -> None:
    """The dashboard only asks (label-replays.v1); the labeler sends again the job of its
    own failure record, and refuses a request that does not match one."""
    settings, sim = labeler
    sim.faults.push("shipium", [Fault(status=400, message="bad address")])
    await produce(settings, LABEL_JOBS, "P1", job("P1"))
    await consume(settings, LABEL_FAILURES, lambda v: len(v) >= 1)

    def ask(job_id: str, order_id: str) -> ReplayRequest:
        return ReplayRequest(
            event_id=f"replay-{job_id}-{order_id}",
            job_id=job_id,
            order_id=order_id,
            principal="ops",
            requested_at_ms=1,
        )

    await produce(settings, REPLAYS, "P9", ask("job-P1", "P9"))  # not that job's order
    await produce(settings, REPLAYS, "P1", ask("job-P1", "P1"))
    labels = models(LabelResult, await consume(settings, LABELS, lambda v: len(v) >= 1))
    assert [(lb.job_id, lb.order_id) for lb in labels] == [("job-P1", "P1")]
    await asyncio.sleep(1.0)
    again = models(LabelResult, await consume(settings, LABELS, lambda v: False, timeout_s=1))
    assert [lb.job_id for lb in again] == ["job-P1"]  # one label: the forged ask did nothing
