"""Where labels go: an IPP printer (PDF or PNG) or a thermal printer's raw port (ZPL).

- ``ipp://host:631/ipp/print`` (``ipps://`` for TLS): an IPP Print-Job through pyipp;
  CUPS queues and IPP Everywhere printers take PDF, most PNG too.
- ``socket://host:9100``: the bytes as they are, the way thermal printers take ZPL.

A printer that does not answer, refuses the connection or answers with an error raises
``PrinterAway``: the agent keeps the label in its queue and tries again.
"""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "zpl": "application/octet-stream"}


class PrinterAway(Exception):
    """The printer did not take the label (offline, out of paper, refused)."""


class Printer(Protocol):
    async def print(self, document: bytes, fmt: str, name: str) -> None: ...


class RawPrinter:
    """A printer's raw TCP port (9100, "JetDirect"): the document's bytes, nothing else."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s

    async def print(self, document: bytes, fmt: str, name: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(document)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise PrinterAway(f"{self.host}:{self.port}: {type(exc).__name__}") from exc


class IppPrinter:
    """An IPP printer: one Print-Job per label (pyipp)."""

    def __init__(self, uri: str, timeout_s: int = 20) -> None:
        parts = urlsplit(uri)
        self.tls = parts.scheme == "ipps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 631
        self.path = parts.path or "/ipp/print"
        self.timeout_s = timeout_s

    async def print(self, document: bytes, fmt: str, name: str) -> None:
        from pyipp import IPP
        from pyipp.enums import IppOperation
        from pyipp.exceptions import IPPError

        try:
            async with IPP(
                self.host,
                base_path=self.path,
                port=self.port,
                tls=self.tls,
                request_timeout=self.timeout_s,
            ) as ipp:
                answer = await ipp.execute(
                    IppOperation.PRINT_JOB,
                    {
                        "operation-attributes-tag": {
                            "requesting-user-name": "parcelflow-station",
                            "job-name": name[:255],
                            "document-format": CONTENT_TYPES[fmt],
                        },
                        "data": document,
                    },
                )
        except (IPPError, OSError, TimeoutError) as exc:
            raise PrinterAway(f"{self.host}:{self.port}: {type(exc).__name__}") from exc
        if int(answer.get("status-code", 0)) >= 0x0400:  # client-error and server-error
            raise PrinterAway(f"{self.host}:{self.port}: IPP status {answer['status-code']:#06x}")


def printer_at(uri: str) -> Printer:
    """The printer a URI names: ipp(s):// or socket://host:port."""
    parts = urlsplit(uri)
    if parts.scheme in ("ipp", "ipps"):
        return IppPrinter(uri)
    if parts.scheme == "socket" and parts.hostname:
        return RawPrinter(parts.hostname, parts.port or 9100)
    raise ValueError(f"printer: ipp://host[:port]/path or socket://host[:port], not {uri[:100]!r}")
