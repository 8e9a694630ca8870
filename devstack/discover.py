"""How a user, and every ``parcelflow`` command, finds a running devstack.

``parcelflow up`` and ``run`` write ``devstack.env`` in their run folder and at
``var/run/devstack.env`` (the latest): the broker, receiver, simulator and dashboard
addresses, the API token and the TikTok app key and secret, as ``PARCELFLOW_*``
lines (``source`` it in a shell) with the addresses in comments. A command run without
``PARCELFLOW_KAFKA_BOOTSTRAP`` uses the file while the devstack that wrote it runs;
variables the user exported win.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

LATEST = Path("var/run/devstack.env")
SHARED = (  # what a client of the devstack needs, as PARCELFLOW_ names without the prefix
    "KAFKA_BOOTSTRAP",
    "KAFKA_EMBEDDED",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
    "RECEIVER_PORT",
    "SIM_PORT",
    "DASHBOARD_PORT",
    "API_TOKEN",
    "TIKTOK_APP_KEY",
    "TIKTOK_APP_SECRET",
    "TIKTOK_TOKEN_KEY",
    "TIKTOK_TOKEN_FILE",
    "LABEL_DIR",
)


def env_text(env: dict[str, str], run_dir: Path, urls: dict[str, str]) -> str:
    lines = [
        f"# parcelflow devstack, started {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"# pid {os.getpid()}; logs in {run_dir}",
        *(f"# {name + ':':<10} {url}" for name, url in urls.items()),
    ]
    lines += [
        f"PARCELFLOW_{key}={env[f'PARCELFLOW_{key}']}"
        for key in SHARED
        if f"PARCELFLOW_{key}" in env
    ]
    return "\n".join(lines) + "\n"


def write(text: str, *paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)  # 0600: the process umask is 077


def trusted(path: Path) -> bool:
    """Whether ``path`` is a file this user owns and no one else may write: another user's
    file could point the commands at a broker or receiver of theirs."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def running(path: Path = LATEST) -> dict[str, str] | None:
    """The variables of the devstack that wrote ``path``, if its process still runs: only
    the ``PARCELFLOW_`` names a client needs (SHARED), only from a trusted file."""
    if not trusted(path):
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    values: dict[str, str] = {}
    pid = 0
    for line in text.splitlines():
        if line.startswith("# pid "):
            pid = int(line.split()[2].rstrip(";"))
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            if key.removeprefix("PARCELFLOW_") in SHARED and key.startswith("PARCELFLOW_"):
                values[key] = value
    if pid <= 0 or not alive(pid):
        return None
    return values


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_running_devstack(path: Path = LATEST) -> Path | None:
    """Put a running devstack's variables in this process's environment (under what the
    user exported), unless the user named a broker. The file used, or None."""
    if "PARCELFLOW_KAFKA_BOOTSTRAP" in os.environ:
        return None
    values = running(path)
    if values is None:
        return None
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return path


def forget(path: Path = LATEST) -> None:
    """Remove ``path`` if this process wrote it (a newer devstack may have replaced it)."""
    try:
        if f"# pid {os.getpid()};" in path.read_text():
            path.unlink()
    except OSError:
        pass
