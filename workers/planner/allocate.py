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


def units_by_sku(line_items: list[LineItem]) -> dict[str, int]:
    """How many units of the order each name (seller SKU or SKU id) matches."""
    units: dict[str, int] = {}
    for item in line_items:
        for name in {item.seller_sku, item.sku_id}:
            units[name] = units.get(name, 0) + 1
    return units


def foreign_skus(units: dict[str, int], box: BoxClosed) -> list[str]:
    """SKUs in the box that no line item of the order has (``units`` from units_by_sku)."""
    return [b.sku for b in box.items if b.sku not in units]


def oversized_skus(units: dict[str, int], box: BoxClosed) -> list[str]:
    """SKUs of which the box alone holds more units than the whole order has."""
    wanted: dict[str, int] = {}
    for b in box.items:
        wanted[b.sku] = wanted.get(b.sku, 0) + b.quantity
    return [sku for sku, qty in wanted.items() if qty > units.get(sku, 0)]


@dataclass
class Allocation:
    assigned: dict[str, list[LineItem]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unallocated: list[LineItem] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unallocated


def allocate(line_items: list[LineItem], boxes: list[BoxClosed]) -> Allocation:
    used: set[str] = set()  # item ids: an id goes to one box, even if the order repeats it
    result = Allocation()
    for box in boxes:
        taken: dict[str, LineItem] = {}
        shortage = ""
        for packed in box.items:
            candidates: dict[str, LineItem] = {}
            for item in line_items:
                free = item.item_id not in used and item.item_id not in taken
                if free and matches(item, packed.sku):
                    candidates.setdefault(item.item_id, item)
            if len(candidates) < packed.quantity:
                shortage = (
                    f"box holds {packed.quantity} x {packed.sku} but only "
                    f"{len(candidates)} unallocated units of it remain in the order"
                )
                break
            for item_id in list(candidates)[: packed.quantity]:
                taken[item_id] = candidates[item_id]
        if shortage:
            result.rejected[box.box_id] = shortage
            continue
        result.assigned[box.box_id] = list(taken.values())
        used.update(taken)
    result.unallocated = [item for item in line_items if item.item_id not in used]
    return result
