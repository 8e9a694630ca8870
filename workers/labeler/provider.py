"""What the labeler needs of a label provider, whichever it is: Shipium's "TikTok Shop"
carrier (``workers/labeler/shipium/``) and TikTok Shipping
(``workers/labeler/tiktok_shipping/``), chosen per shop. A provider is pure request builders and
response parsers beside one client that does the I/O; the client is what the labeler
holds. Flow control, the adaptive limit, retries, the attempts ledger, the label store
and the fetch API are the labeler's and work the same for every provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from schemas.common import Address
from schemas.label import LabelJob


@dataclass(frozen=True)
class PackageLabel:
    tracking_id: str
    documents: dict[str, bytes]  # format (pdf, png, zpl) -> the document, in answer order

    @property
    def document(self) -> bytes:
        return next(iter(self.documents.values()), b"")

    @property
    def document_format(self) -> str:
        return next(iter(self.documents), "")


@dataclass(frozen=True)
class LabelResponse:
    shipment_id: str
    label_id: str
    carrier: str
    service: str
    packages: list[PackageLabel]


class LabelProvider(Protocol):
    # True when create_label itself finds what an earlier call made (TikTok Shipping reads
    # the order's packages first): no look-up is needed before creating again.
    looks_before_create: bool

    async def create_label(self, job: LabelJob, recipient: Address | None) -> LabelResponse:
        """One label per parcel of the job, in parcel order, to the job's recipient
        (opened from its sealed form by the labeler); raises ApiError (with a typed code
        and whether a retry may help) when the provider answers otherwise."""
        ...

    async def find_label(self, job: LabelJob) -> LabelResponse | None:
        """The label the provider already made for this job (looked up by the job's id),
        or None: asked before creating again after an answer that left it unknown."""
        ...


# Told each package a provider creates, the moment its id is known: (job, box id, package
# id). The labeler records it on label-attempts.v1.
PackageLog = Callable[[LabelJob, str, str], Awaitable[None]]
