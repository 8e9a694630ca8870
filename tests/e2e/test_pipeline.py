"""The whole pipeline as `make run` runs it: separate processes, embedded broker, simulator."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from devstack.demo import Progress, send, watch
from devstack.demo_data import make_demo
from devstack.stack import Stack
from devstack.verify import verify

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (local simulator)
        return orjson.loads(response.read())


def metric_families(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (local worker)
        text = response.read().decode()
    return {family(line.split()[2]) for line in text.splitlines() if line.startswith("# TYPE ")}


def family(sample: str) -> str:
    """A sample's metric family: without _total, _bucket, _count, _sum or _created."""
    return re.sub(r"_(total|bucket|count|sum|created)$", "", sample)


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_every_order_gets_exactly_one_label_with_the_item_ids_of_each_box(tmp_path: Path) -> None:
    orders = make_demo(60, seed=11, run_id=424, now_s=int(time.time()))
    stack = Stack(tmp_path, {"SIM_LABEL_LATENCY_MEDIAN_S": "0.5"})
    with stack.running(say=False):
        settings = stack.settings
        token = stack.token
        asyncio.run(send(orders, settings, stack.receiver_url, stack.simulator_url, token))
        progress = Progress(expected={o.order_id for o in orders})
        asyncio.run(watch(settings, progress, timeout_s=120, out=False))
        requests = get_json(f"{stack.simulator_url}/_sim/shipium/requests")
        stats = get_json(f"{stack.simulator_url}/_sim/stats")
        pids = [p.proc.pid for p in stack.processes]
        exported = {name: metric_families(url) for name, url in stack.metrics_urls.items()}
        assert stack.watch is not None
        deadline = time.monotonic() + 30
        while not stack.watch.readings and time.monotonic() < deadline:
            time.sleep(0.5)
        broker = urllib.request.urlopen(stack.watch.url, timeout=5).read().decode()  # noqa: S310
    # the devstack watches its broker: memory, CPU, how late records reach a reader
    rss = re.search(r"^parcelflow_devstack_broker_rss_bytes ([0-9.e+]+)$", broker, re.M)
    assert rss is not None and float(rss.group(1)) > 1e6, broker
    assert "parcelflow_devstack_broker_slow 0.0" in broker  # 60 orders do not slow it
    assert progress.pending == 0, (
        f"orders without label: {progress.expected - progress.labels.keys()}"
    )
    assert progress.failures == {}
    assert stats["shipium"]["duplicate_partner_shipment_ids"] == 0
    assert len(requests) == len(orders), "one label call per order, no more"
    verdict = verify(orders, requests, progress.labels)
    assert verdict.problems == []
    assert (verdict.labeled, verdict.duplicate_calls, verdict.lost) == (len(orders), 0, 0)
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )
    # every metric the alert rules and the Grafana dashboard use is one parcelflow exports
    live = set().union(*exported.values())
    assert {"parcelflow_planner_events", "parcelflow_consumer_lag"} <= live
    for path in (ROOT / "deploy/prometheus/alerts.yml", ROOT / "deploy/grafana/parcelflow.json"):
        used = {family(m) for m in re.findall(r"parcelflow_[a-z_]+", path.read_text())}
        assert used, path
        assert used <= live, f"{path.name} uses what nothing exports: {sorted(used - live)}"


