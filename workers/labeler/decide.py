"""What the labeler does with one label job, and the records it writes. Pure.

The ledger (labels, attempts and cancellations read back from the topics) decides: a job
whose label exists is answered from it, never labeled twice; a job a dead process may
have labeled is looked up at Shipium before a new label is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from schemas.common import derived_id
from schemas.label import (
    LabelAttempt,
    LabelDocument,
    LabelFailure,
    LabelJob,
    LabelResult,
    PackageRef,
    ParcelLabel,
)
from workers.kafka import MAX_REASON_CHARS
from workers.labeler.codes import FailureCode
from workers.labeler.ledger import Ledger
from workers.labeler.provider import LabelResponse
from workers.settings import LabelerSettings

VOID_IN_SELLER_CENTER = (
    "labels for TikTok Shop orders (through Shipium or TikTok Shipping) are voided in "
    "TikTok Seller Center"
)


class Action(Enum):
    RECORD_CANCEL = "record_cancel"  # a cancel job: write the cancellation (or void) failure
    DROP = "drop"  # a create job whose order was cancelled first: nothing to do
    REPUBLISH = "republish"  # labeled already: publish the same label again
    RECOVER = "recover"  # a call was started before: look the label up, create if absent
    CREATE = "create"  # write the attempt, then create the label


def decide(job: LabelJob, ledger: Ledger) -> Action:
    if job.kind == "cancel":
        return Action.RECORD_CANCEL
    if job.job_id in ledger.cancelled:
        return Action.DROP
    if ledger.get(job.job_id) is not None:
        return Action.REPUBLISH
    if job.job_id in ledger.attempted:
        return Action.RECOVER
    return Action.CREATE


def failure(
    job: LabelJob, code: str, message: str, retriable: bool, attempts: int, at_ms: int
) -> LabelFailure:
    return LabelFailure(
        event_id=derived_id("failure", job.job_id),
        job_id=job.job_id,
        order_id=job.order_id,
        error_code=code,
        message=message[:MAX_REASON_CHARS],
        retriable=retriable,
        attempts=attempts,
        job=job,
        failed_at_ms=at_ms,
    )


def provider_of(job: LabelJob, settings: LabelerSettings) -> str:
    """The label provider of the job's shop: shipium or tiktok."""
    return settings.label_providers.get(job.shop_id, settings.label_provider)


def routing_failure(job: LabelJob, settings: LabelerSettings, at_ms: int) -> LabelFailure | None:
    """A job that must not reach the TikTok Shop carrier as it is: a seller-shipped order
    (unless set to Shipium's ordinary carrier selection; TikTok Shipping has none) or a
    warehouse with no address."""
    carrier_selection = (
        settings.seller_shipped == "carrier-selection" and provider_of(job, settings) == "shipium"
    )
    if job.shipping_type == "SELLER" and not carrier_selection:
        message = "seller-shipped order: the seller ships it with its own logistics"
        return failure(job, FailureCode.SELLER_SHIPPED, message, False, 0, at_ms)
    if settings.warehouses and job.warehouse_id not in settings.warehouses:
        message = (
            f"warehouse {job.warehouse_id[:64]!r} has no ship-from address: add it to "
            "PARCELFLOW_WAREHOUSES, then replay"
        )
        return failure(job, FailureCode.UNKNOWN_WAREHOUSE, message, False, 0, at_ms)
    return None


def cancellation(job: LabelJob, labeled: bool, at_ms: int) -> LabelFailure:
    if labeled:
        return failure(job, FailureCode.VOID_REQUIRED, VOID_IN_SELLER_CENTER, False, 0, at_ms)
    message = "order cancelled before its label was made"
    return failure(job, FailureCode.CANCELLED, message, False, 0, at_ms)


def attempt(job: LabelJob, at_ms: int) -> LabelAttempt:
    return LabelAttempt(
        event_id=derived_id("attempt", job.job_id),
        job_id=job.job_id,
        order_id=job.order_id,
        started_at_ms=at_ms,
    )


def package_made(job: LabelJob, box_id: str, package_id: str, at_ms: int) -> LabelAttempt:
    """The attempt record naming a box's package, written as soon as TikTok names it."""
    return LabelAttempt(
        event_id=derived_id("attempt", job.job_id, package_id),
        job_id=job.job_id,
        order_id=job.order_id,
        started_at_ms=at_ms,
        packages=[PackageRef(box_id=box_id, package_id=package_id)],
    )


def result(
    job: LabelJob,
    response: LabelResponse,
    documents: Sequence[Sequence[LabelDocument]],
    attempts: int,
    call_ms: int,
    at_ms: int,
) -> LabelResult:
    """The label of ``job``; ``documents`` holds each parcel's stored documents, in order."""
    parcels = [
        ParcelLabel(
            box_id=parcel.box_id,
            warehouse_id=parcel.warehouse_id,
            station_id=parcel.station_id,
            tracking_id=package.tracking_id,
            documents=list(docs),
            document_path=docs[0].uri if docs and not docs[0].uri.startswith("s3://") else "",
            document_sha256=docs[0].sha256 if docs else "",
        )
        for parcel, package, docs in zip(job.parcels, response.packages, documents, strict=True)
    ]
    return LabelResult(
        event_id=derived_id("label", job.job_id),
        job_id=job.job_id,
        order_id=job.order_id,
        shop_id=job.shop_id,
        carrier=response.carrier,
        service=response.service,
        shipment_id=response.shipment_id,
        parcels=parcels,
        attempts=attempts,
        latency_ms=max(0, at_ms - job.created_at_ms),
        call_ms=call_ms,
        labeled_at_ms=at_ms,
    )
