"""``parcelflow send`` and ``parcelflow topics tail``: drive and watch a stack by hand.

``send`` builds valid requests from flags (or takes a JSON file) and posts them to the
receiver: TikTok webhooks signed with the app key and secret, order and box events with
the ingest bearer token. ``tail`` prints a topic's records, decoded, one JSON per line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.box import BoxClosed, BoxItem
from schemas.common import Dimensions, Weight, now_ms
from schemas.topics import ALL_TOPICS
from workers.broker.offsets import install_end_offsets_correction
from workers.devstack.demo_data import order_with
from workers.kafka import Topics
from workers.kafka_auth import client_options
from workers.settings import Settings
from workers.terminal import UsageError, safe
from workers.tiktok.signing import webhook_signature


def items(pairs: list[str]) -> dict[str, int]:
    """``SKU=QTY`` flags (``SKU`` alone: one unit)."""
    out: dict[str, int] = {}
    for pair in pairs:
        sku, _, qty = pair.partition("=")
        if not sku.strip() or (qty and not (qty.isdigit() and 1 <= int(qty) <= 10_000)):
            raise UsageError(f"--item {safe(pair)!r}: use SKU=QTY with QTY from 1 to 10000")
        out[sku] = out.get(sku, 0) + (int(qty) if qty else 1)
    return out


def body_of(path: str | None) -> Any:
    """The JSON of ``--file``, or None without one."""
    if path is None:
        return None
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise UsageError(f"--file {safe(path)}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--file {safe(path)}: cannot read it ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--file {safe(path)}: not valid JSON ({exc})") from None


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(url, data=body, headers=headers) as response,
    ):
        text = await response.text()
        print(f"POST {url} -> {response.status} {text.strip()}")
        return 0 if response.status < 300 else 1


def send(settings: Settings, args: argparse.Namespace) -> int:
    receiver = args.url or f"http://127.0.0.1:{settings.receiver_port}"
    bearer = settings.api_token.get_secret_value() if settings.api_token else ""
    headers = {"Authorization": f"Bearer {bearer}", "content-type": "application/json"}
    given: Any = body_of(args.file)
    if args.what == "webhook":
        if given is None:
            if not (args.order_id and args.item):
                raise UsageError(
                    "send webhook needs --order-id and --item SKU=QTY (the order's units, "
                    "loaded into the simulated TikTok Shop first), or --file"
                )
            load_order(settings, args)
            given = {
                "type": args.type,
                "tts_notification_id": f"ntf-{args.order_id}-{int(time.time())}",
                "shop_id": args.shop_id,
                "timestamp": int(time.time()),
                "data": {
                    "order_id": args.order_id,
                    "order_status": args.status,
                    "is_on_hold_order": False,
                    "update_time": int(time.time()),
                },
            }
        raw = orjson.dumps(given)
        secret = settings.tiktok_app_secret.get_secret_value()
        signature = webhook_signature(settings.tiktok_app_key, secret, raw)
        return asyncio.run(post(f"{receiver}/webhooks/tiktok", raw, {"Authorization": signature}))
    if args.what == "box":
        if given is None:
            if not (args.order_id and args.box_id and args.item):
                raise UsageError("send box needs --order-id, --box-id and --item (or --file)")
            packed = items(args.item)
            given = BoxClosed(
                event_id=f"box-{args.box_id}-{now_ms()}",
                box_id=args.box_id,
                order_id=args.order_id,
                station_id=args.station,
                items=[BoxItem(sku=s, quantity=q) for s, q in packed.items()],
                weight=Weight(value=args.weight_lb),
                dimensions=Dimensions(length=12, width=9, height=6),
                closed_at_ms=now_ms(),
            ).model_dump(mode="json")
        return asyncio.run(post(f"{receiver}/v1/boxes", orjson.dumps(given), headers))
    if given is None:
        raise UsageError("send order needs --file: an order event (schemas/json/orders.v1.json)")
    return asyncio.run(post(f"{receiver}/v1/orders", orjson.dumps(given), headers))


def load_order(settings: Settings, args: argparse.Namespace) -> None:
    """Give the simulator's TikTok an order with these items (devstack only)."""
    import urllib.request

    order = order_with(args.order_id, items(args.item), int(time.time()))
    url = f"http://127.0.0.1:{settings.sim_port}/_sim/tiktok/orders"
    request = urllib.request.Request(url, data=orjson.dumps([order]), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (local simulator)
        print(f"PUT {url} -> {response.status} (order {args.order_id} in the simulator)")


def tail(settings: Settings, args: argparse.Namespace) -> int:
    known = {spec.name: spec for spec in ALL_TOPICS}
    if args.topic not in known:
        raise UsageError(f"unknown topic {safe(args.topic)!r}; one of: {', '.join(sorted(known))}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit: a number of records, at least 1")
    topic = Topics(settings)(known[args.topic])
    if settings.kafka_embedded:
        install_end_offsets_correction(client_options(settings))
    return asyncio.run(follow(settings, topic, args.key, args.follow, args.from_end, args.limit))


async def follow(
    settings: Settings,
    topic: str,
    key: str | None,
    forever: bool,
    from_end: bool = False,
    limit: int | None = None,
) -> int:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            print(f"topic {topic} does not exist", file=sys.stderr)
            return 1
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if from_end:  # only what comes from now on
            for tp in tps:
                consumer.seek(tp, ends[tp])
        else:
            await consumer.seek_to_beginning(*tps)
        wanted = key.encode() if key is not None else None
        printed = 0
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    if wanted is None or m.key == wanted:
                        print(safe(line(m)), flush=True)
                        printed += 1
                        if limit is not None and printed >= limit:
                            return 0
            if not forever and all(await positions(consumer, tps, ends)):
                return 0
    finally:
        await consumer.stop()


async def positions(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
) -> list[bool]:
    return [await consumer.position(tp) >= ends[tp] for tp in tps]


def line(m: Any) -> str:
    try:
        value: Any = orjson.loads(m.value) if m.value is not None else None
    except orjson.JSONDecodeError:
        value = {"undecodable_bytes": len(m.value)}
    if isinstance(value, dict) and "value_b64" in value:  # a dead letter: its original too
        value = value | {"original": original(value["value_b64"])}
    head = {
        "partition": m.partition,
        "offset": m.offset,
        "key": m.key.decode(errors="replace") if m.key is not None else None,
    }
    return orjson.dumps(head | {"value": value}).decode()


def original(b64: object) -> Any:
    """A dead letter's original bytes: the JSON when they parse, else base64 with a note."""
    import base64

    try:
        raw = base64.b64decode(str(b64), validate=True)
    except ValueError:
        return {"note": "not base64", "value_b64": b64}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"note": "not JSON: the bytes, as base64", "value_b64": b64}


