"""Labeler limits on ``labeler.limits.v1``: what one labeler replica learned of the label
provider, so that a replica that starts begins near the capacity its group found."""

from __future__ import annotations

from pydantic import Field

from schemas.common import MAX_INT, Model


class LimitReport(Model):
    writer: str = Field(
        min_length=1, max_length=128, description="The replica that reports (host:pid)."
    )
    limit: float = Field(ge=0, le=100_000, description="Its adaptive limit: calls in flight.")
    ceiling: float = Field(
        0, ge=0, le=100_000, description="The most it may reach (labeler_max_in_flight)."
    )
    baseline_s: float = Field(
        ge=0, le=3_600, description="The label call latency it measured without a queue."
    )
    partitions: int = Field(
        ge=0, le=100_000, description="Partitions of label-jobs.v1 it held when it reported."
    )
    leaving: bool = Field(False, description="Its last report: it stopped.")
    at_ms: int = Field(ge=0, le=MAX_INT, description="When it reported (unix ms).")
