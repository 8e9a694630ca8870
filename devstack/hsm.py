"""The devstack's key service: a SoftHSM2 token of its own, or a local key.

Debian's SoftHSM2 (``apt install softhsm2``) is a real PKCS#11 token: the devstack makes
one in the run folder, with a random PIN, and the key-encryption key in it, so every
worker seals and opens buyer data as it would against an HSM. Without SoftHSM2 it says
so and uses a random local key (``PARCELFLOW_BUYER_KEK=local``).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

LIBRARY = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN_LABEL = "parcelflow"  # noqa: S105 (a label, not a secret)


def softhsm_available() -> bool:
    return LIBRARY.is_file() and shutil.which("softhsm2-util") is not None


def make_token(root: Path, pin: str, label: str = TOKEN_LABEL) -> Path:
    """A fresh SoftHSM2 token under ``root``; its configuration file (SOFTHSM2_CONF)."""
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    util = shutil.which("softhsm2-util")
    assert util is not None  # noqa: S101 (softhsm_available)
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
    )
    return conf


def key_settings(run_dir: Path) -> dict[str, str]:
    """The environment of the stack's key service (PARCELFLOW_ names without the prefix,
    and SOFTHSM2_CONF), the token's KEK made."""
    if not softhsm_available():
        print(
            "devstack: SoftHSM2 is not installed (apt install softhsm2): buyer data is "
            "sealed under a local key",
            file=sys.stderr,
        )
        return {
            "BUYER_KEK": "local",
            "BUYER_LOCAL_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
    pin = secrets.token_hex(8)
    conf = make_token(run_dir / "softhsm", pin)
    values = {
        "BUYER_KEK": "pkcs11",
        "BUYER_PKCS11_LIBRARY": str(LIBRARY),
        "BUYER_PKCS11_TOKEN": TOKEN_LABEL,
        "BUYER_PKCS11_PIN": pin,
        "SOFTHSM2_CONF": str(conf),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    env |= {f"PARCELFLOW_{k}": v for k, v in values.items() if k != "SOFTHSM2_CONF"}
    env["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [sys.executable, "-m", "workers.cli", "keys", "kek"],
        env=env,
        check=True,
        capture_output=True,
    )
    return values
