"""Every workload started with exactly the environment that production gives it:
docker-compose.yml, and the Kubernetes production overlay (built with kubectl kustomize),
each on top of the image's own ENV (deploy/Dockerfile). Secret values are generated; each
workload must become ready and still be running, and healthy, 30 s later.

What one machine and the embedded broker cannot be is rewritten, and only that:

- the broker is the embedded one: plaintext for compose (as its Kafka is), TLS with a
  throwaway CA for Kubernetes; the overlay's SASL (SCRAM) is not offered by the embedded
  broker, so its workloads speak plain TLS (SSL) and their SASL credentials go unused;
- each workload has its own network namespace in production: here each gets free ports
  (ops, receiver, dashboard) on this machine's addresses;
- paths inside the image (/var/lib/parcelflow/..., the mounted CA and principals file)
  point into a folder of the test;
- the overlay's topics are the platform team's: they are made first (``topics apply``,
  replication 1 on one broker), then the overlay's own Job (``topics check``) must pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from devstack.broker.embedded import EmbeddedBroker, free_port
from devstack.broker.tls import make_certificates
from devstack.stack import terminate
from workers import lifeline

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STAY_UP_S = 30.0


def image_env() -> dict[str, str]:
    """The ENV of deploy/Dockerfile (every PARCELFLOW_ name in it)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(re.findall(r"(PARCELFLOW_\w+)=(\S+)", line))
    return env


