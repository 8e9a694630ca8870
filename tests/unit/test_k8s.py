"""The Kubernetes manifests build, validate offline against the Kubernetes schemas (and
KEDA's), set only real settings, and probe each worker on its ops port."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
SETTINGS = {f"PARCELFLOW_{name.upper()}" for name in Settings.model_fields}
WORKERS = {"enricher", "planner", "labeler", "auditor"}

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (its kustomize) is not installed"
)


def build(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)],  # noqa: S607 (kubectl on the PATH)
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/production"])
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return build(request.param)


def containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (obj["metadata"]["name"], container)
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


def test_every_object_validates_against_its_schema(objects: list[dict[str, Any]]) -> None:
    keda = json.loads((K8S / "schemas" / "keda.json").read_text())
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            schema = {**keda, "$ref": f"#/$defs/{obj['kind']}"}
            jsonschema.validate(obj, schema)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_every_variable_is_a_setting_and_no_secret_is_in_the_config_map(
    objects: list[dict[str, Any]],
) -> None:
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert set(config["data"]) <= SETTINGS, set(config["data"]) - SETTINGS
    assert not {k for k in config["data"] if "SECRET" in k or "PASSWORD" in k or "TOKEN=" in k}
    for _, container in containers(objects):
        names = {e["name"] for e in container.get("env", [])}
        assert names <= SETTINGS, names - SETTINGS
        assert {"configMapRef", "secretRef"} <= {k for ref in container["envFrom"] for k in ref}


def test_probes_use_the_ops_port_and_pods_run_locked_down(objects: list[dict[str, Any]]) -> None:
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert set(deployments) == {f"parcelflow-{w}" for w in WORKERS | {"receiver", "dashboard"}}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert isinstance(pod["securityContext"]["runAsUser"], int)
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        wanted = config[
            "PARCELFLOW_RECEIVER_PORT" if name.endswith("receiver") else "PARCELFLOW_OPS_PORT"
        ]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = container[probe]["httpGet"]["port"]
            assert ports[port] == int(wanted), (name, probe)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "memory" in container["resources"]["limits"]
        assert pod["automountServiceAccountToken"] is False
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"} == set(
        deployments
    )


def test_each_workload_reads_only_its_own_secret(objects: list[dict[str, Any]]) -> None:
    seen = {}
    for name, container in containers(objects):
        (secret,) = [ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref]
        seen[name] = secret
    assert seen == {name: name for name in seen}, "a workload reads another's secret"
    mounted = {
        obj["metadata"]["name"]: {
            v["secret"]["secretName"]
            for v in obj["spec"]["template"]["spec"].get("volumes", [])
            if "secret" in v
        }
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
    }
    # the callers' file goes only where callers are checked
    holders = {name for name, secrets in mounted.items() if "parcelflow-principals" in secrets}
    assert holders == {"parcelflow-receiver", "parcelflow-dashboard"}


def test_only_the_webhook_and_the_api_face_the_internet(objects: list[dict[str, Any]]) -> None:
    (ingress,) = [o for o in objects if o["kind"] == "Ingress"]
    paths = {
        (p["path"], p["pathType"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {("/webhooks/tiktok", "Exact"), ("/v1/", "Prefix")}


def test_network_policies_deny_by_default_and_open_only_what_each_workload_needs(
    objects: list[dict[str, Any]],
) -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    deny = policies["parcelflow-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def selected(spec: dict[str, Any], name: str) -> bool:
        selector = spec["podSelector"]
        if not selector:
            return True
        if selector.get("matchLabels", {}).get("app.kubernetes.io/name") == name:
            return True
        return any(name in e["values"] for e in selector.get("matchExpressions", []))

    def ports(name: str, direction: str) -> set[int]:
        return {
            port["port"]
            for spec in policies.values()
            if selected(spec, name)
            for rule in spec.get(direction, [])
            for port in rule["ports"]
        }

    def ingress_ports(name: str) -> set[int]:
        return ports(name, "ingress")

    def egress_ports(name: str) -> set[int]:
        return ports(name, "egress")

    assert ingress_ports("parcelflow-receiver") == {8080}
    assert ingress_ports("parcelflow-planner") == {9100}  # Prometheus only
    assert ingress_ports("parcelflow-dashboard") == {8070, 9100}
    assert egress_ports("parcelflow-planner") == {53, 9093}  # DNS and Kafka, nothing else
    assert egress_ports("parcelflow-auditor") == {53, 9093}
    assert 443 in egress_ports("parcelflow-enricher") and 443 in egress_ports("parcelflow-labeler")
    assert 443 not in egress_ports("parcelflow-dashboard")


def test_production_gives_each_workload_its_own_kafka_principal() -> None:
    objects = build("overlays/production")
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["PARCELFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["PARCELFLOW_KAFKA_SASL_MECHANISM"].startswith("SCRAM-")
    assert "PARCELFLOW_KAFKA_SASL_USERNAME" not in config  # one per workload, in its Secret
    Settings(
        **{k.removeprefix("PARCELFLOW_").lower(): v for k, v in config.items()},
        kafka_sasl_username="parcelflow-labeler",
        kafka_sasl_password="from-the-secret",
    )


def test_keda_scales_on_the_right_groups_never_past_one_replica_per_partition() -> None:
    objects = build("overlays/production")
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["PARCELFLOW_TOPICS_AUTO_CREATE"] == "false"
    scaled = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "ScaledObject"}
    assert set(scaled) == {"parcelflow-labeler", "parcelflow-enricher", "parcelflow-planner"}
    partitions = int(config["PARCELFLOW_TOPIC_PARTITIONS"])
    planner_group = Settings.model_fields["planner_app_id"].default
    # every topic a worker consumes in a group, with that group: a backlog anywhere scales it
    wanted = {
        "labeler": {("parcelflow-labeler", "label-jobs.v1")},
        "enricher": {
            ("parcelflow-enricher", "tiktok.webhooks.v1"),
            ("parcelflow-enricher-parked", "tiktok.webhooks.parked.v1"),
        },
        "planner": {(planner_group, "orders.v1"), (planner_group, "warehouse.boxes.v1")},
    }
    for name, spec in scaled.items():
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["maxReplicaCount"] <= partitions
        worker = name.removeprefix("parcelflow-")
        triggers = {
            (t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in spec["triggers"]
        }
        assert triggers == wanted[worker], name
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "check"]
