"""TikTok Shop signatures: webhook ``Authorization`` and Open API ``sign``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

UNSIGNED_PARAMS = frozenset({"sign", "access_token"})


def webhook_signature(app_key: str, app_secret: str, body: bytes) -> str:
    """hex(HMAC-SHA256(key=app_secret, message=app_key + raw body))."""
    return hmac.new(app_secret.encode(), app_key.encode() + body, hashlib.sha256).hexdigest()


def verify_webhook(app_key: str, app_secret: str, body: bytes, authorization: str) -> bool:
    """Constant-time check of a webhook's ``Authorization`` header over the raw body."""
    if not authorization.isascii():  # a signature is hex: anything else is no signature
        return False
    expected = webhook_signature(app_key, app_secret, body)
    return hmac.compare_digest(expected.encode(), authorization.strip().lower().encode())


def api_signature(app_secret: str, path: str, params: Mapping[str, str], body: bytes = b"") -> str:
    """The ``sign`` query parameter of an Open API request (not multipart).

    Sorted ``{key}{value}`` of the query parameters except sign and access_token,
    prefixed by the path, followed by the raw body, wrapped in the secret, HMAC-SHA256.
    """
    joined = "".join(f"{k}{params[k]}" for k in sorted(params) if k not in UNSIGNED_PARAMS)
    message = f"{app_secret}{path}{joined}".encode() + body + app_secret.encode()
    return hmac.new(app_secret.encode(), message, hashlib.sha256).hexdigest()


def verify_api_signature(
    app_secret: str, path: str, params: Mapping[str, str], body: bytes = b""
) -> bool:
    given = params.get("sign", "")
    return hmac.compare_digest(api_signature(app_secret, path, params, body), given)
