"""Box claims: which order holds a box id in a warehouse.

A box is (warehouse, box id). Before its label call, the labeler claims each box of the
job for the job's order; a station's fetch by box id reads the claim to find the label.

- A box id nobody holds is claimed. The same order claims it again freely (a retry, a
  replay, a new job after more boxes came).
- A box id another order holds is refused (``box_id_in_use``) and the refused order is
  written into the claim, so that a fetch by that box id answers 409 naming both orders
  instead of a label that may be for the other box.
- Once a claim is ``box_id_reuse_after_s`` old the warehouse may give the box id to
  another order: the new order takes the claim, and the old record of contest goes.

``decide`` is the rule, pure; ``claim`` and ``resolve`` do the reads and the
compare-and-set writes against the label store.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from enum import Enum

from pydantic import Field, ValidationError

from schemas.codec import decode
from schemas.common import MAX_INT, Id, Model, OptionalId
from schemas.label import ErasedLabel, LabelResult
from workers.labels.store import LabelStore, claim_name, manifest_name

MAX_CONTESTED = 16  # orders remembered as refused per claim
WRITE_ATTEMPTS = 10  # compare-and-set rounds before a claim is given up as contended


class Claim(Model):
    warehouse_id: OptionalId
    box_id: Id
    order_id: Id
    job_id: Id
    claimed_at_ms: int = Field(ge=0, le=MAX_INT)
    contested_by: list[Id] = Field(
        default_factory=list, description="Orders whose box with this id was refused."
    )


class Verdict(Enum):
    HELD = "held"  # the order holds it already: nothing to write
    CLAIM = "claim"  # write the new claim
    REFUSE = "refuse"  # another order holds it: write the contest, refuse the box


def decide(held: Claim | None, wanted: Claim, reuse_after_ms: int) -> tuple[Verdict, Claim | None]:
    """What to do with a ``wanted`` claim when ``held`` is the box's; the claim to write."""
    if held is None:
        return Verdict.CLAIM, wanted
    if held.order_id == wanted.order_id:
        if held.job_id == wanted.job_id:
            return Verdict.HELD, None
        return Verdict.CLAIM, held.model_copy(update={"job_id": wanted.job_id})
    if wanted.claimed_at_ms - held.claimed_at_ms >= reuse_after_ms:
        return Verdict.CLAIM, wanted
    if wanted.order_id in held.contested_by or len(held.contested_by) >= MAX_CONTESTED:
        return Verdict.REFUSE, None
    contested = [*held.contested_by, wanted.order_id]
    return Verdict.REFUSE, held.model_copy(update={"contested_by": contested})


def parse(raw: bytes) -> Claim | None:
    try:
        return Claim.model_validate_json(raw)
    except ValidationError:
        return None  # not a claim (damaged): treated as absent, and written over


class Contended(Exception):
    """The claim changed under every one of WRITE_ATTEMPTS writes: try the job later."""


async def claim(store: LabelStore, wanted: Claim, reuse_after_ms: int) -> Claim | None:
    """Claim the box for ``wanted``'s order: None when it holds the box now, else the
    claim of the order that holds it."""
    name = claim_name(wanted.warehouse_id, wanted.box_id)
    for attempt in range(WRITE_ATTEMPTS):
        if attempt:  # another writer came first: read again after a short, jittered wait
            await asyncio.sleep(random.uniform(0, 0.01 * attempt))  # noqa: S311 (jitter)
        found = await store.get_tagged(name)
        held = parse(found[0]) if found is not None else None
        verdict, write = decide(held, wanted, reuse_after_ms)
        if write is not None:
            tag = found[1] if found is not None else None
            if not await store.put_if(name, write.model_dump_json().encode(), tag):
                continue  # another writer came first: read again
        if verdict is Verdict.REFUSE:
            assert held is not None  # noqa: S101 (refused: another order holds it)
            return held
        return None
    raise Contended(f"box claim changed {WRITE_ATTEMPTS} times while being written")


@dataclass(frozen=True)
class Found:
    label: LabelResult


@dataclass(frozen=True)
class Ambiguous:
    orders: list[str]


@dataclass(frozen=True)
class Gone:
    """The box's label was erased with its buyer data."""

    erased: ErasedLabel


async def resolve(
    store: LabelStore, warehouse_id: str, box_id: str, order_id: str | None
) -> Found | Ambiguous | Gone | None:
    """The job whose label is the box's: Found, Ambiguous (two orders used the box id:
    the caller must name its order), or None (no such box, or not that order's)."""
    found = await store.get(claim_name(warehouse_id, box_id))
    held = parse(found) if found is not None else None
    if held is None:
        return None
    orders = [held.order_id, *held.contested_by]
    if order_id is not None and order_id != held.order_id:
        return Ambiguous(orders) if order_id in held.contested_by else None
    if held.contested_by and order_id is None:
        return Ambiguous(orders)
    manifest = await store.get(manifest_name(held.job_id))
    label = decode(LabelResult, manifest) if manifest is not None else None
    if not isinstance(label, LabelResult):
        erased = decode(ErasedLabel, manifest) if manifest is not None else None
        return Gone(erased) if isinstance(erased, ErasedLabel) else None  # or not labeled yet
    mine = any(p.box_id == box_id and p.warehouse_id == warehouse_id for p in label.parcels)
    if label.order_id != held.order_id or not mine:
        return Ambiguous(sorted({*orders, label.order_id}))  # never another box's label
    return Found(label)
