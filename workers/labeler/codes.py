"""Why a label job failed: the codes of ``label-failures.v1``, in one place."""

from __future__ import annotations

from enum import StrEnum

from workers.errors import http_code


class FailureCode(StrEnum):
    CANCELLED = "cancelled"  # the order was cancelled before its label was made
    VOID_REQUIRED = "void_required"  # cancelled after: void it in TikTok Seller Center
    UNAUTHORIZED = "unauthorized"  # Shipium refused the API key (401)
    FORBIDDEN = "forbidden"  # (403)
    RATE_LIMITED = "rate_limited"  # 429
    TIMEOUT = "timeout"  # the call took longer than shipium_timeout_s
    CONNECTION = "connection"  # no answer at all
    BAD_RESPONSE = "bad_response"  # an answer parcelflow cannot read
    IN_PROGRESS = "in_progress"  # an earlier call for the shipment still runs
    STORE_FAILED = "store_failed"  # the label was made but its document could not be stored
    INTERNAL_ERROR = "internal_error"  # a parcelflow defect: the job ended, replayable
    SELLER_SHIPPED = "seller_shipped"  # the seller ships it: no TikTok Shop label request
    UNKNOWN_WAREHOUSE = "unknown_warehouse"  # not in PARCELFLOW_WAREHOUSES: replay once added
    BOX_ID_IN_USE = "box_id_in_use"  # another order holds the box id in its warehouse
    # TikTok Shipping
    ON_HOLD = "on_hold"  # TikTok holds the order (the buyer may cancel): retried later
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (a code) the token is being refreshed
    SHOP_UNAUTHORIZED = "shop_unauthorized"  # the seller must authorize the app again
    ITEMS_IN_OTHER_PACKAGE = "items_in_other_package"  # a box's items are packed elsewhere
    CANCEL_REQUESTED = "cancel_requested"  # the buyer asked to cancel: retried later
    ALREADY_DONE = "already_done"  # TikTok: label bought or package shipped (looked up)
    NO_SHIPPING_SERVICE = "no_shipping_service"  # no service fits the box: nothing bought
    DOCUMENT_GONE = "document_gone"  # picked up or cancelled: the stored label stands
    HANDOVER_SLOT = "handover_slot"  # Ship Package needs a pick-up time slot
    # Buyer data
    ERASED = "erased"  # the order's or shop's buyer data was erased: no label, ever
    RECIPIENT_UNREADABLE = "recipient_unreadable"  # the sealed recipient does not open


# Shipium refused our key: not the job's fault, it waits until the key works again.
CREDENTIALS = frozenset({FailureCode.UNAUTHORIZED, FailureCode.FORBIDDEN})
# Decisions, not errors: replaying them would be wrong, and they outlive a restart.
DECISIONS = frozenset(
    {
        FailureCode.CANCELLED,
        FailureCode.VOID_REQUIRED,
        FailureCode.SELLER_SHIPPED,
        FailureCode.ERASED,
    }
)

# Answers after which the label may exist all the same (the call may have done its work):
# before creating again, look the shipment up.
AMBIGUOUS = frozenset(
    {FailureCode.TIMEOUT, FailureCode.CONNECTION, http_code(502), http_code(503), http_code(504)}
)
