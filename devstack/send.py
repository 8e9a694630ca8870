"""``parcelflow send``: drive a stack by hand.

``send`` builds valid requests from flags (or takes a JSON file) and posts them to the
receiver: TikTok webhooks signed with the app key and secret (the order goes to the
simulator first, so the enricher finds it), order and box events with a bearer token.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from devstack.demo_data import order_with
from schemas.box import BoxClosed, BoxItem
from schemas.common import Dimensions, Weight, now_ms
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

    order = order_with(args.order_id, items(args.item), int(time.time()))
    url = f"http://127.0.0.1:{settings.sim_port}/_sim/tiktok/orders"
    request = urllib.request.Request(url, data=orjson.dumps([order]), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (local simulator)
        print(f"PUT {url} -> {response.status} (order {args.order_id} in the simulator)")
