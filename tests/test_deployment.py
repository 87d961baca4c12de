"""Deployment files, checked without a Docker engine: they parse, the k3s manifests validate against the
Kubernetes schemas, every path, port and EDGEFER_* setting they name exists and agrees with the services,
and every metric the dashboard and alert rules use is exported by a running edge node or worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server

from compression_worker.service.fleet_metrics import FleetCollector
from compression_worker.service.metrics import WorkerMetrics
from compression_worker.service.settings import WorkerServiceSettings
from edgefer.cli.registry import RegistryCliSettings
from edgefer.jobs.queue import JobQueue
from edgefer.localfleet.ports import free_port
from edgefer.registry.connection import RegistryAccess, connect, connect_for_scrapes
from edgefer.registry.store import ModelRegistry
from edgefer.rollouts.store import RolloutStore
from services.client.metrics import ClientMetrics
from services.edge.metrics import EdgeMetrics
from services.edge.settings import EdgeSettings
from services.rollouts.main import RolloutCollector, RolloutSettings

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.31.0"
YAML_FILES = sorted([REPO / "docker-compose.yml", *REPO.glob("k8s/**/*.yaml"), *REPO.glob("monitoring/**/*.yml"),
                     *REPO.glob("monitoring/**/*.yaml")])
SETTINGS = {f"EDGEFER_{f.name.upper()}" for cls in (EdgeSettings, WorkerServiceSettings, RegistryCliSettings, RolloutSettings)
            for f in fields(cls)}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects() -> list[dict]:
    return [d for path in sorted(REPO.glob("k8s/base/*.yaml")) if path.name != "kustomization.yaml" for d in documents(path)]


def test_every_yaml_and_json_file_parses() -> None:
    assert len(YAML_FILES) >= 10
    for path in YAML_FILES:
        assert documents(path), path
    json.loads((REPO / "monitoring/grafana/dashboards/edgefer-latency.json").read_text())


def test_k3s_manifests_validate_against_the_kubernetes_schemas() -> None:
    objects = k8s_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "StatefulSet", "Deployment", "DaemonSet", "Service", "ConfigMap", "Secret"} <= kinds
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "edgefer", obj["metadata"]["name"]


KUSTOMIZATIONS = ["k8s", "k8s/base", "monitoring", "monitoring/operator", "k8s/overlays/prometheus-operator",
                  "k8s/overlays/gpu-worker"]


def test_kustomizations_resolve() -> None:
    for folder in KUSTOMIZATIONS:
        kustomization = REPO / folder / "kustomization.yaml"
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec.get("resources", []):
            assert (kustomization.parent / resource).exists(), resource
        for generator in spec.get("configMapGenerator", []):
            for file in generator["files"]:
                assert (kustomization.parent / file).is_file(), file
    listed = set(yaml.safe_load((REPO / "k8s/base/kustomization.yaml").read_text())["resources"])
    assert {p.name for p in REPO.glob("k8s/base/*.yaml")} - {"kustomization.yaml"} <= listed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (kustomize builds need it)")
@pytest.mark.parametrize("folder", ["k8s", "k8s/overlays/prometheus-operator", "k8s/overlays/gpu-worker"])
def test_kustomize_builds_every_deployable_folder_into_valid_objects(folder: str) -> None:
    """What `kubectl apply -k` would send, built for real (an overlay inside its base's tree is a kustomize cycle)."""
    out = subprocess.run(["kubectl", "kustomize", str(REPO / folder)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    objects = [d for d in yaml.safe_load_all(out.stdout) if d]
    for obj in objects:
        if obj["kind"] in ("PrometheusRule", "PodMonitor"):
            continue  # CRDs of the Prometheus Operator: not in the core schemas
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    if folder.endswith("gpu-worker"):
        (worker,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "edgefer-worker"]
        pod = worker["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"].endswith("-cuda") and container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["runtimeClassName"] == "nvidia" and {"name": "EDGEFER_DEVICE", "value": "cuda"} in container["env"]


def test_edge_daemonset_is_arm64_with_grpc_probes_limits_and_secrets() -> None:
    edge = next(o for o in k8s_objects() if o["kind"] == "DaemonSet")
    pod = edge["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    (container,) = pod["containers"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == EdgeSettings.port
    assert {"requests", "limits"} <= set(container["resources"])
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    secrets |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"edgefer-signing-public", "edgefer-redis"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": EdgeSettings.port, "metrics": EdgeSettings.metrics_port}
    assert edge["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(EdgeSettings.metrics_port)


def test_every_edgefer_variable_in_the_deployment_is_a_real_setting() -> None:
    text = "\n".join(p.read_text() for p in [REPO / "docker-compose.yml", *REPO.glob("k8s/**/*.yaml"), *REPO.glob("docker/*")])
    used = set(re.findall(r"\bEDGEFER_[A-Z_]+\b", text))
    assert used and used <= SETTINGS, used - SETTINGS


def test_compose_services_files_and_ports_agree() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "edge-1", "edge-2", "client", "prometheus", "grafana"} <= set(services)
    assert "--requirepass" in services["redis"]["command"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")) and not source.startswith(("./keys", "../shared")):  # user-provided
                assert (REPO / source).exists(), f"{name}: {source}"
    for node in ("edge-1", "edge-2"):
        env = services[node]["environment"]
        assert int(env["EDGEFER_PORT"]) == EdgeSettings.port and int(env["EDGEFER_METRICS_PORT"]) == EdgeSettings.metrics_port
    assert int(services["worker"]["environment"]["EDGEFER_METRICS_PORT"]) == WorkerServiceSettings.metrics_port
    scrape = yaml.safe_load((REPO / "monitoring/prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for cfg in job["static_configs"] for t in cfg["targets"]}
    assert targets == {f"edge-1:{EdgeSettings.metrics_port}", f"edge-2:{EdgeSettings.metrics_port}",
                       f"worker:{WorkerServiceSettings.metrics_port}", "client:9300",
                       f"rollouts:{RolloutSettings.metrics_port}"}
    assert int(services["rollouts"]["environment"]["EDGEFER_METRICS_PORT"]) == RolloutSettings.metrics_port
    assert "9300" in services["client"]["command"]


@pytest.mark.parametrize("dockerfile", ["edge.Dockerfile", "worker.Dockerfile"])
def test_images_copy_what_exists_and_run_as_a_user(dockerfile: str) -> None:
    text = (REPO / "docker" / dockerfile).read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert list(REPO.glob(item)), item
    assert re.search(r"^USER (10001|edgefer)$", text, re.M)
    if dockerfile == "edge.Dockerfile":
        instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        assert "torch" not in instructions.lower() and "HEALTHCHECK" in text and "services.edge.healthcheck" in text


def requirement_names() -> set[str]:
    """Every package pyproject.toml asks for: runtime, extras and the build system."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    wanted = [*project["project"]["dependencies"], *extras["worker"], *extras["rollouts"],
              *project["build-system"]["requires"]]
    return {re.split(r"[<>=!~\[; ]", w, maxsplit=1)[0].lower().replace("_", "-") for w in wanted}


def test_every_dependency_the_images_install_is_pinned() -> None:
    pins = {}
    for line in (REPO / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert requirement_names() <= set(pins), requirement_names() - set(pins)
    for dockerfile in ("edge.Dockerfile", "worker.Dockerfile"):
        assert "PIP_CONSTRAINT=" in (REPO / "docker" / dockerfile).read_text(), dockerfile


def test_the_rollout_controller_runs_from_the_edge_images_controller_stage() -> None:
    """The statistics (scipy) are in the controller's image only: the boards' image stays as small as it was."""
    dockerfile = (REPO / "docker/edge.Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M)
    assert "controller" in stages and dockerfile.rstrip().endswith('ENTRYPOINT ["edgefer-edge"]')  # edge: the default
    assert "'.[rollouts]'" in dockerfile
    rollouts = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["rollouts"]
    assert rollouts["build"]["target"] == "controller" and rollouts["image"].startswith("edgefer/controller:")
    deployment = yaml.safe_load((REPO / "k8s/base/rollouts.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("edgefer/controller:")


def test_compose_builds_one_edge_image_and_makes_its_own_keys() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    edge_image = services["edge-1"]["image"]
    users = [name for name, s in services.items() if s.get("image") == edge_image]
    builders = [name for name in users if "build" in services[name]]
    assert {"edge-1", "edge-2", "client"} <= set(users) and len(builders) == 1, builders
    assert services["client"]["healthcheck"] == {"disable": True}
    keygen = services["keygen"]
    assert any(v.endswith(":/var/lib/edgefer/keys") for v in keygen["volumes"])  # a path the image's user owns
    assert "/var/lib/edgefer/keys" in (REPO / "docker/edge.Dockerfile").read_text()
    for name in ("worker", "edge-1", "edge-2"):
        assert services[name]["depends_on"]["keygen"] == {"condition": "service_completed_successfully"}


def scrape(registry) -> set[str]:
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {family(name) for name in re.findall(r"^# TYPE (\S+) ", body, re.M)}


def family(sample_name: str) -> str:
    return re.sub(r"_(total|bucket|count|sum|info)$", "", sample_name)


def test_every_metric_in_the_dashboard_and_alerts_is_exported(redis_server) -> None:
    client = connect(RegistryAccess(redis_url=redis_server.url))
    worker = WorkerMetrics()
    worker.registry.register(FleetCollector(ModelRegistry(client), JobQueue(client)))  # as the worker service does
    rollouts = CollectorRegistry()
    rollouts.register(RolloutCollector(RolloutStore(client, ModelRegistry(client).keys)))
    Counter("edgefer_rollout_decisions", "as the controller service counts them", ["decision"], registry=rollouts)
    exported = (scrape(EdgeMetrics().registry) | scrape(worker.registry) | scrape(ClientMetrics().registry)
                | scrape(rollouts))
    dashboard = json.loads((REPO / "monitoring/grafana/dashboards/edgefer-latency.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [r["expr"] for g in yaml.safe_load((REPO / "monitoring/alerts.yml").read_text())["groups"] for r in g["rules"]]
    used = {family(name) for expr in exprs for name in re.findall(r"\bedgefer_[a-z_]+", expr)}
    assert len(used) >= 12
    assert used <= exported, used - exported


def test_collectors_answer_within_the_scrape_timeout_when_redis_hangs(redis_server) -> None:
    """A frozen Redis must read as edgefer_fleet_registry_up 0 (the critical alert), not as a failed scrape."""
    access = RegistryAccess(redis_url=redis_server.url)  # the default 5 s command timeout of every other read
    scrapes = connect_for_scrapes(access)
    worker = WorkerMetrics()
    worker.registry.register(FleetCollector(ModelRegistry(scrapes), JobQueue(scrapes)))
    rollouts = CollectorRegistry()
    rollouts.register(RolloutCollector(RolloutStore(scrapes, ModelRegistry(scrapes).keys)))
    assert "edgefer_fleet_registry_up 1.0" in generate_latest(worker.registry).decode()
    redis_server.freeze()
    try:
        for registry, line in ((worker.registry, "edgefer_fleet_registry_up 0.0"),
                               (rollouts, "edgefer_rollout_registry_up 0.0")):
            started = time.monotonic()
            body = generate_latest(registry).decode()
            assert time.monotonic() - started < 4.0  # the shipped scrape_timeout
            assert line in body
        assert "edgefer_worker_stage" in generate_latest(worker.registry).decode()  # the rest still scrapes
    finally:
        redis_server.freeze(False)


def test_worker_metrics_exist_from_the_start_and_claim_nothing_before_a_publish() -> None:
    metrics = WorkerMetrics()
    sample = metrics.registry.get_sample_value
    assert all(sample("edgefer_worker_stage_seconds_count", {"stage": stage}) == 0 for stage in ("teacher", "publish"))
    body = generate_latest(metrics.registry).decode()
    assert "edgefer_worker_last_published_accuracy{" not in body  # no 0% before the first publish
    assert "edgefer_worker_last_promoted_version{" not in body
