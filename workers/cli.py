"""``parcelflow``: one command, a subcommand per process.

parcelflow receiver | enricher | planner | labeler | auditor | dashboard
                    run one process
The devstack's commands (installed with it):
parcelflow run      start everything, send demo traffic, print a summary, stop
parcelflow up       the same, but keep running until Ctrl-C
parcelflow chaos    the same under a seeded schedule of kills, stops and broker pauses
parcelflow scale    the same while every worker is scaled 1 -> 3 -> 1 and killed once
parcelflow soak     steady traffic for a long time: latency and the broker every 5 minutes
parcelflow send     a signed webhook, a box or an order event to the receiver
parcelflow simulator   the simulated TikTok Shop and Shipium APIs
Everywhere:
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
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from workers.errors import ConfigError
from workers.plugins import hooks
from workers.settings import Settings
from workers.terminal import UsageError, safe

WORKERS = ("receiver", "enricher", "planner", "labeler", "auditor", "dashboard")


def worker(name: str) -> Any:
    def start(settings: Settings, args: argparse.Namespace) -> int:
        from workers import logs
        from workers.topics import TopicsMismatch

        logs.configure(settings.log_level)
        try:
            preflight(name, settings)
            run_worker(name, settings)
        except (TopicsMismatch, ConfigError) as exc:
            print(f"parcelflow {name}: not starting: {exc}", file=sys.stderr)
            return 2
        return 0

    return start


def preflight(name: str, settings: Settings) -> None:
    """The settings a worker cannot start without, checked before it connects to anything:
    ConfigError with what is wrong (never a value)."""
    from workers.auth import Principals
    from workers.buyer import kek
    from workers.tiktok.tokens import Sealer

    if name in ("receiver", "enricher", "labeler"):  # they seal or open buyer data
        kek.check(settings)
    if name in ("receiver", "labeler"):  # they read or write the label store
        from workers.labels.store import check as check_store

        check_store(settings)
    if name == "receiver":
        from workers.receiver.app import check_settings

        check_settings(settings)
        Principals.from_settings(settings)
    elif name == "dashboard":
        from workers.dashboard.access import Access

        Access(settings, Principals.from_settings(settings))
    elif name == "enricher":
        if not (settings.tiktok_app_key and settings.tiktok_app_secret.get_secret_value()):
            raise ConfigError(
                "PARCELFLOW_TIKTOK_APP_KEY and PARCELFLOW_TIKTOK_APP_SECRET must be set: the "
                "enricher signs every TikTok call"
            )
        Sealer(settings.tiktok_token_key)
    elif name == "labeler":
        uses = settings.providers_in_use()
        if "shipium" in uses and not settings.shipium_api_key.get_secret_value():
            raise ConfigError(
                "PARCELFLOW_SHIPIUM_API_KEY must be set: labels come from Shipium "
                "(PARCELFLOW_LABEL_PROVIDER(S))"
            )
        if "tiktok" in uses:
            if not (settings.tiktok_app_key and settings.tiktok_app_secret.get_secret_value()):
                raise ConfigError(
                    "PARCELFLOW_TIKTOK_APP_KEY and PARCELFLOW_TIKTOK_APP_SECRET must be set: "
                    "some shops' labels come from TikTok Shipping"
                )
            Sealer(settings.tiktok_token_key)


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


def iso_time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds")


def failures_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers.labeler import operations

    if args.action == "held":
        held = asyncio.run(operations.held(settings))
        print("order_id\tbox_id\treleased_at\treason")
        for plan in held:
            at = iso_time(plan.release_at_ms) if plan.release_at_ms else "when TikTok answers"
            print("\t".join(safe(field) for field in (plan.order_id, plan.box_id, at, plan.reason)))
        if not held:
            print("no order held")
        return 0
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
    """Every setting by section: its default (docs/configuration.md), or the value in
    effect."""
    from workers.settings import SECTIONS, own_fields

    default = Settings.model_construct()  # defaults only: no environment read
    title = (
        "| variable | default | meaning |"
        if settings is None
        else "| variable | value | set (differs from the default) |"
    )
    rows = [title, "|---|---|---|"]
    for section in SECTIONS:
        rows.append(
            f"| **{(section.__doc__ or section.__name__).splitlines()[0].rstrip('.')}** | | |"
        )
        for name in own_fields(section):
            variable = f"`PARCELFLOW_{name.upper()}`"
            if settings is None:
                meaning = Settings.model_fields[name].description
                rows.append(f"| {variable} | `{shown(getattr(default, name))}` | {meaning} |")
            else:
                value = getattr(settings, name)
                note = "" if value == getattr(default, name) else "set"
                rows.append(f"| {variable} | `{shown(value)}` | {note} |")
    return rows


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="parcelflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = root.add_subparsers(dest="command", required=True)
    for name in WORKERS:
        sub.add_parser(
            name, help=f"run the {name}", epilog=f"example: parcelflow {name}  (PARCELFLOW_* set)"
        ).set_defaults(func=worker(name))
    from workers.buyer.commands import add_erase, add_keys

    for add in (
        add_failures,
        add_tokens,
        add_topics,
        add_principals,
        add_labels,
        add_health,
        add_keys,
        add_erase,
    ):
        add(sub)
    for add_commands in hooks("add_commands"):  # the devstack's run, up, chaos, send...
        add_commands(sub)
    add_config(sub)
    return root


def add_failures(sub: Any) -> None:
    """``failures`` and ``void``."""
    failures = sub.add_parser(
        "failures",
        help="list or replay label jobs that failed for good",
        epilog="example: parcelflow failures replay --job-id job-576460000000000001",
    )
    failures.add_argument(
        "action",
        choices=["list", "replay", "held"],
        help="held: complete orders waiting before their label (TikTok's buyer remorse "
        "window, a pending cancel request) and when they are released",
    )
    failures.add_argument("--job-id", action="append", help="a job to replay (repeatable)")
    failures.add_argument("--all", action="store_true", help="replay every replayable failure")
    failures.set_defaults(func=failures_command, client=True)
    void = sub.add_parser(
        "void",
        help="void a label (refused: TikTok Shop labels are voided in Seller Center)",
        epilog="example: parcelflow void job-576460000000000001",
    )
    void.add_argument("job_id")
    void.set_defaults(func=void_command, client=True)


def add_tokens(sub: Any) -> None:
    """``tokens``."""
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
    tokens.set_defaults(func=tokens_command, client=True)


def add_topics(sub: Any) -> None:
    """``topics``."""
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
    topics.set_defaults(func=topics_command, client=True)


def add_principals(sub: Any) -> None:
    """``principals``."""
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
    principals.set_defaults(func=principals_command, client=True)


def add_labels(sub: Any) -> None:
    """``labels``."""
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
    labels.set_defaults(func=labels_command, client=True)


def add_health(sub: Any) -> None:
    """``health``."""
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


def add_config(sub: Any) -> None:
    """``config``."""
    config = sub.add_parser(
        "config",
        help="print every setting as a Markdown table",
        epilog="example: PARCELFLOW_LOG_LEVEL=debug parcelflow config",
    )
    config.add_argument(
        "--readme", help="rewrite the settings table in this file instead (docs/configuration.md)"
    )
    config.set_defaults(func=config_table, client=True)


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
    from workers.tools import labels_get, labels_prune

    return labels_get(settings, args) if args.action == "get" else labels_prune(settings, args)


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
        from workers.tools import tail

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
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["station"]:  # the print agent: a package of its own (station/)
        try:
            from parcelflow_station.cli import main as station
        except ImportError:
            sys.exit("parcelflow station: install the agent: pip install ./station")
        station(given[1:])
        return
    args = parser().parse_args(argv)
    # Everything parcelflow writes (labels with addresses, tokens, logs, var/) is for its
    # own user only: files 0600, folders 0700, in every process it starts.
    os.umask(0o077)
    client = getattr(args, "client", False)  # a user's command, not a long-lived process
    if client:
        for find_settings in hooks("find_settings"):  # a running devstack's, say
            used = find_settings()
            if used is not None and args.command != "config":
                print(f"parcelflow: using {used}", file=sys.stderr)
    settings = load_settings()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_client(settings, args) if client else args.func(settings, args))


def run_client(settings: Settings, args: argparse.Namespace) -> int:
    """A user's command: exit 2 with one line for a usage mistake or a broker or receiver
    out of reach, never a traceback."""
    import logging

    from aiokafka.errors import KafkaError

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the one line below says it
    try:
        return int(args.func(settings, args))
    except UsageError as exc:
        print(f"parcelflow {args.command}: {exc}", file=sys.stderr)
        return 2
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
        return 2


if __name__ == "__main__":
    main()
