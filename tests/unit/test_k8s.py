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
GROUPS = {"labeler": "parcelflow-labeler", "enricher": "parcelflow-enricher"}

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
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if name.endswith("dashboard"):  # its page, API and ops routes share one port
            wanted = env["PARCELFLOW_DASHBOARD_PORT"]
        else:
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
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"} == set(
        deployments
    )


def test_keda_scales_on_the_right_groups_never_past_one_replica_per_partition() -> None:
    objects = build("overlays/production")
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["PARCELFLOW_TOPICS_AUTO_CREATE"] == "false"
    scaled = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "ScaledObject"}
    assert set(scaled) == {"parcelflow-labeler", "parcelflow-enricher", "parcelflow-planner"}
    partitions = int(config["PARCELFLOW_TOPIC_PARTITIONS"])
    for name, spec in scaled.items():
        assert spec["scaleTargetRef"]["name"] == name
        assert spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        worker = name.removeprefix("parcelflow-")
        group = GROUPS.get(worker, Settings.model_fields["planner_app_id"].default)
        assert trigger["metadata"]["consumerGroup"] == group
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "check"]
