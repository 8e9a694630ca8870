"""The key services that hold the key-encryption key, as they run: a SoftHSM2 token
through PKCS#11, AWS KMS's API (moto's server), and data keys rotating under traffic on
a real broker."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.broker.embedded import free_port, wait_for_port
from devstack.hsm import LIBRARY, make_token, softhsm_available
from schemas.common import Address
from tests.integration.kafka_helpers import provisioned
from workers.buyer.kek import KmsKek, Pkcs11Kek, UnwrapFailed
from workers.buyer.keys import Erased, Opener, Sealer
from workers.kafka import make_producer
from workers.settings import Settings


@pytest.mark.skipif(
    not softhsm_available(), reason="SoftHSM2 is not installed: apt install softhsm2"
)
def test_a_softhsm2_token_wraps_and_a_rotated_kek_still_unwraps_older_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = secrets.token_hex(8)
    conf = make_token(tmp_path / "hsm", pin)
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))

    async def run() -> None:
        first = Pkcs11Kek(LIBRARY, "parcelflow", pin, "kek-1", create=True)
        old = await first.wrap(b"a" * 32, "shop/k1")
        assert old.kek_id == "pkcs11:kek-1" and b"a" * 32 not in old.blob
        await first.close()
        # rotation: a new key in the token; new wraps use it, the old still unwraps
        second = Pkcs11Kek(LIBRARY, "parcelflow", pin, "kek-2", create=True)
        new = await second.wrap(b"b" * 32, "shop/k2")
        assert new.kek_id == "pkcs11:kek-2"
        assert await second.unwrap(old, "shop/k1") == b"a" * 32
        assert await second.unwrap(new, "shop/k2") == b"b" * 32
        with pytest.raises(UnwrapFailed):
            await second.unwrap(old, "shop/k2")  # another context
        second._key("kek-1").destroy()  # the old KEK retired: what it wrapped is gone
        with pytest.raises(UnwrapFailed, match="no key labelled"):
            await second.unwrap(old, "shop/k1")
        await second.close()

    asyncio.run(run())
    with pytest.raises(Exception, match="PKCS#11 token"):
        Pkcs11Kek(LIBRARY, "parcelflow", "wrong-pin", "kek-2", create=False)


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """moto's server (AWS's APIs, KMS among them) on a free port; its endpoint."""
    port = free_port()
    with (tmp_path / "moto.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port("127.0.0.1", port, 30.0, server)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "parcelflow-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets.token_hex(16))
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_kms_wraps_under_an_encryption_context_and_refuses_another(kms: str) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "kms", endpoint_url=kms, region_name="us-east-1"
    )
    key_id = client.create_key(Description="parcelflow test KEK")["KeyMetadata"]["KeyId"]

    async def run() -> None:
        kek = KmsKek(key_id, "us-east-1", kms)
        wrapped = await kek.wrap(b"c" * 32, "shop/k1")
        assert wrapped.kek_id.startswith("kms:") and b"c" * 32 not in wrapped.blob
        assert await kek.unwrap(wrapped, "shop/k1") == b"c" * 32
        with pytest.raises(UnwrapFailed, match="KMS refused"):
            await kek.unwrap(wrapped, "shop/k2")
        await kek.close()

    asyncio.run(run())
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"


async def test_data_keys_rotate_under_traffic_and_every_recipient_still_opens(
    make_settings: Callable[..., Settings],
) -> None:
    """Two writers seal for three shops with data keys that last 50 ms while an opener
    follows: every recipient opens, whichever key sealed it, also keys made after the
    opener started; a destroyed key's recipients come back Erased."""
    settings = make_settings(buyer_key_rotate_s=0.05)
    await provisioned(settings)
    from workers.buyer.kek import key_service

    producer = make_producer(settings)
    await producer.start()
    writers = [Sealer(settings, settings, key_service(settings), producer, f"w{n}") for n in (1, 2)]
    opener = Opener(settings, key_service(settings))
    await opener.start()
    try:
        sealed: list[tuple[str, str, Address]] = []
        for n in range(120):
            shop = f"shop-{n % 3}"
            address = Address(name=f"Buyer {n}", street1=f"{n} Elm St")
            order_id = f"R{n}"
            text = await writers[n % 2].seal(shop, order_id, address)
            assert text is not None
            sealed.append((order_id, text, address))
            await asyncio.sleep(0.005)
        made = {text.split(".")[1] for _, text, _ in sealed}
        assert len(made) > 6  # rotated many times
        for order_id, text, address in sealed:
            assert await opener.open(order_id, text) == address
        # a destroyed key: its recipients no longer open (crypto-shredding)
        victim = sealed[0][1].split(".")[1]
        key = opener.wrapped[victim]
        await producer.send_and_wait(
            f"{settings.topic_namespace}buyer.keys.v1", None, key=f"{key.shop_id}/{victim}".encode()
        )
        await opener.caught_up()
        assert isinstance(await opener.open(sealed[0][0], sealed[0][1]), Erased)
        assert await opener.open(sealed[-1][0], sealed[-1][1]) == sealed[-1][2]
    finally:
        await opener.stop()
        await producer.stop()


def test_the_s3_store_sweeps_what_is_past_retention_and_writes_encrypted(
    kms: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label store on S3's API (moto's server, the same fixture): every object written
    with server-side encryption; the retention sweep deletes by age, under the store's
    prefix only."""
    import botocore.session

    from workers.labels.retention import sweep
    from workers.labels.store import S3Store, document_name, manifest_name

    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=kms, region_name="us-east-1"
    )
    s3.create_bucket(Bucket="labels-test")
    s3.put_object(Bucket="labels-test", Key="someone-else/x.pdf", Body=b"not ours")
    settings = Settings(
        label_store="s3://labels-test/labels",
        label_s3_endpoint=kms,
        label_s3_region="us-east-1",
        label_s3_sse="AES256",
    )

    async def run() -> tuple[int, int]:
        store = S3Store(settings, "labels-test", "labels")
        names = [document_name("J1", "B1", "pdf"), manifest_name("J1")]
        for name in names:
            await store.put(name, b"label", "application/pdf")
            written = s3.head_object(Bucket="labels-test", Key=f"labels/{name}")
            assert written["ServerSideEncryption"] == "AES256"
        kept = await sweep(store, retention_days=30)  # all of them are new
        gone = await sweep(store, retention_days=30, now_s=time.time() + 31 * 86_400)
        await store.close()
        return kept, gone

    assert run_now(run()) == (0, 2)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="labels-test").get("Contents", [])]
    assert keys == ["someone-else/x.pdf"]
    head = s3.put_object(
        Bucket="labels-test", Key="probe", Body=b"x", ServerSideEncryption="AES256"
    )
    assert head["ServerSideEncryption"] == "AES256"  # the server takes what the store asks


def run_now(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
