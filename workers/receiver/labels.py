"""The label fetch API: a packing station asks for the label of its box.

- ``GET /v1/labels/{job_id}``: the label record (parcels, tracking ids, formats);
- ``GET /v1/labels/{job_id}/{box_id}?format=pdf|png|zpl``: one parcel's document;
- ``GET /v1/boxes/{box_id}/label?format=...``: the same, by box id alone.

Behind the ingest bearer tokens. Everything is read from the label store the labeler
writes (workers/labeler/store.py): by digest names, so no id reaches a path or a key.
Without ``format``, the first of ``PARCELFLOW_LABEL_FORMATS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from schemas.codec import decode
from schemas.label import LabelResult
from workers.labeler.documents import document_name
from workers.labeler.store import (
    CONTENT_TYPES,
    LabelStore,
    box_name,
    manifest_name,
    open_store,
)
from workers.settings import Settings

STORE = web.AppKey("label_store", LabelStore)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    from workers.receiver.app import SETTINGS

    app[STORE] = open_store(app[SETTINGS])
    yield
    await app[STORE].close()


def not_found(what: str) -> web.Response:
    return web.json_response({"error": "not_found", "detail": what}, status=404)


async def record(store: LabelStore, job_id: str) -> LabelResult | None:
    raw = await store.get(manifest_name(job_id))
    if raw is None:
        return None
    label = decode(LabelResult, raw)
    return label if isinstance(label, LabelResult) else None


Handler = Callable[[web.Request], Awaitable[web.Response]]


def behind_ingest_token(handler: Handler) -> Handler:
    """Answer 401 unless the request carries one of the ingest bearer tokens."""

    async def guarded(request: web.Request) -> web.Response:
        from workers.receiver.app import bearer_refused, upstream_system

        if upstream_system(request) is None:
            return bearer_refused()
        return await handler(request)

    return guarded


@behind_ingest_token
async def label_record(request: web.Request) -> web.Response:
    label = await record(request.app[STORE], request.match_info["job_id"])
    if label is None:
        return not_found("no label for this job (yet)")
    body = {
        "job_id": label.job_id,
        "order_id": label.order_id,
        "carrier": label.carrier,
        "service": label.service,
        "shipment_id": label.shipment_id,
        "labeled_at_ms": label.labeled_at_ms,
        "parcels": [
            {
                "box_id": p.box_id,
                "tracking_id": p.tracking_id,
                "formats": [d.format for d in p.documents],
            }
            for p in label.parcels
        ],
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def document(request: web.Request, job_id: str, box_id: str) -> web.Response:
    from workers.receiver.app import SETTINGS

    settings: Settings = request.app[SETTINGS]
    fmt = request.query.get("format", settings.label_formats[0])
    if fmt not in CONTENT_TYPES:
        return web.json_response(
            {
                "error": "invalid_format",
                "fields": [{"field": "format", "problem": "one of pdf, png, zpl"}],
            },
            status=400,
        )
    data = await request.app[STORE].get(document_name(job_id, box_id, fmt))
    if data is None:
        return not_found(f"no {fmt} label for this box (formats stored: PARCELFLOW_LABEL_FORMATS)")
    return web.Response(
        body=data,
        content_type=CONTENT_TYPES[fmt],
        headers={"Content-Disposition": f'inline; filename="label.{fmt}"'},
    )


@behind_ingest_token
async def parcel_document(request: web.Request) -> web.Response:
    return await document(request, request.match_info["job_id"], request.match_info["box_id"])


@behind_ingest_token
async def box_document(request: web.Request) -> web.Response:
    box_id = request.match_info["box_id"]
    raw = await request.app[STORE].get(box_name(box_id))
    if raw is None:
        return not_found("no label for this box (yet)")
    job_id = str(orjson.loads(raw)["job_id"])
    return await document(request, job_id, box_id)


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(store_ctx)
    app.router.add_get("/v1/labels/{job_id}", label_record)
    app.router.add_get("/v1/labels/{job_id}/{box_id}", parcel_document)
    app.router.add_get("/v1/boxes/{box_id}/label", box_document)
