"""Key-encryption keys: what wraps the buyer data keys, held in a key service.

A data key (``workers.buyer.keys``) is stored only wrapped by a key-encryption key (KEK)
that never leaves its key service:

- ``pkcs11``: a secret key in a PKCS#11 token (hardware and cloud HSMs speak PKCS#11;
  the tests and the devstack use SoftHSM2). AES-256-GCM inside the token.
- ``kms``: an AWS KMS key (Encrypt and Decrypt with an encryption context). Writers need
  only ``kms:Encrypt``; only the labeler needs ``kms:Decrypt``.
- ``local``: a plain key from the settings, for development only, where
  ``PARCELFLOW_BUYER_KEK=local`` says so.

A wrapped key names its KEK (``kek_id``), so a KEK rotates without downtime: new data
keys are wrapped by the KEK the settings name now, older ones still unwrap with theirs
for as long as the key service keeps it. Every wrap is bound to a context (the data
key's id and shop): a wrapped key copied under another id does not unwrap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from workers.errors import ConfigError
from workers.settings import BuyerDataSettings

NONCE = 12


class UnwrapFailed(Exception):
    """The key service refused or could not unwrap a data key (its KEK is gone, or the
    wrapped key or its context was changed)."""


@dataclass(frozen=True)
class Wrapped:
    kek_id: str  # which KEK: "<service>:<name>"
    blob: bytes


class KeyService(Protocol):
    async def wrap(self, key: bytes, context: str) -> Wrapped: ...

    async def unwrap(self, wrapped: Wrapped, context: str) -> bytes: ...

    async def close(self) -> None: ...


class LocalKek:
    """A KEK from the settings (development only)."""

    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)
        self.kek_id = "local:" + hashlib.sha256(key).hexdigest()[:16]

    async def wrap(self, key: bytes, context: str) -> Wrapped:
        nonce = os.urandom(NONCE)
        return Wrapped(self.kek_id, nonce + self.aead.encrypt(nonce, key, context.encode()))

    async def unwrap(self, wrapped: Wrapped, context: str) -> bytes:
        if wrapped.kek_id != self.kek_id:
            raise UnwrapFailed(f"wrapped by {wrapped.kek_id}, not by this local key")
        try:
            return self.aead.decrypt(wrapped.blob[:NONCE], wrapped.blob[NONCE:], context.encode())
        except InvalidTag as exc:
            raise UnwrapFailed("the wrapped key or its context was changed") from exc

    async def close(self) -> None:
        return None


class Pkcs11Kek:
    """A KEK in a PKCS#11 token, by label: AES-GCM runs in the token; the key never
    leaves it. python-pkcs11 is synchronous: calls run in a thread, one at a time."""

    def __init__(self, library: Path, token: str, pin: str, label: str, create: bool) -> None:
        import pkcs11

        self.pkcs11 = pkcs11
        self.label = label
        self.lock = threading.Lock()
        try:
            lib = pkcs11.lib(str(library))
            self.session = lib.get_token(token_label=token).open(user_pin=pin, rw=True)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            raise ConfigError(
                f"the PKCS#11 token {token!r} cannot be opened with the library {library} "
                f"and the PIN given: {type(exc).__name__}"
            ) from exc
        if self._key(label) is None:
            if not create:
                raise ConfigError(f"the PKCS#11 token {token!r} has no key labelled {label!r}")
            self.session.generate_key(pkcs11.KeyType.AES, 256, label=label, store=True)

    def _key(self, label: str) -> Any:
        pkcs11 = self.pkcs11
        try:
            return self.session.get_key(
                object_class=pkcs11.ObjectClass.SECRET_KEY,
                key_type=pkcs11.KeyType.AES,
                label=label,
            )
        except pkcs11.NoSuchKey:
            return None

    def _params(self, nonce: bytes, context: str) -> Any:
        from pkcs11.mechanisms import GCMParams

        return GCMParams(nonce, context.encode(), 128)

    def _wrap(self, key: bytes, context: str) -> Wrapped:
        with self.lock:
            nonce = os.urandom(NONCE)
            blob = self._key(self.label).encrypt(
                key,
                mechanism=self.pkcs11.Mechanism.AES_GCM,
                mechanism_param=self._params(nonce, context),
            )
            return Wrapped(f"pkcs11:{self.label}", nonce + bytes(blob))

    def _unwrap(self, wrapped: Wrapped, context: str) -> bytes:
        service, _, label = wrapped.kek_id.partition(":")
        if service != "pkcs11":
            raise UnwrapFailed(f"wrapped by {wrapped.kek_id}, not by a PKCS#11 key")
        with self.lock:
            kek = self._key(label)
            if kek is None:
                raise UnwrapFailed(f"the token has no key labelled {label!r} any more")
            try:
                return bytes(
                    kek.decrypt(
                        wrapped.blob[NONCE:],
                        mechanism=self.pkcs11.Mechanism.AES_GCM,
                        mechanism_param=self._params(wrapped.blob[:NONCE], context),
                    )
                )
            except self.pkcs11.PKCS11Error as exc:
                raise UnwrapFailed(f"the token refused to unwrap: {type(exc).__name__}") from exc

    async def wrap(self, key: bytes, context: str) -> Wrapped:
        return await asyncio.to_thread(self._wrap, key, context)

    async def unwrap(self, wrapped: Wrapped, context: str) -> bytes:
        return await asyncio.to_thread(self._unwrap, wrapped, context)

    async def close(self) -> None:
        with self.lock:
            self.session.close()


class KmsKek:
    """A KEK in AWS KMS (or anything that speaks its API), by key id, ARN or alias."""

    def __init__(self, key_id: str, region: str, endpoint: str) -> None:
        self.key_id = key_id
        self.region = region or None
        self.endpoint = endpoint or None
        self.client: Any = None
        self.stack: Any = None

    async def _client(self) -> Any:
        if self.client is None:
            from contextlib import AsyncExitStack

            from aiobotocore.session import get_session

            self.stack = AsyncExitStack()
            self.client = await self.stack.enter_async_context(
                get_session().create_client(
                    "kms", region_name=self.region, endpoint_url=self.endpoint
                )
            )
        return self.client

    async def wrap(self, key: bytes, context: str) -> Wrapped:
        kms = await self._client()
        answer = await kms.encrypt(
            KeyId=self.key_id, Plaintext=key, EncryptionContext={"parcelflow": context}
        )
        return Wrapped(f"kms:{answer['KeyId']}", answer["CiphertextBlob"])

    async def unwrap(self, wrapped: Wrapped, context: str) -> bytes:
        from botocore.exceptions import ClientError

        service, _, key_id = wrapped.kek_id.partition(":")
        if service != "kms":
            raise UnwrapFailed(f"wrapped by {wrapped.kek_id}, not by a KMS key")
        kms = await self._client()
        try:
            answer = await kms.decrypt(
                CiphertextBlob=wrapped.blob,
                KeyId=key_id,
                EncryptionContext={"parcelflow": context},
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise UnwrapFailed(f"KMS refused to unwrap: {code}") from exc
        return bytes(answer["Plaintext"])

    async def close(self) -> None:
        if self.stack is not None:
            await self.stack.aclose()
            self.stack, self.client = None, None


def check(settings: BuyerDataSettings) -> None:
    """ConfigError if the settings name no usable key service (before connecting to it)."""
    kind = settings.buyer_kek
    if kind == "local":
        local_key(settings)
    elif kind == "pkcs11":
        if not settings.buyer_pkcs11_pin.get_secret_value():
            raise ConfigError(
                "PARCELFLOW_BUYER_PKCS11_PIN must be set (PARCELFLOW_BUYER_KEK=pkcs11)"
            )
        if not settings.buyer_pkcs11_library.is_file():
            raise ConfigError(
                f"PARCELFLOW_BUYER_PKCS11_LIBRARY: no PKCS#11 module at "
                f"{settings.buyer_pkcs11_library}"
            )
    elif kind == "kms":
        if not settings.buyer_kms_key_id:
            raise ConfigError("PARCELFLOW_BUYER_KMS_KEY_ID must be set (PARCELFLOW_BUYER_KEK=kms)")
    else:
        raise ConfigError(
            "PARCELFLOW_BUYER_KEK must be set: pkcs11 or kms (local only for development): "
            "buyer addresses are sealed under it"
        )


def local_key(settings: BuyerDataSettings) -> bytes:
    try:
        key = base64.b64decode(settings.buyer_local_key.get_secret_value(), validate=True)
    except ValueError as exc:
        raise ConfigError("PARCELFLOW_BUYER_LOCAL_KEY is not base64") from exc
    if len(key) != 32:
        raise ConfigError("PARCELFLOW_BUYER_LOCAL_KEY must be 32 bytes, base64-encoded")
    return key


def key_service(settings: BuyerDataSettings, create: bool = False) -> KeyService:
    """The KEK service the settings name; ConfigError when they do not make one.
    ``create``: make the PKCS#11 key if the token lacks it (``parcelflow keys kek``)."""
    check(settings)
    kind = settings.buyer_kek
    if kind == "local":
        return LocalKek(local_key(settings))
    if kind == "pkcs11":
        pin = settings.buyer_pkcs11_pin.get_secret_value()
        return Pkcs11Kek(
            settings.buyer_pkcs11_library,
            settings.buyer_pkcs11_token,
            pin,
            settings.buyer_pkcs11_key_label,
            create,
        )
    return KmsKek(settings.buyer_kms_key_id, settings.buyer_kms_region, settings.buyer_kms_endpoint)
