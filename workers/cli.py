"""``parcelflow``: one command, a subcommand per process.

parcelflow receiver | enricher | planner | labeler | auditor | dashboard | simulator
                    run one process
parcelflow run      start everything, send demo traffic, print a summary, stop
parcelflow up       the same, but keep running until Ctrl-C
parcelflow chaos    the same under a seeded schedule of kills, stops and broker pauses
parcelflow scale    the same while every worker is scaled 1 -> 3 -> 1 and killed once
parcelflow soak     steady traffic for a long time: latency and the broker every 5 minutes
parcelflow send     a signed webhook, a box or an order event to the receiver
parcelflow labels   a label record or document from the receiver; prune old ones
parcelflow failures / void   label failures (list, replay); void refusal
parcelflow topics   plan, apply, check or tail the topics; the Kafka ACLs of each worker
parcelflow tokens   TikTok tokens per shop: list, set, import a token file, make a key
parcelflow principals   callers of the HTTP API: list, or make a new one's token
parcelflow health   probe this host's worker (a container's HEALTHCHECK)
parcelflow config   print every setting as a Markdown table

`parcelflow COMMAND --help` shows a command's own flags and an example.
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
from typing import Any

from pydantic import BaseModel, SecretStr

from workers.settings import Settings
from workers.terminal import UsageError, safe


def worker(name: str) -> Any:
    def start(settings: Settings, args: argparse.Namespace) -> int:
        from workers import logs
        from workers.topics import TopicsMismatch

        logs.configure(settings.log_level)
        try:
            run_worker(name, settings)
        except TopicsMismatch as exc:
            print(f"parcelflow {name}: not starting: {exc}", file=sys.stderr)
            return 2
        return 0

    return start


def run_worker(name: str, settings: Settings) -> None:
    """Run one long-lived process until it stops, on uvloop where it is installed."""
    from workers.loop import new_event_loop

    def run_async(main: Any) -> None:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main)

    if name == "receiver":
        from workers.receiver.app import run as run_receiver

        run_receiver(settings)
    elif name == "enricher":
        from workers.enricher.worker import run as run_enricher

        run_async(run_enricher(settings))
    elif name == "planner":
        from workers.planner.app import run as run_planner

        run_planner(settings)
    elif name == "labeler":
        from workers.labeler.worker import run as run_labeler

        run_async(run_labeler(settings))
    elif name == "auditor":
        from workers.auditor.worker import run as run_auditor

        run_async(run_auditor(settings))
    elif name == "dashboard":
        from workers.dashboard.app import run as run_dashboard

        run_async(run_dashboard(settings))
    elif name == "simulator":
        from workers.simulator.app import run as run_simulator

        run_simulator(settings)


MAX_RESTARTS = 3  # `parcelflow run` fails past this many worker restarts


def demo(settings: Settings, args: argparse.Namespace, keep_running: bool) -> int:
    from workers.dashboard.app import page
    from workers.devstack import discover
    from workers.devstack.demo import Progress, Summary, send, watch
    from workers.devstack.demo_data import make_demo
    from workers.devstack.stack import Stack, StackError

    started = time.monotonic()
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    overrides = {}  # flags given win over exported PARCELFLOW_* variables
    if args.label_latency is not None:
        overrides["SIM_LABEL_LATENCY_MEDIAN_S"] = str(args.label_latency)
    if args.max_in_flight is not None:
        overrides["LABELER_MAX_IN_FLIGHT"] = str(args.max_in_flight)
    if args.label_formats:
        overrides["LABEL_FORMATS"] = json.dumps(args.label_formats.split(","))
    stack = Stack(run_dir, overrides, kafka_tls=args.kafka_tls, label_store=args.label_store)
    latest = Path(args.run_dir) / "devstack.env"
    print(f"parcelflow: starting the stack (logs in {run_dir})", file=sys.stderr, flush=True)
    try:
        with stack.running():
            urls = {
                "broker": stack.env["PARCELFLOW_KAFKA_BOOTSTRAP"],
                "receiver": stack.receiver_url,
                "dashboard": stack.dashboard_url,
                "simulator": stack.simulator_url,
            }
            text = discover.env_text(stack.env, run_dir, urls)
            discover.write(text, run_dir / "devstack.env", latest)
            for name, url in urls.items():
                print(f"{name}: {url}", flush=True)
            if stack.env.get("PARCELFLOW_DASHBOARD_AUTH") == "none":
                print(
                    "dashboard: open without login, because it listens on 127.0.0.1 only",
                    flush=True,
                )
            orders = make_demo(
                args.orders,
                seed=args.seed,
                run_id=int(time.time()) % 100_000,
                now_s=int(time.time()),
            )
            boxes = sum(len(o.boxes) for o in orders)
            print(
                f"parcelflow: sending {len(orders)} orders in {boxes} boxes",
                file=sys.stderr,
                flush=True,
            )
            run_settings = stack.settings
            sent_at = time.monotonic()
            asyncio.run(
                send(
                    orders,
                    run_settings,
                    stack.receiver_url,
                    stack.simulator_url,
                    stack.token,
                )
            )
            sent_s = time.monotonic() - sent_at
            progress = Progress(expected={o.order_id for o in orders})
            asyncio.run(watch(run_settings, progress, timeout_s=args.timeout))
            summary = Summary(len(orders), boxes, progress, time.monotonic() - started, sent_s)
            summary.restarts = stack.restarts
            report = write_report(stack.dashboard_url, run_dir, page, len(progress.labels))
            if report is not None:
                print(f"parcelflow: report of the run in {report}", file=sys.stderr, flush=True)
            if keep_running:
                print("\n".join(summary.lines()))
                print(
                    f"parcelflow: running. Drive it by hand with the values in {latest} "
                    "(`set -a; . var/run/devstack.env; set +a`, see README); Ctrl-C stops "
                    "everything.",
                    file=sys.stderr,
                    flush=True,
                )
                for line in text.splitlines():
                    if line.startswith(("PARCELFLOW_API_TOKEN", "PARCELFLOW_TIKTOK_APP")):
                        print(line, flush=True)
                wait_for_signal()
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
    if sum(summary.restarts.values()) > MAX_RESTARTS:
        print(
            f"parcelflow: workers had to be restarted {sum(summary.restarts.values())} times "
            f"(more than {MAX_RESTARTS}): see the logs in {run_dir}",
            file=sys.stderr,
        )
        return 1
    return 0 if summary.progress.pending == 0 else 1


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
    from workers.devstack.chaos import run_chaos, schedule
    from workers.devstack.stack import StackError

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
    from workers import logs
    from workers.devstack.scale import plan, run_scale
    from workers.devstack.stack import StackError

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
    from workers.devstack.soak import run_soak
    from workers.devstack.stack import StackError

    minutes = args.minutes if args.minutes is not None else settings.soak_minutes
    rate = args.rate if args.rate is not None else settings.soak_rate
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = Path(args.run_dir) / time.strftime("%Y%m%d-%H%M%S")
    print(f"soak: minutes={minutes:g} rate={rate:g}/s seed={seed} (logs in {run_dir})", flush=True)
    try:
        result = run_soak(run_dir, minutes=minutes, rate=rate, seed=seed, every_s=args.every_s)
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


def failures_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.labeler import operations

    if args.action == "list":
        found = asyncio.run(operations.failures(settings))
        print("job_id\torder_id\treason\tattempts\tmessage")
        for f in found:
            fields = (f.job_id, f.order_id, f.error_code, str(f.attempts), f.message)
            print("\t".join(safe(field) for field in fields))
        if not found:
            print("no failures")
        return 0
    if not args.job_id and not args.all:
        raise UsageError("name the jobs to replay with --job-id, or replay every one with --all")
    replayed = asyncio.run(operations.replay(settings, None if args.all else set(args.job_id)))
    for f in replayed:
        print(safe(f"replayed {f.job_id} (order {f.order_id}, failed with {f.error_code})"))
    missing = set(args.job_id or []) - {f.job_id for f in replayed}
    for job_id in sorted(missing):
        print(
            f"not replayed {safe(job_id)}: no replayable failure with that job id", file=sys.stderr
        )
    return 1 if missing else 0


def principals_command(settings: Settings, args: argparse.Namespace) -> int:
    """List principals (never their tokens), or make a token and the entry that holds
    only its SHA-256, for PARCELFLOW_PRINCIPALS or the principals file."""
    import hashlib
    import secrets

    from workers.auth import Principals

    if args.action == "list":
        found = Principals.from_settings(settings).entries
        for _, p in sorted(found, key=lambda e: e[1].name):
            where = "*" if p.warehouses is None else ",".join(sorted(p.warehouses))
            print(f"{p.name}\troles={','.join(sorted(p.roles))}\twarehouses={where}")
        if not found:
            print("no principals: set PARCELFLOW_PRINCIPALS or PARCELFLOW_PRINCIPALS_FILE")
        return 0
    if not args.name or not args.role:
        raise UsageError("principals token needs --name and at least one --role")
    token = secrets.token_urlsafe(32)
    entry: dict[str, object] = {
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "roles": sorted(set(args.role)),
    }
    if args.warehouse:
        entry["warehouses"] = sorted(set(args.warehouse))
    from pydantic import ValidationError

    from workers.auth import problems
    from workers.settings import PRINCIPAL_NAME, PrincipalSpec

    if not PRINCIPAL_NAME.fullmatch(args.name):
        raise UsageError("principals token: --name is 1 to 64 of A-Z a-z 0-9 . _ @ -")
    try:
        PrincipalSpec.model_validate(entry)
    except ValidationError as exc:
        raise UsageError(f"principals token: {problems(exc)}") from None
    print(f"token (give it to the caller; it is not stored anywhere): {token}", file=sys.stderr)
    print(json.dumps({args.name: entry}))
    return 0


def void_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.labeler.operations import VOID_REFUSAL

    print(f"cannot void {args.job_id}: {VOID_REFUSAL}", file=sys.stderr)
    return 3


def tokens_command(settings: Settings, args: argparse.Namespace) -> int:
    """TikTok tokens in tiktok.tokens.v1: list shops, set one shop's tokens (read from
    stdin, never argv), import a token file of earlier versions, or make a key."""
    from cryptography.fernet import Fernet

    if args.action == "key":
        print(Fernet.generate_key().decode())
        return 0
    return asyncio.run(tokens_async(settings, args))


async def tokens_async(settings: Settings, args: argparse.Namespace) -> int:
    from workers.kafka import writer_name
    from workers.tiktok.tokens import (
        ShopAuth,
        TokenKeyMissing,
        import_missing,
        read_token_file,
        shared_tokens,
    )
    from workers.topics import ensure_topics

    given: dict[str, Any] = {}
    if args.action == "set":
        if not args.shop_id:
            raise UsageError("tokens set needs --shop-id")
        try:
            given = json.loads(sys.stdin.read())
        except ValueError:
            given = {}
        if not isinstance(given, dict) or not {"access_token", "refresh_token"} <= set(given):
            raise UsageError(
                'tokens set: stdin must be JSON with "access_token" and "refresh_token" '
                "(the data of TikTok's token answer)"
            )
    try:
        await ensure_topics(settings)
        async with shared_tokens(settings, writer_name("cli")) as store:
            if args.action == "list":
                print("shop\tcipher\texpires_at\tstate")
                for key, auth in sorted(store.shops.items()):
                    state = f"MUST RE-AUTHORIZE: {auth.unauthorized}" if auth.unauthorized else "ok"
                    print(safe(f"{key}\t{auth.shop_cipher}\t{auth.access_expires_at}\t{state}"))
                if not store.shops:
                    print("no shop has tokens yet")
            elif args.action == "import":
                path = Path(args.file) if args.file else settings.tiktok_token_file
                found = read_token_file(path) if path is not None else {}
                done = await import_missing(store, found, str(path))
                print(f"imported {len(done)} of {len(found)} shops from {path}: {done}")
            else:
                auth = ShopAuth(
                    access_token=given["access_token"],
                    refresh_token=given["refresh_token"],
                    shop_cipher=args.shop_cipher or given.get("shop_cipher", ""),
                    access_expires_at=int(given.get("access_token_expire_in", 0)),
                    refresh_expires_at=int(given.get("refresh_token_expire_in", 0)),
                )
                await store.put(args.shop_id, auth)
                print(f"tokens of shop {safe(args.shop_id)} written: every enricher uses them")
    except TokenKeyMissing as exc:
        raise UsageError(str(exc)) from None
    return 0


def config_table(settings: Settings, args: argparse.Namespace) -> int:
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        start = text.find("| variable | default | meaning |")
        if start < 0:
            raise UsageError(f"--readme {safe(args.readme)}: no settings table in it")
        end = text.find("\n\n", start)
        rest = text[end:] if end >= 0 else "\n"  # the table may end the file
        readme.write_text(text[:start] + "\n".join(settings_rows()) + rest)
        return 0
    print("\n".join(settings_rows(settings)))
    return 0


def shown(value: object) -> str:
    """A setting's value as a table shows it; secrets masked."""
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        return "****" if value.get_secret_value() else "(empty)"
    if isinstance(value, dict) and any(isinstance(v, SecretStr) for v in value.values()):
        return json.dumps({k: "****" for k in value})
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "(empty)" if value == "" else str(value)


