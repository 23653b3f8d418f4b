"""The deployment files, checked by reading them (Docker cannot run here): docker-compose.yml parses
and runs web and worker processes from an .env file, every variable it or the example configuration
needs is in .env.example, and the image's build context leaves out what it must not carry."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from bridge.config import parse_config
from bridge.engine.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_runs_web_and_worker_from_the_env_file_beside_redis_with_aof_and_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "web", "worker"}
    for role in ("web", "worker"):
        service = services[role]
        assert service["env_file"] == ".env" and service["command"][-2:] == ["--role", role]
        assert "--demo" not in service["command"], "a deployment never runs on demo values"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis"]["command"][-4:] == ["--appendonly", "yes", "--appendfsync", "always"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert set(compose["volumes"]) == {"redis-data", "postgres-data", "held"}
    # The web replicas share where a Slack event at its last try waits out a Redis outage, and the
    # path is the one the configuration names (server.held_dir).
    assert "held:/app/var/held" in services["web"]["volumes"]
    assert "./config:/app/config:ro" in services["web"]["volumes"], "a service's own list replaces the shared one"
    assert env_example()["BRIDGE_HELD_DIR"] == "/app/var/held"
    # A new named volume takes the image's directory, owner included: the bridge's user writes there.
    assert "install -d -o bridge /app/var /app/var/held" in (ROOT / "Dockerfile").read_text()


def test_every_variable_the_deployment_needs_is_in_env_example() -> None:
    documented = env_example()
    needed = set(VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    needed |= set(VARIABLE.findall((ROOT / "config" / "example.yaml").read_text())) - {"ENV_NAME"}
    assert needed - set(documented) == set(), "missing from .env.example"
    assert all(value for value in documented.values()), "every example value is filled in"
    assert documented["SLACK_API_URL"] == "https://slack.com/api/", "the real services, not the emulators"
    assert documented["TELEGRAM_API_URL"] == "https://api.telegram.org/bot"


def test_the_image_is_built_without_the_venv_secrets_or_local_data_and_runs_as_a_user() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".env", ".git", "var"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER bridge" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert ".env" in (ROOT / ".gitignore").read_text().split()


KUBERNETES = ROOT / "deploy" / "kubernetes"


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]
    return docs


def test_the_kubernetes_manifests_are_valid_against_the_schemas() -> None:
    docs = manifests()
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ConfigMap/feige-bridge-config",
        "Deployment/feige-bridge-web",
        "Deployment/feige-bridge-worker",
        "HorizontalPodAutoscaler/feige-bridge-web",
        "HorizontalPodAutoscaler/feige-bridge-worker",
        "Namespace/feige-bridge",
        "PodDisruptionBudget/feige-bridge-web",
        "PodDisruptionBudget/feige-bridge-worker",
        "Secret/feige-bridge-env",
        "Service/feige-bridge-web",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)  # raises on an unknown or wrong field


def test_the_deployments_probe_health_and_stop_within_the_grace_period() -> None:
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in manifests()}
    secret = docs["Secret/feige-bridge-env"]["stringData"]
    config = parse_config(docs["ConfigMap/feige-bridge-config"]["data"]["config.yaml"], environ=secret).config
    for role in ("web", "worker"):
        pod = docs[f"Deployment/feige-bridge-{role}"]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["args"][-2:] == ["--role", role] and "--demo" not in container["args"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pause + config.server.shutdown_grace_seconds
        assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"REDIS_URL", "ARCHIVE_URL"} <= set(secret)


def exported_metrics() -> set[str]:
    """Every series name /metrics can show: counters with _total, histograms with their parts."""
    names = set()
    for metric in METRICS.registry.collect():
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        elif metric.type == "histogram":
            names |= {f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum"}
        else:
            names.add(metric.name)
    return names


def test_the_alert_rules_are_valid_and_fire_when_they_should() -> None:
    rules = ROOT / "deploy" / "prometheus"
    checked = subprocess.run(["promtool", "check", "rules", str(rules / "alerts.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yaml"], cwd=rules, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    used = set(re.findall(r"\bfeige_[a-z_]+", (rules / "alerts.yaml").read_text()))
    assert used and used <= exported_metrics(), used - exported_metrics()
    alerts = set(re.findall(r"- alert: (\w+)", (rules / "alerts.yaml").read_text()))
    alert_tests = set(re.findall(r"alertname: (\w+)", (rules / "alerts.test.yaml").read_text()))
    assert alerts == alert_tests, f"alerts without a promtool test: {alerts - alert_tests}"


def test_every_metric_is_counted_somewhere() -> None:
    """A metric declared and never counted looks healthy on a dashboard and keeps its alert silent
    (``feige_pushes`` was, until 11dae24)."""
    code = "\n".join(p.read_text() for d in ("bridge", "connectors") for p in (ROOT / d).rglob("*.py"))
    declared = re.findall(
        r"self\.(\w+) = (?:Counter|Gauge|Histogram)\(", (ROOT / "bridge/engine/metrics.py").read_text()
    )
    assert len(declared) >= 10
    uncounted = [m for m in declared if not re.search(rf"METRICS\.{m}\.(?:labels\(|inc\(|set\(|observe\()", code)]
    assert uncounted == []


def test_the_dashboard_queries_only_metrics_the_bridge_exports() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "feige-bridge.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bfeige_[a-z_]+", query)}
    assert len(queries) >= 10 and used <= exported_metrics(), used - exported_metrics()
    assert {"feige_first_reply_seconds_bucket", "feige_events_oldest_seconds", "feige_redis_up"} <= used


def test_the_slack_app_manifest_asks_for_what_the_bridge_uses_and_nothing_more() -> None:
    """``deploy/slack/app-manifest.yaml`` creates the app in one paste: its scopes are README's
    table (each there with what it is for), its commands the ones the connector answers, and every
    request goes to the connector's one route."""
    from connectors.slack.app import SLASH_COMMANDS

    manifest = yaml.safe_load((ROOT / "deploy" / "slack" / "app-manifest.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| scope | for |") : readme.index("Install to the workspace")]
    rows = [row.split("|")[1] for row in table.splitlines()[2:] if "|" in row]
    documented = {scope for row in rows for scope in re.findall(r"`([a-z:]+)`", row)}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == documented
    commands = manifest["features"]["slash_commands"]
    assert {c["command"] for c in commands} == {form.split()[0] for form in SLASH_COMMANDS.values()}
    settings = manifest["settings"]
    events = readme[readme.index("**Event Subscriptions**") : readme.index("**Interactivity**")]
    assert settings["event_subscriptions"]["bot_events"] == re.findall(r"`([a-z_.]+)`", events)
    urls = [c["url"] for c in commands] + [settings["event_subscriptions"]["request_url"],
                                          settings["interactivity"]["request_url"]]  # fmt: skip
    assert all(url.endswith("/slack/events") for url in urls) and settings["interactivity"]["is_enabled"]
