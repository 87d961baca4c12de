"""Monitoring as code: promtool checks the rules and the Prometheus config and runs the rule unit tests
(every alert fires when it should and stays quiet otherwise); the Prometheus Operator's objects say the
same as the plain files."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "monitoring"
PROMTOOL = shutil.which("promtool") or str(REPO / ".venv/tools/usr/bin/promtool")

needs_promtool = pytest.mark.skipif(
    not Path(PROMTOOL).is_file(), reason="promtool not found (`make setup` unpacks it from Debian's prometheus package)"
)


def promtool(*args: str) -> str:
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_names() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


@needs_promtool
def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(MONITORING / "alerts.yml"))
    assert "SUCCESS" in promtool("test", "rules", str(MONITORING / "alerts.test.yml"))


@needs_promtool
def test_prometheus_config_passes_promtool() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    promtool("check", "config", str(MONITORING / "prometheus.yml"))  # as it is: its rule path is relative
    assert config["global"]["scrape_timeout"] == "4s"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert set(alert_names()) == fired == quiet


def test_the_prometheus_rule_is_the_alert_file_and_pod_monitors_select_real_pods() -> None:
    rule = yaml.safe_load((MONITORING / "operator/prometheus-rule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "edgefer"
    assert rule["spec"]["groups"] == yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"], (
        "run python monitoring/operator/render_rules.py")
    workloads = {}
    for path in REPO.glob("k8s/base/*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in ("DaemonSet", "Deployment"):
                workloads[doc["metadata"]["name"]] = doc["spec"]["template"]
    monitors = [d for d in yaml.safe_load_all((MONITORING / "operator/pod-monitors.yaml").read_text()) if d]
    assert {m["metadata"]["name"] for m in monitors} == {"edgefer-edge", "edgefer-worker", "edgefer-rollouts"}
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [t for t in workloads.values() if wanted.items() <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for c in selected[0]["spec"]["containers"] for p in c.get("ports", [])}
        assert all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])
        assert monitor["metadata"]["labels"]["release"] == rule["metadata"]["labels"]["release"]


def test_alertmanager_routes_every_alert_to_a_receiver() -> None:
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert all(route["receiver"] in receivers for route in config["route"].get("routes", []))


def test_inhibition_pairs_name_real_alerts_and_never_mute_by_severity_alone() -> None:
    import re

    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    names = set(alert_names())
    for rule in config["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            matchers = rule[side]
            assert all(m.startswith("alertname") for m in matchers), (side, matchers)  # a named pair
            for matcher in matchers:
                pattern = matcher.split("=", 1)[1].lstrip("~").strip('"')
                assert any(re.fullmatch(pattern, name) for name in names), f"{matcher} names no alert"


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana/dashboards/edgefer-latency.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return exprs + [a["expr"] for a in dashboard["annotations"]["list"]]


def test_the_dashboard_file_is_the_builders_output() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboard", MONITORING / "grafana/build_dashboard.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert json.loads((MONITORING / "grafana/dashboards/edgefer-latency.json").read_text()) == builder.dashboard(), (
        "run python monitoring/grafana/build_dashboard.py")


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables replaced by what they expand to."""
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$node": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in promtool("check", "rules", str(tmp_path / "queries.yml"))
