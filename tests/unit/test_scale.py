"""The scale run's plan and its count of rebalances."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from devstack.scale import SCALED, count_rebalances, plan


def test_each_worker_goes_up_to_the_peak_loses_one_and_comes_back_to_one() -> None:
    steps = plan(100, 3, seed=4)
    assert Counter((s.kind, s.worker) for s in steps) == Counter(
        {(kind, w): n for w in SCALED for kind, n in (("up", 2), ("kill", 1), ("down", 2))}
    )
    ups = [s.at_s for s in steps if s.kind == "up"]
    kills = [s.at_s for s in steps if s.kind == "kill"]
    downs = [s.at_s for s in steps if s.kind == "down"]
    assert 10 <= min(ups) and max(ups) < min(kills) and max(kills) < min(downs) <= max(downs) < 85
    kills = [s.worker for s in steps if s.kind == "kill"]
    assert [s.worker for s in steps if s.kind == "down"] == [w for w in kills for _ in range(2)]
    assert plan(100, 3, seed=4) == steps
    assert plan(100, 3, seed=5) != steps


def test_rebalances_are_generations_of_a_group_beyond_its_first(tmp_path: Path) -> None:
    def joined(group: str, generation: int) -> str:
        return (
            f'{{"event":"Joined group \'{group}\' (generation {generation}) with member_id m"}}\n'
        )

    (tmp_path / "labeler.log").write_text(joined("labels", 0) + joined("labels", 1))
    # another member of the same generation, and the same group's later generations
    (tmp_path / "labeler-1.log").write_text(joined("labels", 1) + joined("labels", 3))
    (tmp_path / "planner.log").write_text(joined("plans", 0) + "not a join\n")
    assert count_rebalances(tmp_path) == 2
