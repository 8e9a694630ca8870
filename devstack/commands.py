"""The devstack's ``parcelflow`` commands: run, up, chaos, scale, soak, send, simulator.

``devstack.plugin`` adds them to the ``parcelflow`` command; each imports what it runs
only when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.settings import Settings

if TYPE_CHECKING:
    from devstack.demo import Summary
    from devstack.stack import Stack

MAX_RESTARTS = 3  # `parcelflow run` fails past this many worker restarts


def add_commands(sub: Any) -> None:
    for add in (add_demo, add_chaos, add_scale, add_soak, add_send, add_simulator):
        add(sub)


def add_simulator(sub: Any) -> None:
    """``simulator``."""
    sub.add_parser(
        "simulator",
        help="run the simulated TikTok Shop and Shipium APIs",
        epilog="example: PARCELFLOW_SIM_PORT=8090 parcelflow simulator",
    ).set_defaults(func=simulator_command)


def simulator_command(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.simulator.app import run as run_simulator
    from workers import logs

    logs.configure(settings.log_level)
    run_simulator(settings)
    return 0


def add_demo(sub: Any) -> None:
    """``run`` and ``up``."""
    for name, keep in (("run", False), ("up", True)):
        p = sub.add_parser(
            name,
            help="start everything and send demo traffic" + (", keep running" if keep else ""),
            epilog=f"example: parcelflow {name} --orders 50 --label-latency 0.5",
        )
        p.add_argument("--orders", type=int, default=200, help="demo orders to send (200)")
        p.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to wait for labels (300)"
        )
        p.add_argument(
            "--label-latency",
            type=float,
            help="median label call seconds (PARCELFLOW_SIM_LABEL_LATENCY_MEDIAN_S, 2.0)",
        )
        p.add_argument(
            "--max-in-flight",
            type=int,
            help="labeler calls in flight (PARCELFLOW_LABELER_MAX_IN_FLIGHT, 64)",
        )
        p.add_argument("--seed", type=int, default=7, help="seed of the demo data (7)")
        p.add_argument("--run-dir", default="var/run", help="where logs and labels go (var/run)")
        p.add_argument(
            "--label-store",
            default="folder",
            help="folder (the run's labels/), s3 (an S3-compatible server started for the "
            "run), or s3://bucket[/prefix] (yours: PARCELFLOW_LABEL_S3_ENDPOINT, AWS_*)",
        )
        p.add_argument(
            "--label-formats",
            help='label formats asked and stored, e.g. pdf,zpl (PARCELFLOW_LABEL_FORMATS, "pdf")',
        )
        p.add_argument(
            "--label-provider",
            choices=("shipium", "tiktok"),
            help="where every shop's labels come from: shipium (Shipium's TikTok Shop "
            "carrier) or tiktok (TikTok Shipping) (PARCELFLOW_LABEL_PROVIDER, shipium)",
        )
        p.add_argument(
            "--kafka-tls",
            action="store_true",
            help="every Kafka client over TLS (mutual TLS), with a throwaway CA made at start",
        )
        p.set_defaults(func=lambda s, a, keep=keep: demo(s, a, keep))


def add_chaos(sub: Any) -> None:
    """``chaos``."""
    chaos = sub.add_parser(
        "chaos",
        help="the stack under demo traffic while a seeded schedule kills and stops workers "
        "and pauses the broker; then every order is checked",
        epilog="example: parcelflow chaos --seconds 120 --seed 7",
    )
    chaos.add_argument(
        "--seconds", type=float, help="traffic seconds (PARCELFLOW_CHAOS_SECONDS, 300)"
    )
    chaos.add_argument("--seed", type=int, help="replay this schedule (a new seed by default)")
    chaos.add_argument("--rate", type=float, default=2.0, help="demo orders a second (2)")
    chaos.add_argument("--run-dir", default="var/run", help="where logs and labels go (var/run)")
    chaos.set_defaults(func=chaos_command)


def add_scale(sub: Any) -> None:
    """``scale``."""
    scale = sub.add_parser(
        "scale",
        help="the stack under demo traffic from several shops while the receiver, enricher, "
        "planner and labeler are each scaled 1 -> peak -> 1 and killed once; then every "
        "order and every shop's tokens are checked",
        epilog="example: parcelflow scale --seconds 120 --peak 3 --seed 7",
    )
    scale.add_argument("--seconds", type=float, default=180.0, help="traffic seconds (180)")
    scale.add_argument("--peak", type=int, default=3, help="most processes per worker (3)")
    scale.add_argument("--seed", type=int, help="replay this plan (a new seed by default)")
    scale.add_argument("--rate", type=float, default=2.0, help="demo orders a second (2)")
    scale.add_argument("--run-dir", default="var/run", help="where logs and labels go (var/run)")
    scale.set_defaults(func=scale_command)


def add_soak(sub: Any) -> None:
    """``soak``."""
    soak = sub.add_parser(
        "soak",
        help="the stack under steady demo traffic for a long time; box -> label latency and "
        "the broker's CPU and memory every few minutes; then every order is checked",
        epilog="example: parcelflow soak --minutes 10 --rate 20",
    )
    soak.add_argument("--minutes", type=float, help="traffic minutes (PARCELFLOW_SOAK_MINUTES)")
    soak.add_argument("--rate", type=float, help="demo orders a second (PARCELFLOW_SOAK_RATE)")
    soak.add_argument("--every-s", type=float, default=300.0, help="report every (300 s)")
    soak.add_argument("--seed", type=int, help="the demo orders' seed (new by default)")
    soak.add_argument(
        "--label-latency",
        type=float,
        default=0.2,
        help="median simulated label call seconds (0.2: the pipeline and broker, not the "
        "label API, make the latency)",
    )
    soak.add_argument(
        "--warmup-s", type=float, default=60.0, help="labels of the first seconds not counted (60)"
    )
    soak.add_argument("--run-dir", default="var/run", help="where logs and labels go (var/run)")
    soak.set_defaults(func=soak_command)


def add_send(sub: Any) -> None:
    """``send``."""
    send = sub.add_parser(
        "send", help="send a signed TikTok webhook, a box or an order event to the receiver"
    )
    kinds = send.add_subparsers(dest="what", required=True)
    webhook = kinds.add_parser(
        "webhook",
        help="a TikTok order webhook, signed with the app's secret",
        epilog="example: parcelflow send webhook --order-id 1001 --item MUG-BLK=2 --item TEE-M",
    )
    webhook.add_argument("--order-id", help="the TikTok order id")
    webhook.add_argument(
        "--item",
        action="append",
        default=[],
        help="SKU=QTY (repeatable): the order's units, loaded into the simulator first",
    )
    webhook.add_argument("--shop-id", default="7495000000000000000", help="the shop")
    webhook.add_argument("--status", default="AWAITING_SHIPMENT", help="the order status")
    webhook.add_argument("--type", type=int, default=1, help="TikTok's webhook type (1: order)")
    box = kinds.add_parser(
        "box",
        help="a box-closed event of a packing station",
        epilog="example: parcelflow send box --order-id 1001 --box-id 1001-A --item MUG-BLK=2",
    )
    box.add_argument("--order-id", help="the box's order")
    box.add_argument("--box-id", help="the box's id")
    box.add_argument(
        "--item", action="append", default=[], help="SKU=QTY (repeatable): what is in it"
    )
    box.add_argument("--station", default="PACK-01", help="the packing station (PACK-01)")
    box.add_argument("--weight-lb", type=float, default=1.0, help="weight in lb (1.0)")
    order = kinds.add_parser(
        "order",
        help="an order event of an upstream system (with its line items)",
        epilog="example: parcelflow send order --file order.json  (schemas/json/orders.v1.json)",
    )
    for kind in (webhook, box, order):
        kind.add_argument("--file", help="the JSON body to send, instead of flags")
        kind.add_argument("--url", help="the receiver (http://127.0.0.1:PARCELFLOW_RECEIVER_PORT)")
    send.set_defaults(func=send_command, client=True)


def demo(settings: Settings, args: argparse.Namespace, keep_running: bool) -> int:
    """``run`` (and ``up``, which keeps the stack until Ctrl-C): the stack, the demo
    orders through it, the summary; exit 0 when every order has its labels."""
    from devstack import discover
    from devstack.stack import Stack, StackError

    started = time.monotonic()
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    stack = Stack(
        run_dir, demo_overrides(args), kafka_tls=args.kafka_tls, label_store=args.label_store
    )
    latest = Path(args.run_dir) / "devstack.env"
    print(f"parcelflow: starting the stack (logs in {run_dir})", file=sys.stderr, flush=True)
    try:
        with stack.running():
            text = announce(stack, run_dir, latest)
            summary = play_demo(stack, args, run_dir, started)
            if keep_running:
                keep_until_stopped(summary, text, latest)
    except StackError as exc:
        print(f"parcelflow: the stack did not start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parcelflow: interrupted, everything stopped", file=sys.stderr)
        return 130
    finally:
        discover.forget(latest)
    summary.wall_s = time.monotonic() - started
    print("\n".join(summary.lines()), flush=True)
    return verdict(summary, run_dir)


def demo_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Settings from ``run``'s flags: flags given win over exported PARCELFLOW_* variables."""
    overrides = {}
    if args.label_latency is not None:
        overrides["SIM_LABEL_LATENCY_MEDIAN_S"] = str(args.label_latency)
    if args.max_in_flight is not None:
        overrides["LABELER_MAX_IN_FLIGHT"] = str(args.max_in_flight)
    if args.label_formats:
        overrides["LABEL_FORMATS"] = json.dumps(args.label_formats.split(","))
    if args.label_provider:
        overrides["LABEL_PROVIDER"] = args.label_provider
    return overrides


