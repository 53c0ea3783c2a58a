"""The chart's alert rules, checked and unit-tested by Prometheus's own promtool:
each alert fires on the series that should fire it and not before (its `for`), and
its text renders with the labels it names."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.drift import DriftReport, FeatureDrift
from mlops_operator.metrics import CanaryGauge, DriftGauges, reconciling

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "mlops-operator" / "files" / "alerts.yaml"
TESTS = ROOT / "tests" / "alerts" / "alerts_test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("MLOPS_REQUIRE_EXTRAS") == "1":
            pytest.fail("promtool is not installed; hack/setup.sh installs it (Debian prometheus)")
        pytest.skip("promtool is not installed (hack/setup.sh installs it)")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=TESTS.parent
    )


def test_the_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


def test_every_alert_has_a_promtool_unit_test_and_passes_it() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert alerts == tested
    run = promtool("test", "rules", TESTS.name)
    assert run.returncode == 0, run.stdout + run.stderr


SERIES = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>.*)\}$")


def exported() -> dict[str, set[str]]:
    """Every series the operator exports, by name, with its label names: each metric
    set once, as the operator sets them."""
    registry = CollectorRegistry()
    features = [FeatureDrift("x0", "ks", 0.4, 0.001, 0.05, True)]
    verdict = DriftReport(
        samples=900,
        reference_samples=5000,
        features=features,
        prediction=None,
        drifted=1,
        drift_share=1.0,
        dataset_drift=True,
        threshold_share=0.5,
        correction="none",
        insufficient_data=False,
    )
    DriftGauges(registry).publish("models", "iris", verdict)
    CanaryGauge(registry).set("models", "iris", "RolledBack")
    families = [*text_string_to_metric_families(generate_latest(registry).decode())]
    with reconciling("ModelDeployment"):
        pass
    families += text_string_to_metric_families(generate_latest(REGISTRY).decode())
    return {s.name: set(s.labels) for family in families for s in family.samples}


def test_the_alerts_are_tested_on_series_the_operator_exports() -> None:
    """The promtool tests feed series by name and labels: were a metric renamed in
    the operator, they would still pass and the alert would never fire."""
    series = exported()
    scraped = {"job", "instance"}  # added by Prometheus
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fed = [s["series"] for case in cases for s in case["input_series"]]
    for written in fed:
        found = SERIES.match(written.replace(" ", ""))
        assert found, written
        name = found["name"]
        labels = {pair.split("=")[0] for pair in found["labels"].split(",")} - scraped
        if name == "up":  # Prometheus's own
            continue
        assert name in series, f"{name} is not exported by the operator"
        assert labels == series[name], (name, labels, series[name])
