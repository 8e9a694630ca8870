"""The label fetch API: a packing station asks for the label of its box.

- ``GET /v1/labels/{job_id}``: the label record (parcels, tracking ids, formats);
- ``GET /v1/labels/{job_id}/{box_id}?format=pdf|png|zpl``: one parcel's document;
- ``GET /v1/boxes/{box_id}/label?format=...&warehouse=...&order_id=...``: the same, by
  box id: the box is (warehouse, box id); ``warehouse`` may be left out by a principal of
  one warehouse; ``order_id`` is needed only after two orders used the box id (409).

Every route needs the ``labels`` role. A label of a warehouse the principal may not read
answers 404, as a label that does not exist: ids cannot be probed. Everything is read
from the label store the labeler writes, by digest names: no id reaches a path or a key.
Without ``format``, the first of ``PARCELFLOW_LABEL_FORMATS``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web

from schemas.codec import decode
from schemas.label import ErasedLabel, LabelResult, ParcelLabel
from workers.auth import PRINCIPAL, protect
from workers.labels import claims
from workers.labels.store import CONTENT_TYPES, document_name, manifest_name, open_store
from workers.receiver.events import STREAMS_BY, label_stream
from workers.receiver.keys import SETTINGS, STORE

log = structlog.get_logger(__name__)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = open_store(app[SETTINGS])
    yield
    await app[STORE].close()


def not_found(what: str) -> web.Response:
    return web.json_response({"error": "not_found", "detail": what}, status=404)


def bad_request(field: str, problem: str) -> web.Response:
    body = {"error": "invalid_query", "fields": [{"field": field, "problem": problem}]}
    return web.json_response(body | {"detail": f"{field}: {problem}"}, status=400)


def gone(erased: ErasedLabel) -> web.Response:
    body = {
        "error": "erased",
        "job_id": erased.job_id,
        "detail": "this label was deleted with its order's buyer data (an erasure)",
    }
    return web.json_response(body, status=410)


async def readable_label(request: web.Request, job_id: str) -> LabelResult | ErasedLabel | None:
    """The job's label (or what is left of an erased one) if the principal may read at
    least one of its parcels."""
    raw = await request.app[STORE].get(manifest_name(job_id))
    if raw is None:
        return None
    principal = request[PRINCIPAL]
    label = decode(LabelResult, raw)
    if isinstance(label, LabelResult):
        mine = any(principal.in_warehouse(p.warehouse_id) for p in label.parcels)
        return label if mine else None
    erased = decode(ErasedLabel, raw)
    if isinstance(erased, ErasedLabel) and any(map(principal.in_warehouse, erased.warehouse_ids)):
        log.info("label_fetch_erased", job_id=job_id, principal=principal.name)
        return erased
    return None


def readable_parcel(request: web.Request, label: LabelResult, box_id: str) -> ParcelLabel | None:
    principal = request[PRINCIPAL]
    return next(
        (p for p in label.parcels if p.box_id == box_id and principal.in_warehouse(p.warehouse_id)),
        None,
    )


async def label_record(request: web.Request) -> web.Response:
    label = await readable_label(request, request.match_info["job_id"])
    if label is None:
        return not_found("no label for this job (yet)")
    if isinstance(label, ErasedLabel):
        return gone(label)
    principal = request[PRINCIPAL]
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
                "warehouse_id": p.warehouse_id,
                "tracking_id": p.tracking_id,
                "formats": [d.format for d in p.documents],
            }
            for p in label.parcels
            if principal.in_warehouse(p.warehouse_id)
        ],
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def document(request: web.Request, label: LabelResult, box_id: str) -> web.Response:
    fmt = request.query.get("format", request.app[SETTINGS].label_formats[0])
    if fmt not in CONTENT_TYPES:
        return bad_request("format", "one of pdf, png, zpl")
    if readable_parcel(request, label, box_id) is None:
        return not_found("no label for this box (yet)")
    data = await request.app[STORE].get(document_name(label.job_id, box_id, fmt))
    if data is None:
        return not_found(f"no {fmt} label for this box (formats stored: PARCELFLOW_LABEL_FORMATS)")
    log.info(
        "label_fetched",
        job_id=label.job_id,
        box_id=box_id,
        format=fmt,
        principal=request[PRINCIPAL].name,
    )
    return web.Response(
        body=data,
        content_type=CONTENT_TYPES[fmt],
        headers={"Content-Disposition": f'inline; filename="label.{fmt}"'},
    )


async def parcel_document(request: web.Request) -> web.Response:
    label = await readable_label(request, request.match_info["job_id"])
    if label is None:
        return not_found("no label for this box (yet)")
    if isinstance(label, ErasedLabel):
        return gone(label)
    return await document(request, label, request.match_info["box_id"])


async def box_document(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    warehouse = request.query.get("warehouse", principal.only_warehouse)
    if warehouse is None:
        return bad_request("warehouse", "required: this principal reads several warehouses")
    if not principal.in_warehouse(warehouse):
        return not_found("no label for this box (yet)")  # as if it did not exist
    box_id = request.match_info["box_id"]
    found = await claims.resolve(
        request.app[STORE], warehouse, box_id, request.query.get("order_id")
    )
    if isinstance(found, claims.Ambiguous):
        return web.json_response(
            {
                "error": "box_id_ambiguous",
                "orders": found.orders,
                "detail": "more than one order used this box id in this warehouse: ask "
                "again with ?order_id=",
            },
            status=409,
        )
    if found is None:
        return not_found("no label for this box (yet)")
    if isinstance(found, claims.Gone):
        return gone(found.erased)
    return await document(request, found.label, box_id)


def add_routes(app: web.Application) -> None:
    app[STREAMS_BY] = Tally()
    protect(app, app.router.add_get("/v1/labels/events", label_stream), "labels")
    app.cleanup_ctx.append(store_ctx)
    for path, handler in (
        ("/v1/labels/{job_id}", label_record),
        ("/v1/labels/{job_id}/{box_id}", parcel_document),
        ("/v1/boxes/{box_id}/label", box_document),
    ):
        protect(app, app.router.add_get(path, handler), "labels")
