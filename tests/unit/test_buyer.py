"""Sealed recipients: authenticated, bound to their order, never readable as text; the
local KEK; and error messages that carry no buyer data."""

from __future__ import annotations

import asyncio
import base64

import pytest

from schemas.common import Address
from schemas.label import LabelJob
from tests.unit.factories import BUYER, TEST_KEY, TEST_KEY_ID, job, sealed
from workers.buyer.kek import LocalKek, UnwrapFailed, Wrapped, check
from workers.buyer.keys import Unreadable, open_with, parts_of, seal_with
from workers.errors import ConfigError, problem_of
from workers.settings import Settings


def test_a_sealed_recipient_opens_for_its_order_only_and_hides_every_field() -> None:
    text = sealed("O1")
    assert open_with(parts_of(text), TEST_KEY, "O1") == BUYER
    for field in (BUYER.name, BUYER.street1, BUYER.city):
        assert field not in text
    with pytest.raises(Unreadable):  # moved to another order
        open_with(parts_of(text), TEST_KEY, "O2")
    with pytest.raises(Unreadable):  # another key
        open_with(parts_of(text), bytes(32), "O1")
    assert sealed("O1") != sealed("O1")  # a fresh nonce each time


def test_a_changed_or_malformed_sealed_value_is_unreadable_without_echoing_it() -> None:
    text = sealed("O1")
    flipped = text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]
    for bad in (flipped, "pf1.short", "pf2." + text[4:], "pf1." + TEST_KEY_ID + ".!!.??"):
        with pytest.raises(Unreadable) as caught:
            open_with(parts_of(bad), TEST_KEY, "O1")
        assert BUYER.name not in str(caught.value)


def test_the_schema_takes_only_sealed_recipients() -> None:
    assert job("O1").recipient is not None
    with pytest.raises(ValueError, match="recipient"):
        LabelJob.model_validate({**job("O1").model_dump(), "recipient": BUYER.model_dump()})
    with pytest.raises(ValueError, match="recipient"):
        LabelJob.model_validate({**job("O1").model_dump(), "recipient": "Jane Doe, 1 Main St"})
    seal_with(TEST_KEY_ID, TEST_KEY, "O1", Address(name="x" * 256, street1="y" * 256))


def test_the_local_kek_binds_each_wrapped_key_to_its_context() -> None:
    kek = LocalKek(bytes(range(32)))

    async def run() -> None:
        wrapped = await kek.wrap(b"k" * 32, "shop-1/key-1")
        assert await kek.unwrap(wrapped, "shop-1/key-1") == b"k" * 32
        with pytest.raises(UnwrapFailed):
            await kek.unwrap(wrapped, "shop-2/key-1")
        with pytest.raises(UnwrapFailed):
            await LocalKek(bytes(32)).unwrap(wrapped, "shop-1/key-1")
        with pytest.raises(UnwrapFailed):
            await kek.unwrap(Wrapped("kms:other", wrapped.blob), "shop-1/key-1")

    asyncio.run(run())


def test_no_key_service_means_no_start() -> None:
    from tests.conftest import FAKE_SECRETS

    given = {k: v for k, v in FAKE_SECRETS.items() if not k.startswith("buyer_")}
    with pytest.raises(ConfigError, match="PARCELFLOW_BUYER_KEK must be set"):
        check(Settings(**given))
    short = base64.b64encode(bytes(16)).decode()
    with pytest.raises(ConfigError, match="32 bytes"):
        check(Settings(**given, buyer_kek="local", buyer_local_key=short))
    with pytest.raises(ConfigError, match="PIN"):
        check(Settings(**given, buyer_kek="pkcs11"))
    with pytest.raises(ConfigError, match="KMS_KEY_ID"):
        check(Settings(**given, buyer_kek="kms"))


def test_an_error_names_its_kind_never_the_value_it_failed_on() -> None:
    try:
        int("Jane Doe")
    except ValueError as exc:
        assert problem_of(exc) == "ValueError"
    assert problem_of(KeyError("status")) == "KeyError: missing 'status'"


def test_an_erasure_takes_effect_at_its_time_unless_cancelled_first() -> None:
    from schemas.buyer import Erasure
    from workers.buyer.registry import Erasures

    def request(rid: str, shop: str, not_before: int) -> Erasure:
        return Erasure(
            event_id=rid,
            request_id=rid,
            scope="shop",
            shop_id=shop,
            principal="t",
            at_ms=0,
            not_before_ms=not_before,
        )

    known = Erasures()
    known.take(request("now", "S1", 0))
    known.take(request("later", "S2", 1_000))
    known.take(request("cancelled", "S3", 1_000))
    known.take(request("cancelled", "S3", 1_000).model_copy(update={"status": "cancelled"}))
    assert known.covers("any", "S1", 0) and not known.covers("any", "S2", 999)
    assert known.covers("any", "S2", 1_000) and not known.covers("any", "S3", 5_000)
    assert [r.request_id for r in known.due(1_000)] == ["now", "later"]
    known.take(
        Erasure(event_id="o", request_id="o", scope="order", order_id="O9", principal="t", at_ms=0)
    )
    assert known.covers("O9", "", 0) and not known.covers("O8", "", 0)


def test_logs_and_failure_messages_carry_no_buyer_data() -> None:
    from workers.labeler.jobs import scrubbed
    from workers.logs import REDACTED, redact_buyer_data

    event = {"event": "x", "name": "Jane", "details": {"street1": "1 Main St", "order": "O1"}}
    assert redact_buyer_data(None, "info", event) == {
        "event": "x",
        "name": REDACTED,
        "details": {"street1": REDACTED, "order": "O1"},
    }
    message = "HTTP 400: destinationAddress '1 Main St, Austin' has no postal code"
    assert scrubbed(message, BUYER) == (
        "HTTP 400: destinationAddress '[buyer data], [buyer data]' has no postal code"
    )
