"""docker-compose.yml: published ports on loopback only, each secret only where it is used."""

from __future__ import annotations

from pathlib import Path

import yaml

from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    # the labeler signs TikTok Shipping calls and reads the shops' tokens
    "PARCELFLOW_TIKTOK_APP_SECRET": {"receiver", "enricher", "labeler"},
    "PARCELFLOW_TIKTOK_REFRESH_TOKEN": {"enricher"},
    "PARCELFLOW_TIKTOK_TOKEN_KEY": {"enricher", "labeler"},
    "PARCELFLOW_SHIPIUM_API_KEY": {"labeler"},
    "PARCELFLOW_PRINCIPALS": {"receiver", "dashboard"},
    "PARCELFLOW_DASHBOARD_SESSION_KEY": {"dashboard"},
}


def test_published_ports_listen_on_loopback_and_secrets_go_only_where_used() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    settings = {f"PARCELFLOW_{n.upper()}" for n in Settings.model_fields}
    for name, service in services.items():
        env = service.get("environment", {})
        assert {k for k in env if k.startswith("PARCELFLOW_")} <= settings, name
        for secret, users in SECRETS.items():
            assert (secret in env) == (name in users), (name, secret)
