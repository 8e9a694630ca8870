"""TikTok signatures, checked against values computed independently of the code under test."""

import hashlib
import hmac

from workers.tiktok.signing import (
    api_signature,
    verify_api_signature,
    verify_webhook,
    webhook_signature,
)

SECRET = "e59af819cc"
KEY = "6a2b1c"


def test_webhook_signature_is_hmac_of_app_key_and_raw_body() -> None:
    body = b'{"type":1,"shop_id":"7495","data":{"order_id":"1"}}'
    expected = hmac.new(b"e59af819cc", b"6a2b1c" + body, hashlib.sha256).hexdigest()
    assert webhook_signature(KEY, SECRET, body) == expected
    assert verify_webhook(KEY, SECRET, body, expected)
    assert verify_webhook(KEY, SECRET, body, expected.upper())  # hex case does not matter


def test_webhook_signature_rejects_any_change_of_body_key_or_signature() -> None:
    body = b'{"a":1}'
    good = webhook_signature(KEY, SECRET, body)
    assert not verify_webhook(KEY, SECRET, body + b" ", good)
    assert not verify_webhook("other", SECRET, body, good)
    assert not verify_webhook(KEY, SECRET, body, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not verify_webhook(KEY, SECRET, body, "")


def test_api_signature_golden() -> None:
    # Hand-built per the Partner API guide: sorted params except sign/access_token,
    # path first, body appended, wrapped in the secret, HMAC-SHA256 keyed by the secret.
    params = {
        "timestamp": "1700000000",
        "app_key": KEY,
        "shop_cipher": "ROW_abc",
        "ids": "576,577",
        "access_token": "never-signed",
        "sign": "ignored",
    }
    message = (
        "e59af819cc/order/202309/orders"
        "app_key6a2b1cids576,577shop_cipherROW_abctimestamp1700000000"
        '{"x":1}'
        "e59af819cc"
    )
    expected = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert api_signature(SECRET, "/order/202309/orders", params, b'{"x":1}') == expected


def test_verify_api_signature_round_trip_and_tamper() -> None:
    params = {"app_key": KEY, "timestamp": "1", "ids": "9"}
    params["sign"] = api_signature(SECRET, "/p", params)
    assert verify_api_signature(SECRET, "/p", params)
    assert not verify_api_signature(SECRET, "/p", {**params, "ids": "10"})
    assert not verify_api_signature(SECRET, "/other", params)


def test_bearer_scheme_is_case_insensitive_and_a_bare_token_is_refused() -> None:
    from workers.auth import bearer_token

    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer abc") == "abc"
    assert bearer_token("BEARER   abc ") == "abc"
    assert bearer_token("abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token("Basic abc") is None


def test_json_nesting_is_bounded() -> None:
    from workers.receiver.validate import MAX_DEPTH, Invalid, parse_json

    deep = parse_json(b'{"a":' + b"[" * 300 + b"]" * 300 + b"}")
    assert isinstance(deep, Invalid) and "deeper than" in deep.reason
    assert not isinstance(parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH), Invalid)
