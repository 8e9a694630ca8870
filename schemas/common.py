"""Building blocks shared by several topics' models."""

from __future__ import annotations

import hashlib
import time
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

ID_MAX = 128
MAX_INT = 2**53 - 1  # every integer field: exact in JSON everywhere, and in 64 bits
# Characters that reorder or hide text on a screen or a terminal: bidi embeddings,
# overrides and isolates, and the marks that go with them.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
UNSEEN = frozenset({"Cf", "Zs", "Zl", "Zp", "Mn", "Me"})  # categories that draw nothing alone


def printable(text: str) -> str:
    """``text`` if it is printable: no control character, no bidi control, not only
    invisible characters. Ids and names reach logs, terminals and labels."""
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Co", "Cn") or char in BIDI_CONTROLS:
            raise ValueError(
                f"must be printable text: U+{ord(char):04X} ({category}) is not allowed"
            )
    if text and all(unicodedata.category(c) in UNSEEN for c in text):
        raise ValueError("must be printable text: only invisible characters")
    return text


# What `printable` refuses, as far as a JSON Schema pattern can say it (for consumers).
PRINTABLE_PATTERN = (
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]*$"
)
PRINTABLE_SCHEMA = Field(json_schema_extra={"pattern": PRINTABLE_PATTERN})
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=ID_MAX, strip_whitespace=True),
    AfterValidator(printable),
    PRINTABLE_SCHEMA,
]
# An id that may be absent (""), e.g. a box's warehouse when its order names it.
OptionalId = Annotated[
    str,
    StringConstraints(max_length=ID_MAX, strip_whitespace=True),
    AfterValidator(printable),
    PRINTABLE_SCHEMA,
]
Text = Annotated[str, StringConstraints(max_length=256)]  # names, address lines


def derived_id(prefix: str, *parts: str) -> str:
    """An id made from other ids that always fits an ``Id``, whatever the parts hold.

    One part: ``prefix-part`` when that fits, else ``prefix-<digest>``. Several parts are
    always digested, each with its length, so that ``("a-b", "c")`` and ``("a", "b-c")``
    never meet. Deterministic: the same parts give the same id.
    """
    if len(parts) == 1 and len(prefix) + 1 + len(parts[0]) <= ID_MAX:
        return f"{prefix}-{parts[0]}"
    framed = "".join(f"{len(part)}:{part}" for part in parts)
    digest = hashlib.sha256(framed.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}-{digest[:40]}"


class Model(BaseModel):
    """Base of every event model: frozen, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Address(Model):
    name: Text = ""
    phone: Text = ""
    street1: Text = ""
    street2: Text = ""
    city: Text = ""
    state: Text = ""
    postal_code: Text = ""
    country_code: str = Field("US", min_length=2, max_length=2)


class Weight(Model):
    value: float = Field(gt=0)
    unit: Literal["lb", "oz", "kg", "g"] = "lb"


class Dimensions(Model):
    length: float = Field(gt=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)
    unit: Literal["in", "cm"] = "in"


# A buyer's personal data (an order's recipient), sealed where it enters parcelflow:
# "pf1.<data key id>.<nonce>.<AES-256-GCM ciphertext and tag>", base64url, bound to its
# order id. Only the labeler opens it (``workers.buyer``).
SEALED_PATTERN = r"^pf1\.[0-9a-f]{32}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,8192}$"
Sealed = Annotated[str, StringConstraints(max_length=8300, pattern=SEALED_PATTERN)]