def settings_rows(settings: Settings | None = None) -> list[str]:
    """Every setting: its default (docs/configuration.md), or the value in effect."""
    default = Settings.model_construct()  # defaults only: no environment read
    title = (
        "| variable | default | meaning |"
        if settings is None
        else "| variable | value | set (differs from the default) |"
    )
    rows = [title, "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if settings is None:
            rows.append(
                f"| `PARCELFLOW_{name.upper()}` | `{shown(getattr(default, name))}` | "
                f"{info.description} |"
            )
        else:
            value = getattr(settings, name)
            note = "" if value == getattr(default, name) else "set"
            rows.append(f"| `PARCELFLOW_{name.upper()}` | `{shown(value)}` | {note} |")
    return rows


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="parcelflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = root.add_subparsers(dest="command", required=True)
    for name in ("receiver", "enricher", "planner", "labeler", "auditor", "dashboard", "simulator"):
        sub.add_parser(
            name, help=f"run the {name}", epilog=f"example: parcelflow {name}  (PARCELFLOW_* set)"
        ).set_defaults(func=worker(name))
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
            "--kafka-tls",
            action="store_true",
            help="every Kafka client over TLS (mutual TLS), with a throwaway CA made at start",
        )
        p.set_defaults(func=lambda s, a, keep=keep: demo(s, a, keep))
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
    soak.add_argument("--run-dir", default="var/run", help="where logs and labels go (var/run)")
    soak.set_defaults(func=soak_command)
    failures = sub.add_parser(
        "failures",
        help="list or replay label jobs that failed for good",
        epilog="example: parcelflow failures replay --job-id job-576460000000000001",
    )
    failures.add_argument("action", choices=["list", "replay"])
    failures.add_argument("--job-id", action="append", help="a job to replay (repeatable)")
    failures.add_argument("--all", action="store_true", help="replay every replayable failure")
    failures.set_defaults(func=failures_command)
    void = sub.add_parser(
        "void",
        help="void a label (refused: TikTok Shop labels are voided in Seller Center)",
        epilog="example: parcelflow void job-576460000000000001",
    )
    void.add_argument("job_id")
    void.set_defaults(func=void_command)
    tokens = sub.add_parser(
        "tokens",
        help="TikTok tokens per shop (tiktok.tokens.v1): list, set after a shop "
        "re-authorized, import a token file, or make a key",
        epilog='example: echo \'{"access_token": "...", "refresh_token": "..."}\' | '
        "parcelflow tokens set --shop-id 7495 --shop-cipher ROW_x",
    )
    tokens.add_argument("action", choices=["list", "set", "import", "key"])
    tokens.add_argument("--file", help="import: the token file (PARCELFLOW_TIKTOK_TOKEN_FILE)")
    tokens.add_argument("--shop-id", help="the shop whose tokens are set")
    tokens.add_argument("--shop-cipher", default="", help="its shop cipher")
    tokens.set_defaults(func=tokens_command)
    topics = sub.add_parser(
        "topics",
        help="the topics parcelflow needs: plan (compare with the cluster), apply (create "
        "and alter what may be), check (exit 1 on what a worker would refuse), tail (print "
        "records), acls (each worker's Kafka ACLs)",
        epilog="example: parcelflow topics tail labels.v1 --from-end --follow --limit 10",
    )
    topics.add_argument("action", choices=["plan", "apply", "check", "tail", "acls"])
    topics.add_argument("topic", nargs="?", help="tail: the topic, e.g. labels.v1")
    topics.add_argument("--follow", action="store_true", help="tail: keep printing new records")
    topics.add_argument(
        "--from-end", action="store_true", help="tail: only records written from now on"
    )
    topics.add_argument("--limit", type=int, help="tail: stop after this many records")
    topics.add_argument("--key", help="tail: only records with this key (an order id)")
    topics.add_argument(
        "--format",
        choices=["commands", "table"],
        default="commands",
        help="acls: kafka-acls.sh commands (default) or a Markdown table",
    )
    topics.set_defaults(func=topics_command)

    principals = sub.add_parser(
        "principals",
        help="callers of the HTTP API: list them, or make a new one's token",
        epilog="example: parcelflow principals token --name station-a1 --role boxes "
        "--role labels --warehouse WH-A",
    )
    principals.add_argument("action", choices=["list", "token"])
    principals.add_argument("--name", help="token: the new principal's name, e.g. station-a1")
    principals.add_argument(
        "--role",
        action="append",
        choices=["orders", "boxes", "labels", "operator"],
        help="token: a role (repeatable)",
    )
    principals.add_argument(
        "--warehouse", action="append", help="token: a warehouse it acts in (repeatable; *: all)"
    )
    principals.set_defaults(func=principals_command)

    labels = sub.add_parser(
        "labels",
        help="get a label (record or document); prune old ones",
        epilog="example: parcelflow labels get --box 1001-A --warehouse WH-A -o 1001-A.pdf",
    )
    labels.add_argument("action", choices=["get", "prune"])
    labels.add_argument("job_id", nargs="?", help="get: the label job's id")
    labels.add_argument("--box", help="get: the box whose document to fetch")
    labels.add_argument("--format", choices=["pdf", "png", "zpl"], help="get: the format")
    labels.add_argument(
        "--warehouse", help="get --box: the box's warehouse (a station of one may leave it out)"
    )
    labels.add_argument(
        "--order-id", help="get --box: the box's order, once two orders used its box id"
    )
    labels.add_argument("-o", "--output", help="get: write the document to this file")
    labels.add_argument(
        "--url", help="get: the receiver (http://127.0.0.1:PARCELFLOW_RECEIVER_PORT)"
    )
    labels.add_argument("--older-than", default="30d", help="prune: age, e.g. 30d, 12h (30d)")
    labels.set_defaults(func=labels_command)

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
    send.set_defaults(func=send_command)

    health = sub.add_parser(
        "health",
        help="probe this host's worker: exit 0 if its /healthz (or /readyz) answers 200",
        epilog="example: parcelflow health --ready",
    )
    health.add_argument("--ready", action="store_true", help="ask /readyz instead")
    health.add_argument(
        "--receiver", action="store_true", help="the receiver's port, not the ops port"
    )
    health.set_defaults(func=health_command)

    config = sub.add_parser(
        "config",
        help="print every setting as a Markdown table",
        epilog="example: PARCELFLOW_LOG_LEVEL=debug parcelflow config",
    )
    config.add_argument(
        "--readme", help="rewrite the settings table in this file instead (docs/configuration.md)"
    )
    config.set_defaults(func=config_table)
    return root


