"""Dead letters always fit a record, and keep enough to find and check the original."""

from __future__ import annotations

import hashlib

import pytest

from schemas.codec import encode
from workers.kafka import (
    MAX_KEY_BYTES,
    dead_letter_key,
    key_problem,
    rejected_record,
    value_problem,
)

LIMIT = 1024 * 1024 - 4096


@pytest.mark.parametrize("size", [0, 10, 700_000, 800_000, 1024 * 1024, 4 * 1024 * 1024])
@pytest.mark.parametrize("key_size", [0, 100, 5000])
def test_a_dead_letter_fits_whatever_the_value_and_key(size: int, key_size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"\x00" * (size % 256)
    key = b"k" * key_size if key_size else None
    record = rejected_record(
        source_topic="orders.v1",
        value=value,
        key=key,
        reason="é\x00" * 50_000,  # a reason full of escapes and multi-byte characters
        worker="planner",
        max_bytes=LIMIT,
        partition=3,
        offset=42,
    )
    assert len(encode(record)) <= LIMIT
    assert record.value_size == size and record.value_sha256 == hashlib.sha256(value).hexdigest()
    kept = record.original()
    assert value.startswith(kept)
    assert record.truncated == (len(kept) < size or key_size > MAX_KEY_BYTES)
    assert (record.partition, record.offset) == (3, 42)
    assert len(record.reason) <= 2000


def test_a_small_value_is_kept_whole() -> None:
    record = rejected_record(
        source_topic="t", value=b"not json", reason="bad", worker="w", max_bytes=LIMIT
    )
    assert record.original() == b"not json" and not record.truncated


def test_long_keys_become_digests_and_null_or_wrong_keys_are_named() -> None:
    assert dead_letter_key(b"O1") == b"O1"
    assert dead_letter_key(None) is None
    assert len(dead_letter_key(b"k" * 5000) or b"") == 64
    assert key_problem(b"O1", "O1") is None
    assert "null key" in (key_problem(None, "O1") or "")
    assert "is not the record's order id" in (key_problem(b"O2", "O1") or "")
    assert value_problem(b"x" * 11, 10) == "value of 11 bytes is over the 10-byte input limit"
    assert value_problem(None, 10) is None
