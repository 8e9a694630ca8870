"""The erasures a worker knows of, from ``buyer.erasures.v1``. Pure: time passed in.

A request takes effect at its ``not_before_ms`` (0: at once; a de-authorization's after
its grace period) unless a ``cancelled`` record of it came first (the seller authorized
the app again, say); ``done`` records change nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.buyer import Erasure


@dataclass
class Erasures:
    requests: dict[str, Erasure] = field(default_factory=dict)  # request id -> request
    cancelled: set[str] = field(default_factory=set)
    orders: dict[str, int] = field(default_factory=dict)  # order id -> effective from, ms
    shops: dict[str, int] = field(default_factory=dict)  # shop id -> effective from, ms

    def take(self, erasure: Erasure) -> None:
        if erasure.status == "cancelled":
            self.cancelled.add(erasure.request_id)
            request = self.requests.pop(erasure.request_id, None)
            if request is not None:
                self._rebuild()
        elif erasure.status == "requested" and erasure.request_id not in self.cancelled:
            self.requests[erasure.request_id] = erasure
            self._note(erasure)

    def _note(self, erasure: Erasure) -> None:
        where = self.orders if erasure.scope == "order" else self.shops
        ident = erasure.order_id if erasure.scope == "order" else erasure.shop_id
        where[ident] = min(where.get(ident, erasure.not_before_ms), erasure.not_before_ms)

    def _rebuild(self) -> None:
        self.orders.clear()
        self.shops.clear()
        for request in self.requests.values():
            self._note(request)

    def covers(self, order_id: str, shop_id: str, now_ms: int) -> bool:
        """Whether the order's (or its shop's) buyer data is erased by now."""
        order = self.orders.get(order_id)
        shop = self.shops.get(shop_id) if shop_id else None
        return (order is not None and order <= now_ms) or (shop is not None and shop <= now_ms)

    def due(self, now_ms: int) -> list[Erasure]:
        """The requests in effect by now."""
        return [r for r in self.requests.values() if r.not_before_ms <= now_ms]
