"""Settings a worker cannot start with: refused before it connects to anything, in one
line naming the setting (never its value), exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_SECRETS
from workers.cli import preflight
from workers.errors import ConfigError
from workers.settings import Settings

GOOD_KEY = "k" * 48
STATION = {"roles": ["boxes"], "warehouses": ["WH-A"]}


def settings(**overrides: Any) -> Settings:
    return Settings(**{**FAKE_SECRETS, **overrides})


@pytest.mark.parametrize(
    ("worker", "overrides", "says"),
    [
        ("enricher", {"tiktok_token_key": ""}, "PARCELFLOW_TIKTOK_TOKEN_KEY must be set"),
        ("enricher", {"tiktok_token_key": "not-a-key"}, "is not a Fernet key"),
        ("enricher", {"tiktok_app_secret": ""}, "PARCELFLOW_TIKTOK_APP_SECRET must be set"),
        ("labeler", {"shipium_api_key": ""}, "PARCELFLOW_SHIPIUM_API_KEY must be set"),
        (
            "labeler",
            {"label_providers": {"7495": "tiktok"}, "tiktok_token_key": ""},
            "PARCELFLOW_TIKTOK_TOKEN_KEY",
        ),
        ("receiver", {"tiktok_app_secret": ""}, "verifies every webhook's signature"),
        (
            "receiver",
            {"ingest_open": True, "receiver_host": "0.0.0.0", "principals": {}},
            "PARCELFLOW_INGEST_OPEN",
        ),
        ("receiver", {"ingest_token": "short-7"}, "shorter than 32 characters"),
        (
            "receiver",
            {
                "principals": {
                    "a": {**STATION, "token": "t" * 43},
                    "b": {**STATION, "token": "t" * 43},
                }
            },
            "principals holding the same token: a, b",
        ),
        (
            "dashboard",
            {"dashboard_host": "0.0.0.0", "ingest_open": True, "principals": {}},
            "PARCELFLOW_INGEST_OPEN",
        ),
        (
            "dashboard",
            {"dashboard_host": "0.0.0.0", "dashboard_cookie_secure": False},
            "PARCELFLOW_DASHBOARD_COOKIE_SECURE=false",
        ),
        ("dashboard", {"dashboard_session_key": "short"}, "shorter than 32 characters"),
    ],
)
def test_a_setting_a_worker_cannot_start_with_is_refused(
    worker: str, overrides: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        preflight(worker, settings(**overrides))


def test_good_settings_pass() -> None:
    for worker in ("receiver", "enricher", "planner", "labeler", "auditor", "dashboard"):
        preflight(worker, settings(dashboard_session_key=GOOD_KEY))
    on_loopback = settings(dashboard_cookie_secure=False, dashboard_host="127.0.0.1")
    preflight("dashboard", on_loopback)


def test_a_principal_named_in_the_settings_and_the_file_is_refused(tmp_path: Path) -> None:
    spec = {**STATION, "token_sha256": "a" * 64}
    file = tmp_path / "principals.json"
    file.write_text(json.dumps({"station-a1": spec}))
    twice = settings(
        principals={"station-a1": {**STATION, "token": "b" * 43}}, principals_file=file
    )
    with pytest.raises(ConfigError, match="named in both PARCELFLOW_PRINCIPALS and"):
        preflight("receiver", twice)


def test_a_worker_refused_says_one_line_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    env |= settings(tiktok_token_key="").as_env()
    env["PARCELFLOW_KAFKA_BOOTSTRAP"] = "127.0.0.1:9"  # never reached: refused before
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "enricher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parcelflow enricher: not starting: "), lines
    assert "PARCELFLOW_TIKTOK_TOKEN_KEY must be set" in lines[0]
