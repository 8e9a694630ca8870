"""Assign distinct TikTok line item ids to the units packed in each box.

Pure and deterministic: boxes are taken in the order given (the join sorts them by box
id), each unit takes the first unused line item of its SKU in the order's own item
order, and a box that cannot be filled completely takes nothing (all or nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.box import BoxClosed
from schemas.order import LineItem


def matches(item: LineItem, sku: str) -> bool:
    """A box names a SKU by the seller SKU or by TikTok's SKU id."""
    return sku in (item.seller_sku, item.sku_id)


def foreign_skus(line_items: list[LineItem], box: BoxClosed) -> list[str]:
    """SKUs in the box that no line item of the order has."""
    return [b.sku for b in box.items if not any(matches(i, b.sku) for i in line_items)]


def oversized_skus(line_items: list[LineItem], box: BoxClosed) -> list[str]:
    """SKUs of which the box alone holds more units than the whole order has."""
    wanted: dict[str, int] = {}
    for b in box.items:
        wanted[b.sku] = wanted.get(b.sku, 0) + b.quantity
    return [
        sku for sku, qty in wanted.items() if qty > sum(1 for i in line_items if matches(i, sku))
    ]


@dataclass
class Allocation:
    assigned: dict[str, list[LineItem]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unallocated: list[LineItem] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unallocated


def allocate(line_items: list[LineItem], boxes: list[BoxClosed]) -> Allocation:
    unused = list(line_items)
    result = Allocation()
    for box in boxes:
        taken: list[LineItem] = []
        shortage = ""
        for packed in box.items:
            candidates = [i for i in unused if matches(i, packed.sku) and i not in taken]
            if len(candidates) < packed.quantity:
                shortage = (
                    f"box holds {packed.quantity} x {packed.sku} but only "
                    f"{len(candidates)} unallocated units of it remain in the order"
                )
                break
            taken.extend(candidates[: packed.quantity])
        if shortage:
            result.rejected[box.box_id] = shortage
            continue
        result.assigned[box.box_id] = taken
        taken_ids = {i.item_id for i in taken}
        unused = [i for i in unused if i.item_id not in taken_ids]
    result.unallocated = unused
    return result