def announce(stack: Stack, run_dir: Path, latest: Path) -> str:
    """Print the stack's addresses and write ``devstack.env``; its text."""
    from devstack import discover

    urls = {
        "broker": stack.env["PARCELFLOW_KAFKA_BOOTSTRAP"],
        "receiver": stack.receiver_url,
        "dashboard": stack.dashboard_url,
        "simulator": stack.simulator_url,
    }
    if stack.watch is not None:
        urls["broker-metrics"] = stack.watch.url
    text = discover.env_text(stack.env, run_dir, urls)
    discover.write(text, run_dir / "devstack.env", latest)
    for name, url in urls.items():
        print(f"{name}: {url}", flush=True)
    if stack.env.get("PARCELFLOW_DASHBOARD_AUTH") == "none":
        print("dashboard: open without login, because it listens on 127.0.0.1 only", flush=True)
    return text


def play_demo(stack: Stack, args: argparse.Namespace, run_dir: Path, started: float) -> Summary:
    """Send the demo orders, watch for their labels, write report.html; the summary."""
    from devstack.demo import Progress, Summary, send, watch
    from devstack.demo_data import make_demo
    from workers.dashboard.app import page

    now = int(time.time())
    orders = make_demo(args.orders, seed=args.seed, run_id=now % 100_000, now_s=now, flows=True)
    boxes = sum(len(o.boxes) for o in orders)
    print(f"parcelflow: sending {len(orders)} orders in {boxes} boxes", file=sys.stderr, flush=True)
    run_settings = stack.settings
    sent_at = time.monotonic()
    asyncio.run(send(orders, run_settings, stack.receiver_url, stack.simulator_url, stack.token))
    sent_s = time.monotonic() - sent_at
    progress = Progress.of(orders)
    asyncio.run(watch(run_settings, progress, timeout_s=args.timeout))
    summary = Summary(len(orders), boxes, progress, time.monotonic() - started, sent_s)
    summary.restarts = stack.restarts
    report = write_report(stack.dashboard_url, run_dir, page, len(progress.labels))
    if report is not None:
        print(f"parcelflow: report of the run in {report}", file=sys.stderr, flush=True)
    return summary


