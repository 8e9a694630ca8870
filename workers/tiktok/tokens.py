"""Access and refresh tokens per shop, kept in a file so a refreshed token survives a restart.

The file is JSON, ``{"shops": {shop_id: {access_token, refresh_token, shop_cipher, ...}}}``,
written atomically with mode 0600. The enricher rewrites it after every refresh; an
operator writes a shop's new tokens with ``parcelflow tokens set`` after the seller
authorized the app again, and the enricher picks the change up by itself (it looks at the
file's modification time before each use). The tokens in settings serve every shop that
has no entry of its own (the ``*`` entry).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, SecretStr

from workers.settings import Settings

log = structlog.get_logger(__name__)

ANY_SHOP = "*"


class ShopAuth(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr
    shop_cipher: str = ""
    access_expires_at: int = 0  # unix seconds; 0: unknown
    refresh_expires_at: int = 0
    unauthorized: str = ""  # why the shop must authorize the app again; "" while it is fine

    def revealed(self) -> dict[str, Any]:
        data = self.model_dump()
        data["access_token"] = self.access_token.get_secret_value()
        data["refresh_token"] = self.refresh_token.get_secret_value()
        return data

    def needs_refresh(self, before_s: float, now: float) -> bool:
        return self.access_expires_at > 0 and now >= self.access_expires_at - before_s


class TokenStore:
    def __init__(self, path: Path | None, defaults: dict[str, ShopAuth]) -> None:
        self.path = path
        self.shops = dict(defaults)
        self._seen_mtime: int | None = None
        self._load()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        defaults = {}
        if settings.tiktok_access_token.get_secret_value() or (
            settings.tiktok_refresh_token.get_secret_value()
        ):
            defaults[ANY_SHOP] = ShopAuth(
                access_token=settings.tiktok_access_token,
                refresh_token=settings.tiktok_refresh_token,
                shop_cipher=settings.tiktok_shop_cipher,
            )
        return cls(settings.tiktok_token_file, defaults)

    def _mtime(self) -> int | None:
        try:
            return None if self.path is None else self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _load(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._seen_mtime or self.path is None:
            return
        raw = orjson.loads(self.path.read_bytes())
        for shop_id, entry in (raw.get("shops") or {}).items():
            self.shops[shop_id] = ShopAuth.model_validate(entry)
        self._seen_mtime = mtime
        log.info("tiktok_tokens_loaded", shops=sorted(raw.get("shops") or {}))

    def get(self, shop_id: str) -> tuple[str, ShopAuth] | None:
        """The entry that serves ``shop_id`` (its own, else ``*``), after a reload if changed."""
        self._load()
        for key in (shop_id, ANY_SHOP):
            if key in self.shops:
                return key, self.shops[key]
        return None

    def put(self, key: str, auth: ShopAuth) -> None:
        self.shops[key] = auth
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps(
            {"shops": {k: v.revealed() for k, v in sorted(self.shops.items())}},
            option=orjson.OPT_INDENT_2,
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._seen_mtime = self._mtime()


def set_shop_tokens(
    path: Path, shop_id: str, access_token: str, refresh_token: str, shop_cipher: str
) -> None:
    """Write one shop's tokens (after it authorized the app again), clearing its alert."""
    store = TokenStore(path, {})
    store.put(
        shop_id,
        ShopAuth(
            access_token=SecretStr(access_token),
            refresh_token=SecretStr(refresh_token),
            shop_cipher=shop_cipher,
        ),
    )
    log.info("tiktok_tokens_set", shop_id=shop_id, at=int(time.time()))
