"""The stack while every worker is scaled out and in and killed (``make scale``, smaller).

80 s of traffic; two processes of each scaled worker at the peak, one SIGKILL each,
back to one by SIGTERM, all under demo traffic from several shops whose TikTok tokens
expire and rotate meanwhile; then every order against the label simulator's record and
every shop's tokens against the simulated TikTok's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.scale import SCALED, run_scale

pytestmark = pytest.mark.slow


def test_workers_scaled_out_and_in_and_killed_under_traffic_lose_nothing(tmp_path: Path) -> None:
    result = run_scale(tmp_path, seconds=80, seed=5, peak=2, token_ttl_s=20, say=False)
    print(f"\n{result.last_line()} restarts={result.restarts} tiktok={result.tiktok}")
    print("\n".join(result.steps))
    assert result.problems == []
    assert result.verdict.labeled == result.verdict.orders == 160
    assert result.verdict.duplicate_calls == 0
    assert result.verdict.lost == 0
    assert result.unauthorized == []
    assert result.peak == {worker: 2 for worker in SCALED}
    assert all(result.restarts.get(worker, 0) >= 1 for worker in SCALED), result.restarts
    # each start and stop of a group member moves partitions: enricher (two groups),
    # planner and labeler each gained and lost a member and lost one to SIGKILL
    assert result.rebalances >= 8
    assert result.tiktok["refreshes"] >= 6, "the shops' tokens were not refreshed meanwhile"
