"""``parcelflow keys`` and ``parcelflow erase``: the buyer data commands."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
from typing import Any

from workers.settings import Settings


def add_keys(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="buyer data keys: make a local key (development), make the PKCS#11 token's "
        "key-encryption key, or list the data keys (never their values)",
        epilog="example: parcelflow keys list",
    )
    keys.add_argument("action", choices=["local", "kek", "list"])
    keys.set_defaults(func=keys_command)


def add_erase(sub: Any) -> None:
    erase = sub.add_parser(
        "erase",
        help="erase an order's or a shop's buyer data: data keys destroyed, labels deleted, "
        "join state tombstoned, an audit record written",
        epilog="example: parcelflow erase --order 576460000000000001 --reason 'GDPR request'",
    )
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--order", help="the TikTok order id")
    which.add_argument("--shop", help="the TikTok shop id")
    which.add_argument(
        "--cancel",
        metavar="REQUEST_ID",
        help="cancel an erasure not yet in effect (a de-authorization's, within its grace "
        "period): its request id, as `parcelflow topics tail buyer.erasures.v1` shows it",
    )
    erase.add_argument("--reason", default="", help="why (kept in the audit record)")
    erase.add_argument(
        "--wait-s", type=float, default=120.0, help="how long to wait for a labeler to do it"
    )
    erase.set_defaults(func=erase_command, client=True)


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "local":
        print(base64.b64encode(secrets.token_bytes(32)).decode())
        return 0
    if args.action == "kek":
        from workers.buyer.kek import Pkcs11Kek, key_service

        if settings.buyer_kek != "pkcs11":
            raise SystemExit("parcelflow keys kek: PARCELFLOW_BUYER_KEK is not pkcs11")
        service = key_service(settings, create=True)
        assert isinstance(service, Pkcs11Kek)  # noqa: S101 (pkcs11 above)
        asyncio.run(service.close())
        print(f"the token {settings.buyer_pkcs11_token!r} has {settings.buyer_pkcs11_key_label!r}")
        return 0
    return asyncio.run(list_keys(settings))


async def list_keys(settings: Settings) -> int:
    from schemas.buyer import DataKey
    from schemas.codec import decode
    from schemas.topics import BUYER_KEYS
    from workers.kafka import Topics, read_to_end
    from workers.plugins import adapt_kafka_clients

    adapt_kafka_clients(settings)
    live: dict[bytes, DataKey] = {}
    for record in await read_to_end(settings, Topics(settings)(BUYER_KEYS)):
        if record.key is None:
            continue
        key = decode(DataKey, record.value) if record.value is not None else None
        if isinstance(key, DataKey):
            live[record.key] = key
        else:
            live.pop(record.key, None)
    for key in sorted(live.values(), key=lambda k: (k.shop_id, k.created_at_ms)):
        shown = key.model_dump(exclude={"wrapped"})
        print(json.dumps(shown))
    return 0


def erase_command(settings: Settings, args: argparse.Namespace) -> int:
    from workers import logs
    from workers.buyer.erase import Target
    from workers.plugins import adapt_kafka_clients

    logs.configure(settings.log_level)  # log lines to stderr: stdout is the record

    if args.cancel:
        adapt_kafka_clients(settings)
        return asyncio.run(cancel(settings, args.cancel, args.reason))

    target = Target("order", args.order) if args.order else Target("shop", args.shop)
    if not target.ident.strip() or len(target.ident) > 128:
        raise SystemExit("parcelflow erase: an id is 1 to 128 characters")
    adapt_kafka_clients(settings)
    principal = f"cli:{os.environ.get('USER', 'unknown')}"[:64]
    done = asyncio.run(erase_and_wait(settings, target, principal, args.reason, args.wait_s))
    if done is None:
        print(
            f"parcelflow erase: asked; no labeler said it was done within {args.wait_s:g} s "
            "(is a labeler running?): it will be done when one runs",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(done))
    return 0


async def cancel(settings: Settings, request_id: str, reason: str) -> int:
    """Cancel a request not yet in effect; 1 if there is none such."""
    from schemas.buyer import Erasure
    from schemas.codec import decode
    from schemas.common import derived_id, now_ms
    from schemas.topics import ERASURES
    from workers.buyer.erase import ask
    from workers.kafka import Topics, make_producer, read_to_end

    found = None
    for record in await read_to_end(settings, Topics(settings)(ERASURES)):
        erasure = decode(Erasure, record.value)
        if isinstance(erasure, Erasure) and erasure.request_id == request_id:
            found = erasure if erasure.status == "requested" else None
    if found is None or found.not_before_ms <= now_ms():
        print(
            "parcelflow erase --cancel: no such request still to come (done, cancelled, or "
            "already in effect)",
            file=sys.stderr,
        )
        return 1
    cancelled = found.model_copy(
        update={
            "event_id": derived_id("cancelled", request_id),
            "status": "cancelled",
            "principal": f"cli:{os.environ.get('USER', 'unknown')}"[:64],
            "reason": reason[:512],
            "at_ms": now_ms(),
        }
    )
    producer = make_producer(settings)
    await producer.start()
    try:
        await ask(producer, settings, cancelled)
    finally:
        await producer.stop()
    print(json.dumps(cancelled.model_dump()))
    return 0


async def erase_and_wait(
    settings: Settings, target: Any, principal: str, reason: str, wait_s: float
) -> dict[str, Any] | None:
    """Ask for the erasure; the record of it done, or None if none came within ``wait_s``."""
    from aiokafka import TopicPartition

    from schemas.buyer import Erasure
    from schemas.codec import decode
    from schemas.topics import ERASURES
    from workers.buyer.erase import ask, requested
    from workers.kafka import Topics, groupless_consumer, make_producer, start_on_all

    topic = Topics(settings)(ERASURES)
    reader = groupless_consumer(settings)
    tps: list[TopicPartition] = await start_on_all(reader, topic)
    producer = make_producer(settings)
    try:
        ends = await reader.end_offsets(tps)
        for tp in tps:
            reader.seek(tp, ends[tp])
        await producer.start()
        request = requested(target, principal, reason)
        await ask(producer, settings, request)
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            for messages in (await reader.getmany(timeout_ms=500)).values():
                for message in messages:
                    done = decode(Erasure, message.value)
                    if (
                        isinstance(done, Erasure)
                        and done.status == "done"
                        and done.request_id == request.request_id
                    ):
                        return done.model_dump()
        return None
    finally:
        await producer.stop()
        await reader.stop()