@pytest.mark.parametrize(
    "security",
    [
        [],
        ["--kafka-tls"],
        ["--label-store", "s3", "--label-formats", "pdf,zpl"],
        ["--label-provider", "tiktok"],
    ],
    ids=["plaintext", "mutual-tls", "s3-label-store", "tiktok-shipping"],
)
def test_parcelflow_run_prints_the_summary_exits_0_and_leaves_nothing_running(
    tmp_path: Path, security: list[str]
) -> None:
    """``--kafka-tls``: every process's Kafka clients over mutual TLS (a throwaway CA)."""
    command = [
        sys.executable,
        "-m",
        "workers.cli",
        "run",
        "--orders",
        "20",
        "--label-latency",
        "0.3",
        "--run-dir",
        str(tmp_path),
        *security,
    ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[int] = set()
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= {c.pid for c in children_of(proc.pid)}
        time.sleep(0.2)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().splitlines()[-1] == "summary: orders=20 labels=20 failures=0 pending=0"
    assert len(seen) >= 6, "broker, simulator and four workers ran as processes"
    if "--kafka-tls" in security:
        assert "tls terminator on" in next(tmp_path.rglob("broker.log")).read_text()
    alive = [
        pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert alive == [], f"left running: {alive}"
    # labels (recipients' addresses), logs and tokens are for the user running parcelflow only
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pdf" for p in written) == ("s3" not in security)
    assert any(p.name == "report.html" for p in written)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o600"}
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert {oct(p.stat().st_mode & 0o777) for p in folders} == {"0o700"}


def test_a_killed_worker_is_restarted_by_the_supervisor_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """SIGKILL the labeler and the planner: the stack's supervisor says so, restarts them,
    and every order sent afterwards still gets exactly one label."""
    import signal

    orders = make_demo(40, seed=5, run_id=425, now_s=int(time.time()))
    stack = Stack(tmp_path, {"SIM_LABEL_LATENCY_MEDIAN_S": "0.5"})
    with stack.running(say=False):
        settings = stack.settings
        token = stack.token
        killed = {p.name: p.proc.pid for p in stack.processes if p.name in ("labeler", "planner")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        asyncio.run(send(orders, settings, stack.receiver_url, stack.simulator_url, token))
        progress = Progress(expected={o.order_id for o in orders})
        asyncio.run(watch(settings, progress, timeout_s=150, out=False))
        stats = get_json(f"{stack.simulator_url}/_sim/stats")
        alive = {p.name: p.proc.pid for p in stack.processes}
    assert progress.pending == 0, (
        f"orders without label: {progress.expected - progress.labels.keys()}"
    )
    assert stack.restarts == {"labeler": 1, "planner": 1}
    for name, pid in killed.items():
        assert f"{name} (pid {pid}) exited with signal SIGKILL" in stack.events
        assert alive[name] != pid
    assert stats["shipium"]["duplicate_partner_shipment_ids"] == 0


def test_both_order_flows_and_cancel_requests_as_tiktok_documents_them(tmp_path: Path) -> None:
    """TikTok's two order flows (the On Hold changelog) and pending cancel requests, with
    TikTok Shipping labels: new-flow and long-paid orders are labeled at once, recently paid
    old-flow ones only once their remorse hour has passed, cancelled ones never; TikTok
    sees no package inside a remorse window or under a pending cancel request."""
    now = int(time.time())
    orders = make_demo(40, seed=5, run_id=425, now_s=now, flows=True)
    flows = {o.flow for o in orders}
    assert {"new", "old", "old-recent", "cancel-declined", "cancel-accepted"} <= flows
    stack = Stack(tmp_path, {"LABEL_PROVIDER": "tiktok", "SIM_LABEL_LATENCY_MEDIAN_S": "0.2"})
    with stack.running(say=False):
        settings = stack.settings
        asyncio.run(send(orders, settings, stack.receiver_url, stack.simulator_url, stack.token))
        progress = Progress.of(orders)
        asyncio.run(watch(settings, progress, timeout_s=120, out=False))
        stats = get_json(f"{stack.simulator_url}/_sim/stats")["tiktok_shipping"]
    assert progress.pending == 0 and progress.failures == {}
    assert progress.labeled_cancelled == 0
    for order in orders:
        paid = order.tiktok.get("paid_time", 0)
        if order.flow == "old-recent":
            label = progress.labels[order.order_id]
            assert label.labeled_at_ms >= (paid + 3600) * 1000, order.order_id
            assert order.order_id in progress.held
    assert stats["created_in_remorse_window"] == 0
    assert stats["created_with_cancel_request"] == 0
    assert stats["packages"] == sum(len(o.boxes) for o in orders if o.labeled)
