"""``parcelflow topics tail`` and ``parcelflow labels``: watch a stack by hand.

``tail`` prints a topic's records, decoded, one JSON per line; ``labels`` fetches a label
record or document from the receiver, or prunes old ones from the label store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.topics import ALL_TOPICS
from workers.kafka import Topics
from workers.kafka_auth import client_options
from workers.plugins import adapt_kafka_clients
from workers.settings import Settings
from workers.terminal import UsageError, safe


def tail(settings: Settings, args: argparse.Namespace) -> int:
    known = {spec.name: spec for spec in ALL_TOPICS}
    if args.topic not in known:
        raise UsageError(f"unknown topic {safe(args.topic)!r}; one of: {', '.join(sorted(known))}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit: a number of records, at least 1")
    topic = Topics(settings)(known[args.topic])
    adapt_kafka_clients(settings)
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
