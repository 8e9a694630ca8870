"""Label jobs, labels and label failures."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import MAX_INT, Dimensions, Id, Model, OptionalId, Sealed, Weight
from schemas.order import LineItem


class Parcel(Model):
    box_id: Id
    warehouse_id: OptionalId = Field(
        "", description="The box's warehouse: a box is (warehouse, box id)."
    )
    station_id: OptionalId = Field("", description="The packing station that closed the box.")
    items: list[LineItem] = Field(min_length=1)
    weight: Weight
    dimensions: Dimensions


class LabelJob(Model):
    """One shipment to label (``kind="create"``), or the cancellation of one."""

    job_id: Id = Field(description="Deterministic from order id and boxes; idempotency key.")
    event_id: Id
    kind: Literal["create", "cancel"] = "create"
    order_id: Id
    shop_id: Id
    recipient: Sealed | None = Field(
        None, description="The buyer's address, sealed (only the labeler opens it)."
    )
    parcels: list[Parcel] = Field(default_factory=list)
    unpacked_items: list[LineItem] = Field(
        default_factory=list, description="Units of the order left out of a short shipment."
    )
    shipping_type: Literal["TIKTOK", "SELLER", ""] = Field(
        "", description="The order's: SELLER orders get no TikTok Shop label request."
    )
    warehouse_id: OptionalId = Field("", description="Picks the ship-from address (warehouses).")
    created_at_ms: int = Field(ge=0, le=MAX_INT)


class LabelDocument(Model):
    format: Literal["pdf", "png", "zpl"]
    uri: str = Field(description="file:///... or s3://bucket/key: where the document is.")
    sha256: str
    size: int = Field(ge=0, le=MAX_INT)


class ParcelLabel(Model):
    box_id: Id
    warehouse_id: OptionalId = Field("", description="The box's warehouse.")
    station_id: OptionalId = Field("", description="The packing station that closed the box.")
    tracking_id: str
    documents: list[LabelDocument] = Field(
        default_factory=list, description="The label in each format stored."
    )
    document_path: str = Field("", description="The first document's file (folder store).")
    document_sha256: str = ""


class LabelResult(Model):
    event_id: Id = Field(description="label-<job_id>.")
    job_id: Id
    order_id: Id
    shop_id: OptionalId = Field("", description="The order's shop (erasures find its labels).")
    carrier: str
    service: str
    shipment_id: str
    parcels: list[ParcelLabel]
    attempts: int = Field(ge=1, le=MAX_INT)
    latency_ms: int = Field(ge=0, description="From job creation to label.", le=MAX_INT)
    call_ms: int = Field(ge=0, description="Duration of the successful label call.", le=MAX_INT)
    tracking_available: bool = Field(
        False, description="Shipium offers no tracking for TikTok Shop shipments."
    )
    labeled_at_ms: int = Field(ge=0, le=MAX_INT)


class LabelEventParcel(Model):
    box_id: Id
    warehouse_id: OptionalId = ""
    station_id: OptionalId = ""
    tracking_id: str
    formats: list[str]
    document: str = Field(description="The path of its document: GET it with ?format=.")


class LabelEvent(Model):
    """``event: label`` of ``GET /v1/labels/events``: a label made, with the parcels of it
    the caller may see."""

    job_id: Id
    order_id: Id
    labeled_at_ms: int = Field(ge=0, le=MAX_INT)
    parcels: list[LabelEventParcel] = Field(min_length=1)


class ErasedLabel(Model):
    """What the label store keeps of a label whose buyer data was erased (its documents
    deleted): a fetch answers 410."""

    erased: Literal[True] = True
    job_id: Id
    order_id: Id
    warehouse_ids: list[OptionalId] = Field(
        default_factory=list, description="Its parcels' warehouses (who may see it was erased)."
    )
    erased_at_ms: int = Field(ge=0, le=MAX_INT)


class LabelFailure(Model):
    event_id: Id = Field(description="failure-<job_id>.")
    job_id: Id
    order_id: Id
    error_code: str
    message: str
    retriable: bool
    attempts: int = Field(ge=0, le=MAX_INT)
    job: LabelJob = Field(description="The job as it was, so it can be replayed.")
    failed_at_ms: int = Field(ge=0, le=MAX_INT)


class PackageRef(Model):
    box_id: Id
    package_id: Id


class LabelAttempt(Model):
    """Written before a job's first label call: after a crash, look the label up first.
    TikTok Shipping writes one more per box as its package is created, naming it."""

    event_id: Id = Field(description="attempt-<job_id>, or attempt-<job_id>-<package_id>.")
    job_id: Id
    order_id: Id
    started_at_ms: int = Field(ge=0, le=MAX_INT)
    packages: list[PackageRef] = Field(
        default_factory=list, description="TikTok Shipping: the box's package, just created."
    )