def keep_until_stopped(summary: Summary, text: str, latest: Path) -> None:
    """``up``: the summary so far, how to drive the stack by hand, then wait for Ctrl-C."""
    print("\n".join(summary.lines()))
    print(
        f"parcelflow: running. Drive it by hand with the values in {latest} "
        "(`set -a; . var/run/devstack.env; set +a`, see README); Ctrl-C stops everything.",
        file=sys.stderr,
        flush=True,
    )
    for line in text.splitlines():
        if line.startswith(("PARCELFLOW_API_TOKEN", "PARCELFLOW_TIKTOK_APP")):
            print(line, flush=True)
    wait_for_signal()


def verdict(summary: Summary, run_dir: Path) -> int:
    restarts = sum(summary.restarts.values())
    if restarts > MAX_RESTARTS:
        print(
            f"parcelflow: workers had to be restarted {restarts} times "
            f"(more than {MAX_RESTARTS}): see the logs in {run_dir}",
            file=sys.stderr,
        )
        return 1
    progress = summary.progress
    return 0 if progress.pending == 0 and progress.labeled_cancelled == 0 else 1


def write_report(dashboard_url: str, run_dir: Path, page: Any, labels: int) -> Path | None:
    """``report.html``: the dashboard page as it stands, readable without a server."""
    import urllib.request

    import orjson

    from workers.dashboard.app import LAG_EVERY_S

    deadline = time.monotonic() + 15
    seen_all_at: float | None = None
    while True:
        try:
            url = f"{dashboard_url}api/snapshot"
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local)
                snapshot = orjson.loads(response.read())
        except OSError as exc:
            print(f"parcelflow: no report: the dashboard did not answer ({exc})", file=sys.stderr)
            return None
        # the dashboard reads the topics on its own: wait until it has seen every label,
        # then for a lag read made after that (one every LAG_EVERY_S), so the backlog shown
        # is the final one
        now = time.monotonic()
        if seen_all_at is None and snapshot["totals"]["labels"] >= labels:
            seen_all_at = now
        lag_fresh = seen_all_at is not None and now - seen_all_at > LAG_EVERY_S + 0.5
        if now > deadline or lag_fresh:
            break
        time.sleep(0.5)
    path = run_dir / "report.html"
    path.write_text(page(snapshot))
    return path


