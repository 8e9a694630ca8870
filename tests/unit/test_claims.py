"""Box claims: a box id is held by one order per warehouse, until it may be reused, and
the fetch by box id never answers a label that is not the box's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from schemas.codec import encode
from tests.unit.factories import label_result
from workers.labels import claims
from workers.labels.claims import Ambiguous, Claim, Found, Verdict, decide
from workers.labels.store import FolderStore, manifest_name

DAY_MS = 86_400_000


def wanted(order: str, at_ms: int = 10 * DAY_MS, box: str = "BOX-1", wh: str = "A") -> Claim:
    return Claim(
        warehouse_id=wh, box_id=box, order_id=order, job_id=f"job-{order}", claimed_at_ms=at_ms
    )


def test_a_free_box_is_claimed_and_its_own_order_claims_it_again() -> None:
    assert decide(None, wanted("O1"), DAY_MS) == (Verdict.CLAIM, wanted("O1"))
    held = wanted("O1")
    assert decide(held, wanted("O1", at_ms=11 * DAY_MS), DAY_MS) == (Verdict.HELD, None)
    regrouped = wanted("O1").model_copy(update={"job_id": "job-O1-more-boxes"})
    verdict, write = decide(held, regrouped, DAY_MS)
    assert verdict is Verdict.CLAIM and write is not None
    assert (write.job_id, write.claimed_at_ms) == ("job-O1-more-boxes", held.claimed_at_ms)


def test_another_order_is_refused_and_recorded_until_the_box_id_may_be_reused() -> None:
    held = wanted("O1")
    verdict, write = decide(held, wanted("O2", at_ms=10 * DAY_MS + 5), DAY_MS)
    assert verdict is Verdict.REFUSE and write is not None
    assert (write.order_id, write.contested_by) == ("O1", ["O2"])
    assert decide(write, wanted("O2"), DAY_MS) == (Verdict.REFUSE, None)  # recorded once
    # a day later the warehouse may give the id to another order: the contest goes
    later = wanted("O3", at_ms=11 * DAY_MS)
    assert decide(write, later, DAY_MS) == (Verdict.CLAIM, later)


def test_claims_in_a_store_resolve_to_the_box_label_or_name_both_orders(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "labels")

    async def go() -> None:
        reuse = DAY_MS
        assert await claims.claim(store, wanted("O1"), reuse) is None
        assert await claims.resolve(store, "A", "BOX-1", None) is None  # not labeled yet
        await store.put(manifest_name("job-O1"), encode(label_result("O1")), "application/json")
        found = await claims.resolve(store, "A", "BOX-1", None)
        assert isinstance(found, Found) and found.label.order_id == "O1"
        # the same box id in another warehouse is another box
        assert await claims.claim(store, wanted("O9", wh="B"), reuse) is None
        assert await claims.resolve(store, "B", "BOX-1", None) is None
        # a second order with the same box id in A: refused, and the fetch cannot tell
        held = await claims.claim(store, wanted("O2", at_ms=10 * DAY_MS + 1), reuse)
        assert held is not None and held.order_id == "O1"
        assert await claims.resolve(store, "A", "BOX-1", None) == Ambiguous(["O1", "O2"])
        by_order = await claims.resolve(store, "A", "BOX-1", "O1")
        assert isinstance(by_order, Found) and by_order.label.order_id == "O1"
        assert await claims.resolve(store, "A", "BOX-1", "O2") == Ambiguous(["O1", "O2"])
        assert await claims.resolve(store, "A", "BOX-1", "O7") is None
        # a label record that does not hold the claimed box is never answered
        await store.put(manifest_name("job-O1"), encode(label_result("O1", box_id="OTHER")), "")
        assert await claims.resolve(store, "A", "BOX-1", "O1") == Ambiguous(["O1", "O2"])
        # past the reuse window another order takes the id
        assert await claims.claim(store, wanted("O3", at_ms=12 * DAY_MS), reuse) is None
        await store.put(manifest_name("job-O3"), encode(label_result("O3")), "")
        found = await claims.resolve(store, "A", "BOX-1", None)
        assert isinstance(found, Found) and found.label.order_id == "O3"

    asyncio.run(go())


def test_concurrent_claims_of_one_box_leave_exactly_one_holder(tmp_path: Path) -> None:
    """Twenty orders race for one box id (conditional writes): one holds it, every other
    is refused, and the claim names as many of them as it keeps."""
    store = FolderStore(tmp_path / "labels")

    async def go() -> list[Claim | None]:
        return await asyncio.gather(
            *(claims.claim(store, wanted(f"O{n}"), DAY_MS) for n in range(20))
        )

    answers = asyncio.run(go())
    winners = [n for n, held in enumerate(answers) if held is None]
    assert len(winners) == 1
    final = claims.parse((tmp_path / "labels").joinpath(*claimed(tmp_path)).read_bytes())
    assert final is not None and final.order_id == f"O{winners[0]}"
    losers = {f"O{n}" for n in range(20) if n != winners[0]}
    assert set(final.contested_by) <= losers
    assert len(final.contested_by) == len(set(final.contested_by)) == claims.MAX_CONTESTED


def claimed(tmp_path: Path) -> tuple[str, str]:
    (path,) = (tmp_path / "labels" / "boxes").glob("*.json")
    return "boxes", path.name
