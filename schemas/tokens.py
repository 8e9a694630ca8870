"""TikTok tokens on ``tiktok.tokens.v1``: one shop's tokens, sealed, per record."""

from __future__ import annotations

from pydantic import Field

from schemas.common import MAX_INT, Model


class SealedTokens(Model):
    shop_key: str = Field(
        min_length=1, max_length=128, description="The shop id, or * for the default tokens."
    )
    sealed: str = Field(
        max_length=16_384,
        description="The tokens (access, refresh, shop cipher, expiries, unauthorized "
        "reason) as JSON, encrypted with PARCELFLOW_TIKTOK_TOKEN_KEY (Fernet).",
    )
    written_at_ms: int = Field(ge=0, le=MAX_INT)
    writer: str = Field(max_length=128, description="Who wrote it: a replica, or the CLI.")
