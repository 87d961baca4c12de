"""Write prometheus-rule.yaml (a PrometheusRule) from ../alerts.yml, the one source of the alert rules.

    python monitoring/operator/render_rules.py      (tests/test_monitoring.py checks the two are equal)
"""

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = """# Generated from monitoring/alerts.yml by monitoring/operator/render_rules.py: edit alerts.yml, not this.
# The Prometheus Operator loads rules from PrometheusRule objects; `release` must match the stack's ruleSelector.
"""


def prometheus_rule() -> dict:
    groups = yaml.safe_load((HERE.parent / "alerts.yml").read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "edgefer", "namespace": "edgefer",
                     "labels": {"app.kubernetes.io/part-of": "edgefer", "release": "kube-prometheus-stack"}},
        "spec": {"groups": groups},
    }


if __name__ == "__main__":
    text = yaml.safe_dump(prometheus_rule(), sort_keys=False, width=200)
    (HERE / "prometheus-rule.yaml").write_text(HEADER + text)