def health_command(settings: Settings, args: argparse.Namespace) -> int:
    """A container's HEALTHCHECK: the worker in this container, on loopback."""
    import urllib.error
    import urllib.request

    port = settings.receiver_port if args.receiver else settings.ops_port
    if not port:
        print("no port to probe: set PARCELFLOW_OPS_PORT", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            print(answer.read().decode())
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def labels_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.devstack.client import labels_get, labels_prune

    return labels_get(settings, args) if args.action == "get" else labels_prune(settings, args)


def send_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.devstack.client import send

    return send(settings, args)


def topics_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.topics import apply, current, render

    if args.action == "acls":
        from workers import acls

        found = acls.acls(settings)
        if args.format == "table":
            print(acls.as_table(found))
        else:
            print(acls.as_commands(found, settings.kafka_bootstrap))
        return 0
    if args.action == "tail":
        from workers.devstack.client import tail

        if not args.topic:
            raise UsageError("topics tail needs a topic, e.g. labels.v1")
        return tail(settings, args)

    if args.action == "apply":
        rows = asyncio.run(apply(settings))
    else:
        rows = asyncio.run(current(settings))
    print(render(rows))
    problems = [p for row in rows for p in row.problems]
    for problem in problems:
        print(f"problem: {problem}")
    if args.action == "plan":
        return 0
    print("ok: every topic is as parcelflow needs" if not problems else "not ok")
    return 1 if problems else 0


CLIENTS = {
    "failures",
    "tokens",
    "topics",
    "send",
    "labels",
    "config",
    "void",
    "principals",
}  # commands of a user


def load_settings() -> Settings:
    """The settings, or exit 2 with one line per problem: the setting and what is wrong,
    never the value (it may be a secret)."""
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings()
    except SettingsError as exc:  # a value that is not the JSON its setting takes
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"PARCELFLOW_{field.group(1).upper()}" if field else "a setting"
        print(f"parcelflow: {name}: not valid JSON for this setting", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            where = err["loc"][0] if err["loc"] else ""
            name = f"PARCELFLOW_{str(where).upper()}" if where else "settings"
            rest = ".".join(str(p) for p in err["loc"][1:])
            message = err["msg"].removeprefix("Value error, ")
            print(f"parcelflow: {name}{'.' + rest if rest else ''}: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # Everything parcelflow writes (labels with addresses, tokens, logs, var/) is for its
    # own user only: files 0600, folders 0700, in every process it starts.
    os.umask(0o077)
    if args.command in CLIENTS:
        from workers.devstack.discover import use_running_devstack

        used = use_running_devstack()
        if used is not None and args.command != "config":
            print(f"parcelflow: using the running devstack ({used})", file=sys.stderr)
    settings = load_settings()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.command not in CLIENTS:
        sys.exit(args.func(settings, args))

    import logging

    from aiokafka.errors import KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it
    try:
        code = args.func(settings, args)
    except UsageError as exc:
        print(f"parcelflow {args.command}: {exc}", file=sys.stderr)
        code = 2
    except (KafkaError, OSError) as exc:
        if args.command in ("send", "labels") and not isinstance(exc, KafkaError):
            where = f"the receiver at http://127.0.0.1:{settings.receiver_port}"
            fix = "give --url, or set PARCELFLOW_RECEIVER_PORT"
        else:
            where, fix = f"Kafka at {settings.kafka_bootstrap}", "set PARCELFLOW_KAFKA_BOOTSTRAP"
        print(
            f"parcelflow {args.command}: cannot reach {where} ({type(exc).__name__}): start "
            f"the devstack (make up; commands run in the repository find it) or {fix}",
            file=sys.stderr,
        )
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
