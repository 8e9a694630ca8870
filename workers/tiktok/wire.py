"""TikTok Shop Open API (202309) wire format: paths, error codes, order parsing."""

from __future__ import annotations

from typing import Any, Literal

from schemas.common import Address
from schemas.order import LineItem, Order, OrderStatus

ORDER_DETAIL_PATH = "/order/202309/orders"
TOKEN_REFRESH_PATH = "/api/v2/token/refresh"  # noqa: S105 (a path, not a secret)
ACCESS_TOKEN_HEADER = "x-tts-access-token"  # noqa: S105 (a header name)

OK = 0
ACCESS_TOKEN_EXPIRED = 105002
BAD_SIGN = 106001
BAD_CREDENTIALS = 36009004
RATE_LIMITED = 36009002
ORDER_ON_HOLD = 21011044

# The buyer's remorse window of old-flow orders (see ``ship_after``): one hour.
DEFAULT_REMORSE_HOLD_S = 3600

WEBHOOK_ORDER_ID = "order_id"
WEBHOOK_ORDER_STATUS = "order_status"
WEBHOOK_UPDATE_TIME = "update_time"


def parse_address(raw: dict[str, Any] | None) -> Address | None:
    if not raw:
        return None
    districts = {
        d.get("address_level", ""): d.get("address_name", "")
        for d in raw.get("district_info") or []
    }
    return Address(
        name=raw.get("name", ""),
        phone=raw.get("phone_number", ""),
        street1=raw.get("address_line1", ""),
        street2=raw.get("address_line2", ""),
        city=districts.get("L3", "") or raw.get("city", ""),
        state=districts.get("L1", "") or raw.get("state", ""),
        postal_code=raw.get("postal_code", ""),
        country_code=(raw.get("region_code") or "US")[:2],
    )


def ship_after(raw: dict[str, Any], remorse_hold_s: int) -> int:
    """Unix seconds before which the order must not ship (0: none).

    TikTok's changelog "For US and UK markets: introducing On Hold order status"
    (Important notes): ``is_on_hold_order`` true means the order went through the ON_HOLD
    status (the new flow) and "can be shipped without holding it for 1 hour"; false means
    it went from UNPAID straight to AWAITING_SHIPMENT, where "the 1 hour customer remorse
    window still exists": "you need to hold the order for 1 hour before shipping", counted
    here from ``paid_time`` (Get Order Detail). A shop gets both flows. An order without
    the flag (API versions before 202309 leave it out) is held like the old flow: a label
    bought inside the window is wasted by a cancellation, and TikTok Shop labels cannot
    be voided by the caller.
    """
    if raw.get("is_on_hold_order") is True or remorse_hold_s <= 0:
        return 0
    paid = _unix(raw.get("paid_time")) or _unix(raw.get("create_time"))
    return paid + remorse_hold_s if paid else 0


def _unix(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if 0 < number < 2**53 else 0


def parse_order(
    raw: dict[str, Any],
    shop_id: str,
    event_id: str,
    cause: str = "",
    remorse_hold_s: int = DEFAULT_REMORSE_HOLD_S,
) -> Order:
    """One order of Get Order Detail's ``data.orders`` as a parcelflow order.

    The status is TikTok's as it is: ON_HOLD is a status of its own (the same changelog:
    about an hour after payment, address empty, fulfillment calls answer 21011044), and
    ``is_on_hold_order`` only says which flow the order took (``ship_after``)."""
    items = [
        LineItem(
            item_id=str(li["id"]),
            sku_id=str(li["sku_id"]),
            seller_sku=li.get("seller_sku", "") or "",
            product_id=str(li["product_id"]),
            product_name=str(li.get("product_name", "") or "")[:256],
        )
        for li in raw.get("line_items") or []
    ]
    status = OrderStatus.parse(str(raw["status"]))
    return Order(
        event_id=event_id,
        order_id=str(raw["id"]),
        shop_id=shop_id,
        status=status,
        line_items=items,
        update_time=int(raw.get("update_time") or 0),
        source="tiktok",
        cause=cause,
        shipping_type=shipping_type(raw.get("shipping_type")),
        warehouse_id=str(raw.get("warehouse_id") or "")[:128],
        paid_time=_unix(raw.get("paid_time")),
        ship_after=ship_after(raw, remorse_hold_s),
        buyer_cancel_requested=raw.get("is_buyer_request_cancel") is True,
    )


def shipping_type(given: object) -> Literal["TIKTOK", "SELLER", ""]:
    value = str(given or "").upper()
    if value == "TIKTOK":
        return "TIKTOK"
    if value == "SELLER":
        return "SELLER"
    return ""
