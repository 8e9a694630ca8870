"""Principals, tokens and dashboard sessions: who is calling and what it may do."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import FAKE_SECRETS
from workers.auth import Principals, bearer_token, is_loopback
from workers.dashboard.access import Access, Sessions
from workers.settings import PrincipalSpec, Settings

STATION = "station-a-token-0123456789"
OMS = "oms-token-0123456789abcdef"


def settings(**values: Any) -> Settings:
    return Settings(**{**FAKE_SECRETS, "principals": {}, **values})


def test_a_principal_has_its_roles_and_only_its_warehouses() -> None:
    principals = Principals.from_settings(
        settings(
            principals={
                "station-a": {"token": STATION, "roles": ["boxes", "labels"], "warehouses": ["A"]},
                "oms": {
                    "token_sha256": hashlib.sha256(OMS.encode()).hexdigest(),
                    "roles": ["orders"],
                },
                "ops": {"token": "o" * 20, "roles": ["operator", "labels"], "warehouses": ["*"]},
            }
        )
    )
    station = principals.from_header(f"Bearer {STATION}")
    assert station is not None and station.name == "station-a"
    assert station.may("boxes") and not station.may("orders") and not station.may("operator")
    assert station.in_warehouse("A") and not station.in_warehouse("B")
    assert station.only_warehouse == "A"
    oms = principals.from_header(f"bearer {OMS}")  # a token given as its digest
    assert oms is not None and oms.roles == {"orders"}
    ops = principals.from_header("Bearer " + "o" * 20)
    assert ops is not None and ops.in_warehouse("anything") and ops.only_warehouse is None
    assert principals.from_header(f"Bearer {STATION}x") is None
    assert principals.from_header(None) is None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tökén-0123456789abcdef",  # not ASCII
        "Bearer \x1b[2Jtoken",  # a control character
        "Bearer a b",  # two words
        "Basic dXNlcjpwYXNz",
        STATION,  # a bare token
        "",
    ],
)
def test_a_malformed_authorization_header_is_no_principal(header: str) -> None:
    principals = Principals.from_settings(
        settings(principals={"s": {"token": STATION, "roles": ["boxes"], "warehouses": ["A"]}})
    )
    assert principals.from_header(header) is None


def test_the_deprecated_ingest_tokens_keep_every_role_in_every_warehouse() -> None:
    old, oms_token = "legacy-token-0123456789-abcdefghijkl", "oms-legacy-1-0123456789-abcdefghij"
    principals = Principals.from_settings(
        settings(ingest_token=old, ingest_tokens={"oms": oms_token})
    )
    legacy = principals.from_header(f"Bearer {old}")
    assert legacy is not None and legacy.name == "default"
    assert legacy.roles == {"orders", "boxes", "labels", "operator"}
    assert legacy.warehouses is None
    oms = principals.from_header(f"Bearer {oms_token}")
    assert oms is not None and oms.name == "oms"


def test_ingest_open_serves_anyone_only_while_no_principal_is_configured() -> None:
    assert Principals.from_settings(settings(ingest_open=True)).from_header(None) is not None
    configured = settings(
        ingest_open=True, principals={"s": {"token": STATION, "roles": ["orders"]}}
    )
    assert Principals.from_settings(configured).from_header(None) is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"roles": ["orders"]}, "exactly one of token and token_sha256"),
        ({"token": STATION, "token_sha256": "a" * 64, "roles": ["orders"]}, "exactly one"),
        ({"token": "short", "roles": ["orders"]}, "at least 16 characters"),
        ({"token": STATION, "roles": ["boxes"]}, 'need "warehouses"'),
        ({"token": STATION, "roles": ["admin"]}, "Input should be"),
        ({"token_sha256": "XYZ", "roles": ["orders"]}, "should match pattern"),
        ({"token": STATION, "roles": []}, "at least 1 item"),
    ],
)
def test_an_incomplete_principal_is_refused(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        PrincipalSpec.model_validate(spec)


def test_a_principals_file_is_read_and_its_problems_never_echo_a_token(tmp_path: Path) -> None:
    path = tmp_path / "principals.json"
    digest = hashlib.sha256(STATION.encode()).hexdigest()
    path.write_text(
        json.dumps({"station-a": {"token_sha256": digest, "roles": ["boxes"], "warehouses": ["A"]}})
    )
    principals = Principals.from_settings(settings(principals_file=path))
    station = principals.from_header(f"Bearer {STATION}")
    assert station is not None and station.name == "station-a"

    secret = "very-secret-token-in-a-bad-entry"
    path.write_text(json.dumps({"oops": {"token": secret, "roles": ["boxes"]}}))
    with pytest.raises(ValueError, match="warehouses") as refused:
        Principals.from_settings(settings(principals_file=path))
    assert secret not in str(refused.value)
    path.write_text("{not json " + secret)
    with pytest.raises(ValueError, match="not valid JSON") as refused:
        Principals.from_settings(settings(principals_file=path))
    assert secret not in str(refused.value)


def test_two_principals_cannot_share_a_token() -> None:
    with pytest.raises(ValueError, match="same token"):
        Principals.from_settings(
            settings(
                principals={
                    "a": {"token": STATION, "roles": ["orders"]},
                    "b": {"token": STATION, "roles": ["operator"]},
                }
            )
        )


def test_a_session_is_signed_ends_and_cannot_be_forged() -> None:
    sessions = Sessions(b"k" * 32, seconds=60)
    value, session = sessions.issue("ops", "ab" * 8, now=1000)
    found = sessions.verify(value, now=1059)
    assert found == session and found.name == "ops" and len(found.session_id) == 32
    assert sessions.verify(value, now=1061) is None  # ended
    expiry, sid, token, name, signature = value.split(":")
    assert sessions.verify(f"{expiry}:{sid}:{token}:admin:{signature}", now=1000) is None
    assert sessions.verify(f"9999999999:{sid}:{token}:{name}:{signature}", now=1000) is None
    assert sessions.issue("ops", "ab" * 8, now=1000)[1].session_id != session.session_id
    assert Sessions(b"x" * 32, seconds=60).verify(value, now=1000) is None  # another key
    assert sessions.verify("", now=1000) is None


def test_an_open_dashboard_is_refused_off_loopback_and_a_proxy_needs_its_operators() -> None:
    none = Principals.from_settings(settings())
    with pytest.raises(ValueError, match="loopback"):
        Access(settings(dashboard_auth="none", dashboard_host="0.0.0.0"), none)
    assert Access(settings(dashboard_auth="none", dashboard_host="127.0.0.1"), none).mode == "none"
    with pytest.raises(ValueError, match="PROXY_OPERATORS"):
        Access(settings(dashboard_auth="proxy"), none)
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_bearer_token_refuses_what_is_not_printable_ascii() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Bearer ab\u202ec") is None
    assert bearer_token("Bearer abc\x00") is None
