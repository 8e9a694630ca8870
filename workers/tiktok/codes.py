"""TikTok Shop Open API answer codes: what each means as TikTok documents it, where, and
what parcelflow does with it. Pure data; the one place these numbers live.

Sources (TikTok Shop Partner Center, API version 202309):

- "Common errors" (Developer guide, TikTok Shop API concepts): codes any call may answer.
- "Rate limits" (the same section): 50 calls a second per API, per app and shop; HTTP
  429 past it, 503 when the server protects itself.
- Each API's reference page, section "Error Code": Get Order Detail, Create Packages,
  Get Package Shipping Document, Ship Package, Get Eligible Shipping Service, Search
  Package, Get Package Detail, Get Package Handover Time Slots.
- The changelog "For US and UK markets: introducing On Hold order status" (21011044).

A code that no page lists ends the call with TikTok's code and message, as a failure an
operator can read and replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    RETRY = "retry"  # TikTok says to try again later: backoff, then the same call
    LOOK_UP = "look_up"  # a purchase may be under way or done: look it up, then retry
    DONE = "done"  # what was asked is done already (a label bought, a package shipped)
    ON_HOLD = "on_hold"  # the order is ON_HOLD: wait, then try again
    TOKEN = "token"  # noqa: S105 (a verdict) the access token expired: refresh, then retry
    RATE_LIMITED = "rate_limited"  # over the per-API limit: wait, then retry
    SHOP = "shop"  # the shop's authorization needs a person (credentials, scope, cipher)
    NO_SERVICE = "no_service"  # no shipping service fits the package: nothing is bought
    HANDOVER_SLOT = "handover_slot"  # Ship Package needs a pick-up time slot
    GONE = "gone"  # the document can no longer be printed (picked up, cancelled)
    FAIL = "fail"  # the request is wrong for this order: the job ends with TikTok's reason


# verdicts after which the same call may succeed
RETRIABLE = frozenset(
    {Verdict.RETRY, Verdict.LOOK_UP, Verdict.ON_HOLD, Verdict.TOKEN, Verdict.RATE_LIMITED}
)

COMMON = "Common errors"
RATE_LIMITS = "Rate limits"
ORDER_DETAIL = "Get Order Detail"
CREATE = "Create Packages"
DOCUMENT = "Get Package Shipping Document"
SHIP = "Ship Package"
ELIGIBLE = "Get Eligible Shipping Service"
HANDOVER = "Get Package Handover Time Slots"
ON_HOLD_CHANGELOG = "Changelog: For US and UK markets: introducing On Hold order status"


@dataclass(frozen=True)
class Documented:
    code: int
    meaning: str  # TikTok's message, shortened
    pages: tuple[str, ...]
    verdict: Verdict


def _table(*rows: tuple[int, str, tuple[str, ...], Verdict]) -> dict[int, Documented]:
    return {
        code: Documented(code, meaning, pages, verdict) for code, meaning, pages, verdict in rows
    }


CODES = _table(
    # every call
    (36009002, "too many requests", (COMMON, RATE_LIMITS), Verdict.RATE_LIMITED),
    (
        36009003,
        "internal error, please try again",
        (ORDER_DETAIL, CREATE, DOCUMENT, SHIP, ELIGIBLE),
        Verdict.RETRY,
    ),
    (36009007, "request timeout", (COMMON,), Verdict.RETRY),
    (105002, "expired credentials: refresh the access token", (COMMON,), Verdict.TOKEN),
    (36009004, "invalid or missing credentials, timestamp or identifier", (COMMON,), Verdict.SHOP),
    (106013, "missing shop_cipher", (COMMON,), Verdict.SHOP),
    (101000, "access token not of this shop, or of the wrong user type", (COMMON,), Verdict.SHOP),
    (105005, "the app or token lacks the API's access scope", (COMMON,), Verdict.SHOP),
    (36009033, "the caller's IP address is not in the app's allow list", (COMMON,), Verdict.SHOP),
    (10006402, "permission denied", (ORDER_DETAIL, ELIGIBLE), Verdict.SHOP),
    # Get Order Detail
    (10002014, "failed to get orders, retry", (ORDER_DETAIL,), Verdict.RETRY),
    (10002015, "failed to get orders, retry", (ORDER_DETAIL,), Verdict.RETRY),
    (10037002, "failed to get orders, retry", (ORDER_DETAIL,), Verdict.RETRY),
    (10037003, "failed to get orders, retry", (ORDER_DETAIL,), Verdict.RETRY),
    (10037004, "failed to get orders, retry", (ORDER_DETAIL,), Verdict.RETRY),
    (21008111, "the order does not belong to the current seller", (ORDER_DETAIL,), Verdict.SHOP),
    # On Hold
    (21011044, "order status is on hold", (ON_HOLD_CHANGELOG,), Verdict.ON_HOLD),
    # Create Packages (buys the label)
    (11001027, "system timeout", (CREATE, HANDOVER), Verdict.LOOK_UP),
    (21001011, "system process error, try again later", (CREATE, SHIP), Verdict.LOOK_UP),
    (21022026, "cannot purchase shipping label, try again later", (CREATE,), Verdict.LOOK_UP),
    (21022029, "system process error, try again later", (CREATE, SHIP), Verdict.LOOK_UP),
    (21030005, "label purchase still processing", (CREATE,), Verdict.LOOK_UP),
    (21022025, "a shipping label has already been purchased", (CREATE,), Verdict.DONE),
    (21030006, "label purchase successful; not allowed in this status", (CREATE,), Verdict.DONE),
    (21011006, "these orders are already shipped", (CREATE, ELIGIBLE), Verdict.DONE),
    (21008042, "seller already printed the shipping label", (CREATE,), Verdict.DONE),
    (
        21011037,
        "no available shipping services for this request",
        (CREATE, ELIGIBLE),
        Verdict.NO_SERVICE,
    ),
    (
        11021009,
        "no available shipping services for this request",
        (CREATE, SHIP, HANDOVER),
        Verdict.NO_SERVICE,
    ),
    (21004008, "create label shipping service not found", (CREATE,), Verdict.NO_SERVICE),
    (21001001, "invalid parameters", (CREATE, SHIP, ELIGIBLE, HANDOVER), Verdict.FAIL),
    (11001002, "invalid param", (CREATE, SHIP), Verdict.FAIL),
    (11050001, "invalid param", (CREATE, SHIP), Verdict.FAIL),
    (21011048, "several packages can ship: name the order lines", (CREATE, ELIGIBLE), Verdict.FAIL),
    (21011007, "a package item has an after-sale request", (CREATE, SHIP), Verdict.FAIL),
    (21011003, "fulfill_unit action not allowed", (CREATE, SHIP), Verdict.FAIL),
    # Get Package Shipping Document
    (
        11034037,
        "the document is still being generated, try again later",
        (DOCUMENT,),
        Verdict.RETRY,
    ),
    (11034023, "document generation timeout, try again later", (DOCUMENT,), Verdict.RETRY),
    (11006010, "internal package status error, try again later", (DOCUMENT,), Verdict.RETRY),
    (11034025, "internal package tag error, try again later", (DOCUMENT,), Verdict.RETRY),
    (21023034, "internal package update error, try again later", (DOCUMENT,), Verdict.RETRY),
    (
        21042102,
        "documents cannot be printed after the package was picked up",
        (DOCUMENT,),
        Verdict.GONE,
    ),
    (21023059, "the package has already been cancelled", (DOCUMENT,), Verdict.GONE),
    # Ship Package: already shipped (21001041 is documented nowhere)
    (21011040, "package has already been shipped", (SHIP,), Verdict.DONE),
    (11006021, "package has been shipped", (SHIP,), Verdict.DONE),
    (21008099, "package has been shipped", (SHIP,), Verdict.DONE),
    (21011020, "these orders are already shipped", (CREATE, SHIP), Verdict.DONE),
    (21001003, "system timeout", (SHIP,), Verdict.RETRY),
    (21001008, "system process error, try again later", (SHIP,), Verdict.RETRY),
    (11001031, "system process error, try again later", (SHIP,), Verdict.RETRY),
    (21042001, "system process error, try again later", (SHIP,), Verdict.RETRY),
    (21042076, "system process error, try again later", (SHIP,), Verdict.RETRY),
    (21011041, "the order is cancelled", (SHIP,), Verdict.FAIL),
    (21011053, "shipment time outside the pick-up time slot", (SHIP,), Verdict.HANDOVER_SLOT),
    (21011054, "missing pick-up time slot", (SHIP,), Verdict.HANDOVER_SLOT),
)


def verdict(code: int) -> Verdict:
    """What parcelflow does with an answer code; FAIL for one no page lists."""
    found = CODES.get(code)
    return found.verdict if found is not None else Verdict.FAIL


def meaning(code: int) -> str:
    found = CODES.get(code)
    return found.meaning if found is not None else "not in TikTok's reference pages"


# What each verdict means for the enricher and the labeler, for the operator's table.
ACTIONS = {
    Verdict.RETRY: "tried again with backoff (the enricher: up to tiktok_max_attempts, then "
    "parked; the labeler: up to labeler_max_attempts)",
    Verdict.LOOK_UP: "the labeler looks the order's packages up, then tries again; the "
    "enricher tries again",
    Verdict.DONE: "looked up, never given up blind: the labeler reads the order's packages "
    "and takes the label it finds (`already_done` while none is found); Ship Package: done",
    Verdict.ON_HOLD: "tried again after labeler_on_hold_retry_s",
    Verdict.TOKEN: "the enricher refreshes the shop's token and tries again; the labeler "
    "waits for that refresh",
    Verdict.RATE_LIMITED: "tried again with backoff (Retry-After honoured); the labeler's "
    "adaptive limit is cut",
    Verdict.SHOP: "`shop_unauthorized`: the enricher parks the webhook and raises the "
    "shop's re-authorization alert; the labeler ends the job (replay once fixed)",
    Verdict.NO_SERVICE: "`no_shipping_service`: the box ends before anything is bought",
    Verdict.GONE: "`document_gone`: the job ends; a label already stored stays the label of record",
    Verdict.HANDOVER_SLOT: "`handover_slot`: the job ends (the warehouse's pick-up settings "
    "need a look)",
    Verdict.FAIL: "the job ends with TikTok's code and message (replayable)",
}


def table_rows() -> list[str]:
    """The codes as the rows of docs/tiktok.md's table, then what each verdict does."""
    codes = [
        f"| {c.code} | {c.meaning} | {', '.join(c.pages)} | {c.verdict} |"
        for c in sorted(CODES.values(), key=lambda c: (c.verdict.value, c.code))
    ]
    actions = [f"| {verdict} | {ACTIONS[verdict]} |" for verdict in Verdict]
    return codes + actions