def generated_secrets() -> tuple[dict[str, str], str]:
    """An env file's values as an operator would make them, and the operator's token."""
    operator = secrets.token_urlsafe(32)
    principals = {
        "ops": {
            "token_sha256": hashlib.sha256(operator.encode()).hexdigest(),
            "roles": ["operator"],
            "warehouses": ["*"],
        },
        "station-a1": {
            "token_sha256": hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
            "roles": ["boxes", "labels"],
            "warehouses": ["WH-A"],
        },
    }
    values = {
        "PARCELFLOW_TIKTOK_APP_KEY": "prodapp",
        "PARCELFLOW_TIKTOK_APP_SECRET": secrets.token_hex(16),
        "PARCELFLOW_TIKTOK_TOKEN_KEY": Fernet.generate_key().decode(),
        "PARCELFLOW_TIKTOK_ACCESS_TOKEN": "TTP_" + secrets.token_urlsafe(16),
        "PARCELFLOW_TIKTOK_REFRESH_TOKEN": "TTP_" + secrets.token_urlsafe(16),
        "PARCELFLOW_TIKTOK_SHOP_CIPHER": "ROW_prod",
        "PARCELFLOW_SHIPIUM_API_KEY": secrets.token_hex(16),
        "PARCELFLOW_PRINCIPALS": json.dumps(principals),
        "PARCELFLOW_DASHBOARD_SESSION_KEY": secrets.token_urlsafe(36),
        "PARCELFLOW_KAFKA_SASL_USERNAME": "parcelflow-workload",
        "PARCELFLOW_KAFKA_SASL_PASSWORD": secrets.token_urlsafe(16),
        "PARCELFLOW_BUYER_KEK": "local",
        "PARCELFLOW_BUYER_LOCAL_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    return values, operator


def substitute(value: str, env_file: dict[str, str]) -> str:
    """docker compose's ${VAR}, ${VAR:-default} and ${VAR:?error} from the env file."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env_file and (env_file[name] or op != ":-"):
            return env_file[name]
        assert op != ":?", f"{name} is required by docker-compose.yml: {rest}"
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", one, value)


@dataclass
class Workload:
    name: str
    args: list[str]
    env: dict[str, str]


def compose_workloads(env_file: dict[str, str]) -> list[Workload]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    found = []
    for name, service in services.items():
        if name == "kafka":
            continue
        env = {k: substitute(str(v), env_file) for k, v in service["environment"].items()}
        found.append(Workload(name, list(service["command"]), image_env() | env))
    return found


# The keys of each workload's own Secret (deploy/k8s/base/kustomization.yaml says which)
K8S_SECRETS = {
    "receiver": ["PARCELFLOW_TIKTOK_APP_KEY", "PARCELFLOW_TIKTOK_APP_SECRET"],
    "enricher": [
        "PARCELFLOW_TIKTOK_APP_KEY",
        "PARCELFLOW_TIKTOK_APP_SECRET",
        "PARCELFLOW_TIKTOK_TOKEN_KEY",
        "PARCELFLOW_TIKTOK_ACCESS_TOKEN",
        "PARCELFLOW_TIKTOK_REFRESH_TOKEN",
    ],
    "labeler": ["PARCELFLOW_SHIPIUM_API_KEY"],
    "dashboard": ["PARCELFLOW_DASHBOARD_SESSION_KEY"],
    "planner": [],
    "auditor": [],
    "topics": [],
}
SASL = ["PARCELFLOW_KAFKA_SASL_USERNAME", "PARCELFLOW_KAFKA_SASL_PASSWORD"]


def k8s_workloads(env_file: dict[str, str]) -> list[Workload]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / "production")],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    found = []
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        [container] = obj["spec"]["template"]["spec"]["containers"]
        name = obj["metadata"]["name"].removeprefix("parcelflow-")
        env = dict(image_env())
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env |= maps[source["configMapRef"]["name"]]
            else:  # the workload's own Secret, made from an env file of its keys
                keys = K8S_SECRETS[source["secretRef"]["name"].removeprefix("parcelflow-")]
                env |= {k: env_file[k] for k in [*keys, *SASL]}
        env |= {e["name"]: str(e["value"]) for e in container.get("env", [])}
        found.append(Workload(name, list(container["args"]), env))
    return found


def on_this_machine(workload: Workload, root: Path, bootstrap: str, ca: Path | None) -> None:
    """The rewrites of the module's docstring, and only those."""
    env = workload.env
    env["PARCELFLOW_KAFKA_BOOTSTRAP"] = bootstrap
    if env.get("PARCELFLOW_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL":
        env["PARCELFLOW_KAFKA_SECURITY_PROTOCOL"] = "SSL"  # no SASL on the embedded broker
        env.pop("PARCELFLOW_KAFKA_SASL_MECHANISM", None)
    if ca is not None and "PARCELFLOW_KAFKA_SSL_CAFILE" in env:
        env["PARCELFLOW_KAFKA_SSL_CAFILE"] = str(ca)
    for port in ("PARCELFLOW_OPS_PORT", "PARCELFLOW_RECEIVER_PORT", "PARCELFLOW_DASHBOARD_PORT"):
        if port in env:
            env[port] = str(free_port())
    for key, value in list(env.items()):
        if value.startswith("/var/lib/parcelflow/"):
            path = root / workload.name / value.removeprefix("/var/lib/parcelflow/")
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            env[key] = str(path)
        elif value.startswith("/etc/parcelflow/principals/"):  # the mounted Secret's file
            path = root / "principals.json"
            path.write_text((root / "principals.source.json").read_text())
            env[key] = str(path)
    if env.get("PARCELFLOW_TOPIC_REPLICATION", "1") != "1":
        env["PARCELFLOW_TOPIC_REPLICATION"] = "1"  # one broker
        env.pop("PARCELFLOW_TOPIC_MIN_INSYNC_REPLICAS", None)


def process_env(workload: Workload) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARCELFLOW_")}
    return base | workload.env


def run_once(workload: Workload, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *workload.args],
        env=process_env(workload),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our own)
            return int(response.status)
    except OSError:
        return 0


@contextmanager
def started(workloads: list[Workload], root: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as logs:
        try:
            for w in workloads:
                log = logs.enter_context((root / f"{w.name}.log").open("ab"))
                procs[w.name] = subprocess.Popen(
                    lifeline.wrap([sys.executable, "-m", "workers.cli", *w.args]),
                    env=process_env(w),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=root,
                )
            yield procs
        finally:
            for proc in procs.values():
                terminate(proc)


def probes(w: Workload) -> str:
    """Where production probes the workload: the receiver on its own port (compose's
    `parcelflow health --receiver`, the Deployment's probes on port http), the others on
    their ops port."""
    port = w.env["PARCELFLOW_RECEIVER_PORT" if w.args[0] == "receiver" else "PARCELFLOW_OPS_PORT"]
    return f"http://127.0.0.1:{port}"


def tail(root: Path, name: str) -> str:
    return (root / f"{name}.log").read_text(errors="replace")[-2500:]


def check_every_workload_starts_and_stays_up(
    workloads: list[Workload], root: Path, topics_args: list[str]
) -> None:
    topics = [w for w in workloads if w.args[0] == "topics"]
    assert topics, "no topics workload"
    for job in topics:
        if job.args != ["topics", "apply"]:  # the platform team's topics, made first
            made = run_once(Workload(job.name, ["topics", "apply"], job.env), root)
            assert made.returncode == 0, made.stderr[-2000:]
        done = run_once(job, root)
        assert done.returncode == 0, f"{job.args}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    long_lived = [w for w in workloads if w.args[0] != "topics"]
    assert {w.args[0] for w in long_lived} == {
        "receiver",
        "enricher",
        "planner",
        "labeler",
        "auditor",
        "dashboard",
    }
    with started(long_lived, root) as procs:
        ready: set[str] = set()
        deadline = time.monotonic() + 90
        while len(ready) < len(long_lived) and time.monotonic() < deadline:
            for w in long_lived:
                proc = procs[w.name]
                assert proc.poll() is None, (
                    f"{w.name} exited {proc.returncode}:\n{tail(root, w.name)}"
                )
                if w.name not in ready and get(f"{probes(w)}/readyz") == 200:
                    ready.add(w.name)
            time.sleep(0.5)
        missing = {w.name for w in long_lived} - ready
        assert not missing, {m: tail(root, m) for m in missing}
        time.sleep(STAY_UP_S)
        for w in long_lived:
            proc = procs[w.name]
            assert proc.poll() is None, f"{w.name} exited {proc.returncode}:\n{tail(root, w.name)}"
            assert get(f"{probes(w)}/healthz") == 200, (w.name, tail(root, w.name))
            assert get(f"{probes(w)}/readyz") == 200, (w.name, tail(root, w.name))
        dashboard = next(w for w in long_lived if w.args[0] == "dashboard")
        page = f"http://127.0.0.1:{dashboard.env['PARCELFLOW_DASHBOARD_PORT']}/login"
        assert get(page) == 200, tail(root, dashboard.name)


def test_every_compose_workload_starts_and_stays_up(tmp_path: Path) -> None:
    env_file, _ = generated_secrets()
    (tmp_path / "principals.source.json").write_text(env_file["PARCELFLOW_PRINCIPALS"])
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        workloads = compose_workloads(env_file)
        for w in workloads:
            on_this_machine(w, tmp_path, broker.bootstrap, None)
        check_every_workload_starts_and_stays_up(workloads, tmp_path, ["topics", "apply"])


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (its kustomize) is not installed"
)
def test_every_production_overlay_workload_starts_and_stays_up(tmp_path: Path) -> None:
    env_file, _ = generated_secrets()
    (tmp_path / "principals.source.json").write_text(env_file["PARCELFLOW_PRINCIPALS"])
    tls = make_certificates(tmp_path / "tls")
    with ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker(log_path=tmp_path / "broker.log", tls=tls))
        workloads = k8s_workloads(env_file)
        for w in workloads:
            on_this_machine(w, tmp_path, broker.bootstrap, tls.ca)
        check_every_workload_starts_and_stays_up(workloads, tmp_path, ["topics", "check"])


def test_the_rewrites_touch_only_what_the_docstring_names(tmp_path: Path) -> None:
    """Everything else of the production environment reaches the workloads as it is."""
    env_file, _ = generated_secrets()
    (tmp_path / "principals.source.json").write_text(env_file["PARCELFLOW_PRINCIPALS"])
    for w in compose_workloads(env_file):
        before = dict(w.env)
        on_this_machine(w, tmp_path, "127.0.0.1:1", None)
        changed = {k for k in before if before[k] != w.env.get(k)}
        allowed = {
            "PARCELFLOW_KAFKA_BOOTSTRAP",
            "PARCELFLOW_OPS_PORT",
            "PARCELFLOW_RECEIVER_PORT",
            "PARCELFLOW_DASHBOARD_PORT",
        }
        allowed |= {k for k, v in before.items() if v.startswith(("/var/lib/", "/etc/parcelflow/"))}
        assert changed <= allowed, (w.name, changed - allowed)
