"""TLS in front of the embedded broker, so that parcelflow's TLS settings run for real.

The embedded Tansu build cannot serve TLS itself (its ``--cert`` and ``--key`` flags
refuse to be given together), so the devstack puts a TLS terminator before it, as a
service mesh or stunnel would: clients speak TLS to the terminator's port, which Tansu
advertises as its own, and the terminator forwards the bytes to Tansu on a loopback port.
With a client CA it also requires client certificates (mutual TLS).

``python -m devstack.broker.tls --listen HOST:PORT --to HOST:PORT --cert F --key F
[--client-ca F]``; the certificates of a throwaway CA come from ``make_certificates``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and what it signed: the broker's certificate and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(
    folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> Certificates:
    """A new CA (trustme, a well-kept library) and certificates for the broker's hosts
    and for one client, as PEM files in ``folder`` (0700, files 0600)."""
    import trustme

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="parcelflow devstack")
    server = ca.issue_cert(*hosts)
    client = ca.issue_cert("parcelflow-client")
    files = Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "broker.pem",
        server_key=folder / "broker-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.private_key_pem.write_to_path(str(files.client_key))
    for issued, path in ((server, files.server_cert), (client, files.client_cert)):
        path.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    for path in folder.iterdir():
        path.chmod(0o600)
    return files


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
            writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], context: ssl.SSLContext) -> None:
    async def forward(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    server = await asyncio.start_server(forward, *listen, ssl=context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"tls terminator on {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop.wait()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--to", type=address, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--client-ca", type=Path)
    args = parser.parse_args()
    context = server_context(args.cert, args.key, args.client_ca)
    asyncio.run(serve(args.listen, args.to, context))


if __name__ == "__main__":
    main()