def labels_get(settings: Settings, args: argparse.Namespace) -> int:
    """A label record (JSON) or document, from the receiver's fetch API."""
    import urllib.error
    import urllib.parse
    import urllib.request

    base = args.url or f"http://127.0.0.1:{settings.receiver_port}"
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url {base!r}: an http:// or https:// address")

    def quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    if args.job_id and args.box:
        path = f"/v1/labels/{quote(args.job_id)}/{quote(args.box)}"
    elif args.box:
        query = {"warehouse": args.warehouse, "order_id": args.order_id}
        path = f"/v1/boxes/{quote(args.box)}/label"
        given = {k: v for k, v in query.items() if v}
        if given:
            path += "?" + urllib.parse.urlencode(given)
    elif args.job_id:
        path = f"/v1/labels/{quote(args.job_id)}"
    else:
        raise UsageError("labels get needs a JOB_ID, a --box BOX_ID, or both")
    if args.format and args.box:
        path += ("&" if "?" in path else "?") + f"format={quote(args.format)}"
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    headers = {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(base + path, headers=headers)  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our API)
            data = response.read()
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace")
        print(safe(f"GET {path} -> {exc.code} {answer}"), file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {len(data)} bytes to {args.output}")
    elif args.box and sys.stdout.isatty():
        print(f"{len(data)} bytes: give -o FILE to save the document", file=sys.stderr)
    elif args.box:
        sys.stdout.buffer.write(data)
    else:
        text = orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
        print("\n".join(safe(row) for row in text.splitlines()))
    return 0


def duration_s(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` (or plain seconds)."""
    units = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
    text = text.strip().lower()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def labels_prune(settings: Settings, args: argparse.Namespace) -> int:
    """Delete the folder store's documents and records older than ``--older-than``."""
    if settings.label_store != "folder":
        raise UsageError(
            "labels prune works on the folder store; an object store prunes itself with a "
            "lifecycle rule (see README)"
        )
    try:
        cutoff = time.time() - duration_s(args.older_than)
    except ValueError:
        raise UsageError(f"--older-than {args.older_than!r}: use e.g. 30d, 12h, 90m") from None
    root = settings.label_dir
    removed = kept = 0
    for path in root.rglob("*") if root.exists() else ():
        if path.is_file():
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
            else:
                kept += 1
    print(f"removed {removed} files older than {args.older_than} from {root}; kept {kept}")
    return 0
