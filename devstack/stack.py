"""Start the embedded broker, the simulator and every worker as separate processes.

Each process gets its settings through ``PARCELFLOW_`` variables, fresh random
credentials per run (nothing here works against real TikTok or Shipium), and its own
log file in the run directory. Everything started is stopped by process id: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devstack.broker.embedded import EmbeddedBroker, free_port, free_ports, wait_for_port
from devstack.broker.tls import Certificates, make_certificates
from devstack.broker.watch import BrokerWatch
from devstack.hsm import key_settings
from workers import lifeline
from workers.settings import Settings

WORKERS = ("simulator", "receiver", "enricher", "planner", "labeler", "auditor", "dashboard")
READY_MARKERS = {
    "receiver": b"receiver_ready",
    "enricher": b"enricher_ready",
    "labeler": b"labeler_ready",
    "auditor": b"auditor_ready",
    "dashboard": b"dashboard_ready",
    "planner": b"Worker]: Ready",
}
STEADY_S = 60.0  # a worker that ran this long before it exited is restarted after 1 s again


class StackError(RuntimeError):
    pass


def terminate(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL after ``grace_s``,
    or at once if the wait is interrupted (Ctrl-C, a test's timeout)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    replica: int = 0  # 0 for the first of a worker; 1, 2... for more (``Stack.add_replica``)
    log_start: int = 0  # the log's size when this process started (earlier lines are not its)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def label(self) -> str:
        """``labeler``, ``labeler-1``...: the worker and replica, as its log file is named."""
        return self.name if not self.replica else f"{self.name}-{self.replica}"

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_bytes().decode(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Stack:
    run_dir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    # more callers beside the devstack's own principal: name -> PARCELFLOW_PRINCIPALS entry
    principals: dict[str, dict[str, object]] = field(default_factory=dict)
    workers: tuple[str, ...] = WORKERS
    broker: EmbeddedBroker | None = None
    processes: list[Process] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    kafka_tls: bool = False  # the broker behind mutual TLS, a throwaway CA per run
    # "folder", "s3://bucket[/prefix]" (an S3 you run), or "s3": an S3-compatible server of
    # the stack's own (moto's server mode, a dev dependency) with a bucket made for the run
    label_store: str = "folder"
    s3: subprocess.Popen[bytes] | None = None
    restarts: dict[str, int] = field(default_factory=dict)  # worker -> times restarted
    events: list[str] = field(default_factory=list)  # what the supervisor saw and did
    say: bool = True
    ops_ports: dict[str, int] = field(default_factory=dict)  # worker -> its ops port
    watch: BrokerWatch | None = None  # the embedded broker's CPU, memory and record lateness
    _streak: dict[str, int] = field(default_factory=dict)  # quick exits in a row, per process
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # every worker is started from this one thread: Linux sends a lifeline's signal when
    # the *thread* that started the process ends, and this one lives as long as the stack
    _spawner: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="spawner")
    )

    def build_env(self, bootstrap: str, tls: Certificates | None = None) -> dict[str, str]:
        receiver_port, sim_port, dashboard_port, *ops = free_ports(7)
        self.ops_ports = dict(zip(("enricher", "planner", "labeler", "auditor"), ops, strict=True))
        sim = f"http://127.0.0.1:{sim_port}"
        token = secrets.token_urlsafe(24)
        everything = {"roles": ["orders", "boxes", "labels", "operator"], "warehouses": ["*"]}
        values = {
            "KAFKA_BOOTSTRAP": bootstrap,
            "KAFKA_EMBEDDED": "true",
            # the embedded broker's fetch cost grows with the batches of a partition: fewer,
            # larger batches and fewer fetches (docs/architecture.md, the embedded broker)
            "KAFKA_LINGER_MS": "20",
            "RECEIVER_LINGER_MS": "20",
            "KAFKA_FETCH_MAX_WAIT_MS": "100",
            "RECEIVER_PORT": str(receiver_port),
            "RECEIVER_REUSE_PORT": "true",  # more receivers share the port (add_replica)
            "SIM_PORT": str(sim_port),
            "DASHBOARD_PORT": str(dashboard_port),
            "DASHBOARD_METRICS_URLS": json.dumps(
                [f"http://127.0.0.1:{self.ops_ports['labeler']}/metrics"]
            ),
            "TIKTOK_API_BASE": sim,
            "TIKTOK_AUTH_BASE": sim,
            "SHIPIUM_BASE_URL": sim,
            "TIKTOK_APP_KEY": f"devapp{secrets.token_hex(4)}",
            "TIKTOK_APP_SECRET": secrets.token_hex(20),
            "TIKTOK_ACCESS_TOKEN": f"TTP_{secrets.token_urlsafe(24)}",
            "TIKTOK_REFRESH_TOKEN": f"TTP_{secrets.token_urlsafe(24)}",
            "TIKTOK_SHOP_CIPHER": f"ROW_{secrets.token_urlsafe(12)}",
            "SHIPIUM_API_KEY": secrets.token_hex(16),
            "TIKTOK_TOKEN_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            # one principal with every role for the devstack's own commands and demo traffic
            "PRINCIPALS": json.dumps(
                {"devstack": {"token": token, **everything}} | self.principals
            ),
            "API_TOKEN": token,
            # the dashboard listens on 127.0.0.1 only: open without login (it says so)
            "DASHBOARD_AUTH": "none",
            "PLANNER_DATA_DIR": str(self.run_dir / "planner"),
            "TIKTOK_TOKEN_FILE": str(self.run_dir / "tiktok-tokens.json"),
            "LABEL_DIR": str(self.run_dir / "labels"),
        }
        if tls is not None:
            values |= {
                "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CAFILE": str(tls.ca),
                "KAFKA_SSL_CERTFILE": str(tls.client_cert),
                "KAFKA_SSL_KEYFILE": str(tls.client_key),
            }
        values.update(key_settings(self.run_dir))  # a SoftHSM2 token of the run's own
        values.update(exported())
        values.update(self.overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
        if "SOFTHSM2_CONF" in values:
            env["SOFTHSM2_CONF"] = values.pop("SOFTHSM2_CONF")
        env.update({f"PARCELFLOW_{k}": v for k, v in values.items()})
        return env

    @property
    def settings(self) -> Settings:
        """The settings every process of this stack runs with."""
        values: dict[str, object] = {
            k.removeprefix("PARCELFLOW_").lower(): json.loads(v) if v[:1] in ("[", "{") else v
            for k, v in self.env.items()
            if k.startswith("PARCELFLOW_")
        }
        return Settings.model_validate(values)

    @property
    def token(self) -> str:
        """The bearer token of the devstack's principal (every role, every warehouse)."""
        return self.env["PARCELFLOW_API_TOKEN"]

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PARCELFLOW_RECEIVER_PORT']}"

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Where each process serves Prometheus metrics."""
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.ops_ports.items()}
        return urls | {
            "receiver": f"{self.receiver_url}/metrics",
            "dashboard": f"{self.dashboard_url}metrics",
        }

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PARCELFLOW_DASHBOARD_PORT']}/"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PARCELFLOW_SIM_PORT']}"

    def start(self, say: bool = True, timeout_s: float = 60.0) -> None:
        self.say = say
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # every run has a new broker and new random secrets: no tokens of an earlier run
        (self.run_dir / "tiktok-tokens.json").unlink(missing_ok=True)
        started = time.monotonic()
        tls = make_certificates(self.run_dir / "tls") if self.kafka_tls else None
        self.broker = EmbeddedBroker(
            log_path=self.run_dir / "broker.log", tls=tls, client_auth=tls is not None
        ).start()
        self.env = self.build_env(self.broker.bootstrap, tls)
        if self.label_store == "s3":
            self.env |= self.start_s3()
        elif self.label_store != "folder":
            self.env["PARCELFLOW_LABEL_STORE"] = self.label_store
        if say:
            how = " (mutual TLS, CA in tls/ca.pem)" if tls is not None else ""
            print(f"  broker     ready at {self.broker.bootstrap}{how}", file=sys.stderr)
        for name in self.workers:
            self.spawn(name)
        for process in self.processes:
            self.wait_ready(process, started + timeout_s)
            if say:
                print(
                    f"  {process.name:<10} ready after {time.monotonic() - started:4.1f}s"
                    f" (pid {process.proc.pid})",
                    file=sys.stderr,
                    flush=True,
                )
        every_s = self.settings.devstack_broker_watch_s
        if every_s and self.broker.proc is not None:
            pid, port = self.broker.proc.pid, free_port()
            self.watch = BrokerWatch(self.settings, pid, port, every_s, say).start()
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self.supervise, name="supervisor", daemon=True)
        self._supervisor.start()

    def start_s3(self, bucket: str = "parcelflow-labels") -> dict[str, str]:
        """An S3-compatible server for this run, and the variables that point at it."""
        import botocore.session

        port = free_port()
        log = (self.run_dir / "s3.log").open("ab")
        self.s3 = subprocess.Popen(
            lifeline.wrap(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_for_port("127.0.0.1", port, 30.0, self.s3)
        endpoint = f"http://127.0.0.1:{port}"
        values = {
            "PARCELFLOW_LABEL_STORE": f"s3://{bucket}/labels",
            "PARCELFLOW_LABEL_S3_ENDPOINT": endpoint,
            "PARCELFLOW_LABEL_S3_REGION": "us-east-1",
            "PARCELFLOW_LABEL_S3_SSE": "AES256",  # labels carry addresses: encrypted at rest
            "AWS_ACCESS_KEY_ID": "parcelflow-devstack",
            "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        }
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=bucket)
        if self.say:
            print(f"  s3         ready at {endpoint} (bucket {bucket})", file=sys.stderr)
        return values

    def supervise(self, every_s: float = 0.5) -> None:
        """Restart a worker that exited while the stack runs, logged with its name, pid
        and exit code or signal. The delay is 1, 2, 4... (at most 30) seconds for exits
        in a row; a worker that ran for ``STEADY_S`` before it exited starts again at 1."""
        due: dict[str, float] = {}
        while not self._stopping.wait(every_s):
            with self._lock:
                for process in list(self.processes):
                    code = process.proc.poll()
                    if code is None:
                        continue
                    now = time.monotonic()
                    if process.label not in due:
                        if now - process.started_at >= STEADY_S:
                            self._streak[process.label] = 0
                        streak = self._streak.get(process.label, 0)
                        due[process.label] = now + min(30.0, 2.0**streak)
                        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                        self.note(f"{process.label} (pid {process.proc.pid}) exited with {how}")
                    if now >= due[process.label]:
                        del due[process.label]
                        self.processes.remove(process)
                        process.log.close()
                        fresh = self.spawn(process.name, process.replica)
                        self.restarts[process.name] = self.restarts.get(process.name, 0) + 1
                        self._streak[process.label] = self._streak.get(process.label, 0) + 1
                        self.note(f"{fresh.label} restarted (pid {fresh.proc.pid})")

    def pid_of(self, name: str) -> int | None:
        """The pid of the named worker's current process, if one is running."""
        with self._lock:
            for process in self.processes:
                if process.name == name and process.proc.poll() is None:
                    return process.proc.pid
        return None

    def replicas(self, name: str) -> list[Process]:
        """The named worker's processes (running, or exited and due for a restart)."""
        with self._lock:
            return [p for p in self.processes if p.name == name]

    def add_replica(self, name: str, timeout_s: float = 60.0) -> Process:
        """Start one more process of a worker, as a scale-up would; back when it is ready.
        Its consumers join their groups, which rebalance."""
        with self._lock:
            taken = {p.replica for p in self.processes if p.name == name}
            replica = min(set(range(len(taken) + 1)) - taken)
            process = self.spawn(name, replica)
        self.wait_ready(process, time.monotonic() + timeout_s)
        return process

    def remove_replica(self, process: Process, grace_s: float = 10.0) -> None:
        """Stop one process by SIGTERM as a scale-down would (SIGKILL after ``grace_s``);
        it is not restarted."""
        with self._lock:
            if process in self.processes:
                self.processes.remove(process)
        self.stop_process(process, grace_s)

    def note(self, event: str) -> None:
        self.events.append(event)
        if self.say:
            print(f"  supervisor: {event}", file=sys.stderr, flush=True)

    def spawn(self, name: str, replica: int = 0) -> Process:
        """Start a worker's process; more replicas than the first get their own ops port
        and planner data directory (in production: their own pod)."""
        label = name if not replica else f"{name}-{replica}"
        log_path = self.run_dir / f"{label}.log"
        log = log_path.open("ab")
        log_start = log.tell()
        env = self.env
        if name in self.ops_ports:
            port = self.ops_ports[name] if not replica else free_port()
            env = env | {"PARCELFLOW_OPS_PORT": str(port)}
        if name == "planner" and replica:
            env = env | {"PARCELFLOW_PLANNER_DATA_DIR": str(self.run_dir / label)}
        proc = self._spawner.submit(
            subprocess.Popen,
            lifeline.wrap([sys.executable, "-m", "workers.cli", name]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the workers in order
        ).result()
        process = Process(name, proc, log_path, log, replica, log_start)
        self.processes.append(process)
        return process

    def wait_ready(self, process: Process, deadline: float) -> None:
        url = {"simulator": self.simulator_url}.get(process.name)
        marker = READY_MARKERS.get(process.name)
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise StackError(
                    f"{process.label} exited with code {process.proc.returncode}:\n{process.tail()}"
                )
            if url is not None and healthy(f"{url}/healthz", process.name):
                return
            if marker is not None and marker in process.log_path.read_bytes()[process.log_start :]:
                return
            time.sleep(0.1)
        raise StackError(f"{process.label} was not ready in time:\n{process.tail()}")

    def stop_process(self, process: Process, grace_s: float = 10.0) -> None:
        terminate(process.proc, grace_s)
        process.log.close()

    def hold(self) -> None:
        """Restart no worker from now on (the supervisor ends)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None

    def stop(self) -> None:
        """Stop the intake (receivers), then every other worker at once, then the broker
        last (a worker never sees it go). Safe to call twice."""
        self.hold()
        first = [p for p in self.processes if p.name == "receiver"]
        rest = [p for p in self.processes if p.name != "receiver"]
        for group in (first, rest):
            for process in group:
                if process.proc.poll() is None:
                    process.proc.terminate()  # all at once: they stop in parallel
            deadline = time.monotonic() + 10.0
            for process in group:
                try:
                    process.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.proc.kill()
                    process.proc.wait()
                process.log.close()
        self.processes.clear()
        self._spawner.shutdown()
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="spawner")
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.s3 is not None:
            terminate(self.s3)
            self.s3 = None

    @contextmanager
    def running(self, say: bool = True) -> Iterator[Stack]:
        try:
            self.start(say=say)
            yield self
        finally:
            self.stop()


# what the stack wires itself: a user's exported value for these would break it
OWNED = (
    "KAFKA_BOOTSTRAP",
    "KAFKA_EMBEDDED",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SSL_",
    "KAFKA_SASL_",
    "TIKTOK_API_BASE",
    "TIKTOK_AUTH_BASE",
    "SHIPIUM_BASE_URL",
    "PLANNER_DATA_DIR",
    "TIKTOK_TOKEN_FILE",
    "LABEL_DIR",
)


def exported() -> dict[str, str]:
    """The ``PARCELFLOW_*`` variables the user exported, but for what the stack wires."""
    out = {}
    for key, value in os.environ.items():
        name = key.removeprefix("PARCELFLOW_")
        if key.startswith("PARCELFLOW_") and not name.startswith(OWNED):
            out[name] = value
    return out


def healthy(url: str, worker: str) -> bool:
    """True when ``url`` answers 200 and names ``worker``: another server on its port
    (the port was taken before the worker bound it) is not mistaken for it."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 (local http only)
            return bool(response.status == 200 and json.load(response).get("worker") == worker)
    except (OSError, ValueError):
        return False