def chaos_command(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.chaos import run_chaos, schedule
    from devstack.stack import StackError

    seconds = args.seconds if args.seconds is not None else settings.chaos_seconds
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    print(f"chaos: seed={seed} seconds={seconds:g} rate={args.rate:g}/s (logs in {run_dir})")
    print(f"chaos: replay with: parcelflow chaos --seed {seed} --seconds {seconds:g}")
    for fault in schedule(seed, seconds):
        print(f"chaos: planned {fault}")
    sys.stdout.flush()
    try:
        result = run_chaos(run_dir, seconds=seconds, seed=seed, rate=args.rate)
    except StackError as exc:
        print(f"parcelflow: the stack did not start: {exc}", file=sys.stderr)
        return 2
    for problem in result.problems[:20]:
        print(f"chaos: wrong: {problem}")
    print(f"chaos: restarts by worker: {result.restarts or 0}; seed={seed}")
    print(result.last_line(), flush=True)
    return 0 if result.ok else 1


def scale_command(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.scale import plan, run_scale
    from devstack.stack import StackError
    from workers import logs

    logs.configure("warning", json=False)  # this process's own lines: only what is wrong
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    print(
        f"scale: seed={seed} seconds={args.seconds:g} rate={args.rate:g}/s peak={args.peak} "
        f"(logs in {run_dir})"
    )
    for step in plan(args.seconds, args.peak, seed):
        print(f"scale: planned {step}")
    sys.stdout.flush()
    try:
        result = run_scale(run_dir, seconds=args.seconds, seed=seed, peak=args.peak, rate=args.rate)
    except StackError as exc:
        print(f"parcelflow: the stack did not start: {exc}", file=sys.stderr)
        return 2
    for problem in result.problems[:20]:
        print(f"scale: wrong: {problem}")
    for shop in result.unauthorized:
        print(f"scale: shop {shop} would have to authorize the app again")
    peak = ", ".join(f"{w} {n}" for w, n in result.peak.items())
    print(f"scale: most processes at once: {peak}; restarts: {result.restarts or 0}")
    print(
        f"scale: TikTok token refreshes {result.tiktok['refreshes']}, refused "
        f"{result.tiktok['refused_refreshes']}; seed={seed}"
    )
    print(result.last_line(), flush=True)
    return 0 if result.ok else 1


def soak_command(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.soak import run_soak
    from devstack.stack import StackError

    minutes = args.minutes if args.minutes is not None else settings.soak_minutes
    rate = args.rate if args.rate is not None else settings.soak_rate
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    print(f"soak: minutes={minutes:g} rate={rate:g}/s seed={seed} (logs in {run_dir})", flush=True)
    try:
        result = run_soak(
            run_dir,
            minutes=minutes,
            rate=rate,
            seed=seed,
            every_s=args.every_s,
            warmup_s=args.warmup_s,
            overrides={"SIM_LABEL_LATENCY_MEDIAN_S": str(args.label_latency)},
        )
    except StackError as exc:
        print(f"parcelflow: the stack did not start: {exc}", file=sys.stderr)
        return 2
    for window in result.windows:
        print(f"soak: {window}")
    for problem in result.verdict.problems[:20]:
        print(f"soak: wrong: {problem}")
    print(result.last_line(), flush=True)
    return 0 if result.ok else 1


def wait_for_signal() -> None:
    received = []
    signal.signal(signal.SIGTERM, lambda *_: received.append(1))
    try:
        while not received:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


def send_command(settings: Settings, args: argparse.Namespace) -> int:
    from devstack.send import send

    return send(settings, args)
