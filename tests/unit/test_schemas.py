"""Models, codec and the exported JSON Schemas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.box import BoxClosed
from schemas.codec import decode, encode
from schemas.export import JSON_DIR, render
from schemas.order import OrderStatus
from schemas.topics import ALL_TOPICS, COPARTITIONED
from tests.unit.factories import box, order
from workers.cli import parser
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_exported_json_schemas_are_up_to_date() -> None:
    on_disk = {p.name: p.read_bytes() for p in JSON_DIR.glob("*.json")}
    assert on_disk == render(), "schemas/json is stale: run `make schemas`"


def test_every_topic_has_a_versioned_name_and_a_schema() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(n.endswith(".v1") for n in names)
    assert {t.key for t in COPARTITIONED} == {"order id"}


def test_round_trip_and_rejections_name_the_field() -> None:
    original = box("B1", {"A": 2})
    assert decode(BoxClosed, encode(original)) == original
    assert decode(BoxClosed, b"{not json") == "not valid JSON"
    assert decode(BoxClosed, None) == "empty value"
    bad = encode(original).replace(b'"quantity":2', b'"quantity":0')
    reason = decode(BoxClosed, bad)
    assert isinstance(reason, str) and reason.startswith("items.0.quantity:")


def test_cancel_is_spelled_two_ways() -> None:
    assert OrderStatus.parse("CANCEL") is OrderStatus.CANCELLED
    assert OrderStatus.parse("CANCELLED") is OrderStatus.CANCELLED
    assert order(status=OrderStatus.parse("CANCEL")).status == "CANCELLED"


def test_the_settings_table_is_generated_from_the_settings_and_current() -> None:
    """docs/configuration.md holds the table `make docs` makes, row for row."""
    from workers.cli import settings_rows

    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [row for row in settings_rows() if row not in text.splitlines()]
    assert missing == [], f"docs/configuration.md is stale (run `make docs`): {missing[:3]}"
    documented = set(re.findall(r"`(PARCELFLOW_[A-Z0-9_]+)`", text))
    expected = {f"PARCELFLOW_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented


def test_secrets_never_print() -> None:
    settings = Settings(tiktok_app_secret="s3cr3t-value", shipium_api_key="k3y-value")  # type: ignore[arg-type]
    assert "s3cr3t-value" not in repr(settings)
    assert "k3y-value" not in str(settings.model_dump())


def test_void_command_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["void", "job-1"])
    assert args.func(Settings(), args) == 3
    assert "TikTok Seller Center" in capsys.readouterr().err


def test_cli_knows_every_process() -> None:
    for command in (
        "receiver",
        "enricher",
        "planner",
        "labeler",
        "simulator",
        "run",
        "up",
        "config",
    ):
        assert parser().parse_args([command]).command == command


def test_the_documented_box_example_is_a_valid_box_closed_event() -> None:
    readme = (ROOT / "docs" / "http-api.md").read_text()
    example = (
        readme.split("### Publishing straight to Kafka")[1].split("```json")[1].split("```")[0]
    )
    box = BoxClosed.model_validate_json(example)
    assert box.items[0].sku == "MUG-RED"


def test_the_asyncapi_document_is_current_valid_and_names_every_topic() -> None:
    """schemas/asyncapi.json: what `make schemas` writes, valid AsyncAPI 3.0 (the spec's
    own JSON Schema, from @asyncapi/specs 6.11.1, Apache-2.0, in tests/data/), a channel
    per topic of the registry whose message payload is that topic's exported schema."""
    import json

    import jsonschema

    from schemas.export import ASYNCAPI, render_asyncapi
    from schemas.topics import ALL_TOPICS

    assert ASYNCAPI.read_bytes() == render_asyncapi(), "stale: run `make schemas`"
    doc = json.loads(ASYNCAPI.read_bytes())
    spec = json.loads((ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json").read_bytes())
    jsonschema.validate(doc, spec)
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {t.name for t in ALL_TOPICS} | {"/v1/labels/events"}  # and the SSE
    for name, message in doc["components"]["messages"].items():
        payload = ASYNCAPI.parent / message["payload"]["$ref"]
        assert json.loads(payload.read_bytes())["$id"] == f"parcelflow/{payload.stem}", name
    bad = json.loads(json.dumps(doc))
    del bad["channels"]["orders"]["address"]
    bad["channels"]["orders"]["adress"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, spec)  # the validation can fail
