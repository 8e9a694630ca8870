"""Label events: ``GET /v1/labels/events``, a Server-Sent Events stream of the labels
made for the caller's warehouses, for packing stations and their print agents.

- One event per label (``event: label``), as JSON: job, order, and its parcels the caller
  may see (box, warehouse, station, tracking id, formats and the path to fetch the
  document). ``?station=ID`` keeps only the boxes that station closed; ``?from=start``
  starts at the oldest label kept (default: labels made from now on). The first event,
  ``event: ready``, says where the stream starts.
- Resumable: each event's id is where the stream stands on every partition of
  ``labels.v1`` (``<offset>.<offset>...``, one per partition, the next to read). A client
  that reconnects with ``Last-Event-ID`` (every EventSource does) continues right after
  the last event it got: no label lost, none repeated. A label made twice (a redelivered
  job) is one event per record: a print agent dedupes by job and box.
- Heartbeats (a comment line every ``PARCELFLOW_LABEL_EVENTS_PING_S``) keep proxies from
  closing an idle stream; at most ``PARCELFLOW_LABEL_EVENTS_PER_PRINCIPAL`` streams per
  principal (429 past it).

Each stream reads ``labels.v1`` with a consumer of its own, in no group (the labeler's
records, read-only). aio-libs' ``aiohttp-sse`` does the framing.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter as Tally
from typing import Any
from urllib.parse import quote

import orjson
import structlog
from aiohttp import web
from aiohttp_sse import sse_response
from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge

from schemas.codec import decode
from schemas.label import LabelEvent, LabelEventParcel, LabelResult
from schemas.topics import LABELS
from workers.auth import PRINCIPAL, Principal
from workers.kafka import Topics, groupless_consumer
from workers.receiver.keys import SETTINGS

log = structlog.get_logger(__name__)

STREAMS = Gauge("parcelflow_receiver_label_streams", "Label event streams open.")
SENT = Counter("parcelflow_receiver_label_events", "Label events sent to streams.")
STREAMS_BY = web.AppKey("label_streams", Tally[str])
POSITION = re.compile(r"^\d{1,19}(\.\d{1,19}){0,1023}$")


def position_of(last_event_id: str, partitions: int) -> list[int] | None:
    """The next offsets a ``Last-Event-ID`` names, or None if it is not one of ours."""
    if not POSITION.fullmatch(last_event_id):
        return None
    offsets = [int(part) for part in last_event_id.split(".")]
    return offsets if len(offsets) == partitions else None


def label_event(label: LabelResult, principal: Principal, station: str | None) -> LabelEvent | None:
    """The event a label makes for this caller (its parcels the caller may see), or None."""
    parcels = [
        LabelEventParcel(
            box_id=parcel.box_id,
            warehouse_id=parcel.warehouse_id,
            station_id=parcel.station_id,
            tracking_id=parcel.tracking_id,
            formats=[d.format for d in parcel.documents],
            document=f"/v1/labels/{quote(label.job_id, safe='')}/{quote(parcel.box_id, safe='')}",
        )
        for parcel in label.parcels
        if principal.in_warehouse(parcel.warehouse_id)
        and (station is None or parcel.station_id == station)
    ]
    if not parcels:
        return None
    return LabelEvent(
        job_id=label.job_id,
        order_id=label.order_id,
        labeled_at_ms=label.labeled_at_ms,
        parcels=parcels,
    )


async def label_stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    principal: Principal = request[PRINCIPAL]
    station = request.query.get("station") or None
    if station is not None and len(station) > 128:
        return web.json_response(
            {"error": "invalid_query", "fields": [{"field": "station", "problem": "too long"}]},
            status=400,
        )
    open_streams = request.app[STREAMS_BY]
    if open_streams[principal.name] >= settings.label_events_per_principal:
        return web.json_response(
            {
                "error": "too_many_streams",
                "detail": "PARCELFLOW_LABEL_EVENTS_PER_PRINCIPAL streams are open already",
            },
            status=429,
            headers={"Retry-After": "10"},
        )
    topic = Topics(settings)(LABELS)
    consumer = groupless_consumer(settings)
    open_streams[principal.name] += 1
    STREAMS.inc()
    try:
        await consumer.start()
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        resume = position_of(request.headers.get("Last-Event-ID", ""), len(tps))
        if resume is not None:
            for tp, offset in zip(tps, resume, strict=True):
                consumer.seek(tp, offset)
        elif request.query.get("from") == "start":
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        position = {tp: await consumer.position(tp) for tp in tps}
        log.info(
            "label_stream_opened",
            principal=principal.name,
            station=station,
            resumed=resume is not None,
        )
        async with sse_response(
            request, ping_interval=settings.label_events_ping_s, headers={"X-Accel-Buffering": "no"}
        ) as stream:
            start = ".".join(str(position[t]) for t in tps)
            await stream.send(orjson.dumps({"position": start}).decode(), id=start, event="ready")
            with contextlib.suppress(ConnectionResetError):  # the station went away
                await follow(stream, consumer, tps, position, principal, station)
        return stream
    finally:
        open_streams[principal.name] -= 1
        STREAMS.dec()
        await consumer.stop()
        log.info("label_stream_closed", principal=principal.name, station=station)


async def follow(
    stream: Any,
    consumer: Any,
    tps: list[TopicPartition],
    position: dict[TopicPartition, int],
    principal: Principal,
    station: str | None,
) -> None:
    """Send the caller's label events as ``labels.v1`` gets them, while it listens."""
    while stream.is_connected():
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        for tp, messages in sorted(batches.items()):
            for message in messages:
                position[tp] = message.offset + 1
                label = decode(LabelResult, message.value)
                if not isinstance(label, LabelResult):
                    continue
                event = label_event(label, principal, station)
                if event is not None:
                    at = ".".join(str(position[t]) for t in tps)
                    await stream.send(event.model_dump_json(), id=at, event="label")
                    SENT.inc()
