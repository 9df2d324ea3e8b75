"""Every shipped config checked by the real tool that reads it: the Collector's `validate` (our two builds),
`promtool check config` and `promtool test rules`, `amtool check-config`, and the compose file's structure
against the repository (and `docker compose config` where the client has compose)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_mlmon import cli

from .conftest import REPO, require

COLLECTOR = REPO / "collector"
OVERLAYS = sorted(p for p in (COLLECTOR / "examples").glob("*.yaml") if "service:" in p.read_text()
                  and "receivers:" not in p.read_text())
STANDALONE = sorted(p for p in (COLLECTOR / "examples").glob("*.yaml") if p not in OVERLAYS)
CLOUD_ONLY = {"kafka-processor.yaml"}  # standalone configs with components only the cloud build has


def _validate(binary: str, *configs: Path | str, token: str | None = "a-token") -> subprocess.CompletedProcess[str]:
    """`validate`, with the processor's token in MLMON_PROCESSOR_TOKEN as a deployment sets it (None: unset)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLMON_PROCESSOR_TOKEN")}
    if token is not None:
        environment["MLMON_PROCESSOR_TOKEN"] = token
    return subprocess.run([binary, "validate", *(f"--config={c}" for c in configs)], capture_output=True,
                          text=True, timeout=120, env=environment)


def test_the_examples_are_sorted_into_overlays_and_standalone_configs() -> None:
    assert {p.name for p in OVERLAYS} == {"aws-cloudwatch.yaml", "google-cloud.yaml", "azure-monitor.yaml",
                                          "elasticsearch.yaml", "kafka.yaml", "kafka-pipeline.yaml"}
    assert {p.name for p in STANDALONE} == {"sharded-processors.yaml", "gateway-load-balancing.yaml",
                                            "kafka-processor.yaml"}


def test_builds_have_exactly_the_manifest_components(otelcol: str, otelcol_cloud: str) -> None:
    def components(binary: str) -> dict[str, set[str]]:
        listed = yaml.safe_load(subprocess.run([binary, "components"], capture_output=True, text=True,
                                               check=True).stdout)
        return {kind: {c["name"] for c in listed.get(kind) or []}
                for kind in ("receivers", "processors", "exporters", "extensions", "connectors")}

    core = components(otelcol)
    assert core["receivers"] == {"otlp"}
    assert core["processors"] == {"memory_limiter", "batch", "filter"}
    assert core["connectors"] == {"routing"}
    assert core["extensions"] == {"file_storage", "health_check", "bearertokenauth"}
    assert {"otlp_grpc", "otlp_http", "debug", "prometheus", "file", "loadbalancing"} <= core["exporters"]
    cloud = components(otelcol_cloud)
    assert cloud["exporters"] - core["exporters"] == {"awsemf", "googlecloud", "azuremonitor", "elasticsearch",
                                                      "kafka"}
    assert cloud["receivers"] - core["receivers"] == {"kafka"}
    assert cloud["processors"] - core["processors"] == {"groupbyattrs", "transform"}


def test_the_pipeline_config_validates(otelcol: str) -> None:
    done = _validate(otelcol, COLLECTOR / "otelcol-config.yaml")
    assert done.returncode == 0, done.stderr


def test_the_collector_sends_to_the_processor_over_tls_with_a_token_and_needs_one(otelcol: str) -> None:
    for path in (COLLECTOR / "otelcol-config.yaml", COLLECTOR / "examples" / "sharded-processors.yaml"):
        config = yaml.safe_load(path.read_text())
        to_processors = {name: exporter for name, exporter in config["exporters"].items() if "processor" in name}
        assert to_processors, path.name
        for name, exporter in to_processors.items():
            assert not exporter["tls"].get("insecure"), f"{path.name}: {name} sends in plaintext"
            assert exporter["tls"]["ca_file"] == "${env:MLMON_PROCESSOR_CA_FILE:-}"
            authenticator = exporter["auth"]["authenticator"]
            assert config["extensions"][authenticator] == {"token": "${env:MLMON_PROCESSOR_TOKEN:-}",
                                                           "filename": "${env:MLMON_PROCESSOR_TOKEN_FILE:-}"}
            assert authenticator in config["service"]["extensions"]
        done = _validate(otelcol, path, token=None)  # no token: the Collector does not start
        assert done.returncode != 0 and "no bearer token provided" in done.stderr, path.name


def test_validate_is_a_real_check(otelcol: str, tmp_path: Path) -> None:
    """A wrong OTTL condition and a component the build lacks are refused, so the checks above mean something."""
    text = (COLLECTOR / "otelcol-config.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace('log.event_name == "ml.predictions"', 'log.event_name === "ml.predictions"'))
    assert _validate(otelcol, broken).returncode != 0
    overlay = tmp_path / "kafka-on-core.yaml"
    overlay.write_text((COLLECTOR / "examples" / "kafka.yaml").read_text())
    done = _validate(otelcol, COLLECTOR / "otelcol-config.yaml", overlay)  # kafka is only in the cloud build
    assert done.returncode != 0 and "kafka" in done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_backend_overlay_validates_on_the_cloud_build(otelcol_cloud: str, overlay: Path) -> None:
    usage = re.search(r"otelcol-mlmon-cloud (--config=\S+ --config=\S+)", overlay.read_text())
    assert usage, f"{overlay.name} must say how to run it"
    assert usage.group(1) == f"--config=collector/otelcol-config.yaml --config=collector/examples/{overlay.name}"
    done = _validate(otelcol_cloud, COLLECTOR / "otelcol-config.yaml", overlay)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("config", STANDALONE, ids=lambda p: p.name)
def test_every_standalone_example_validates_on_the_core_build(otelcol: str, otelcol_cloud: str,
                                                              config: Path) -> None:
    done = _validate(otelcol_cloud if config.name in CLOUD_ONLY else otelcol, config)
    assert done.returncode == 0, done.stderr


def test_the_jaeger_config_validates(jaeger: str) -> None:
    done = _validate(jaeger, COLLECTOR / "jaeger" / "config.yaml")
    assert done.returncode == 0, done.stderr


def test_prometheus_config_and_rules_check(tmp_path: Path) -> None:
    promtool = require("promtool")
    done = subprocess.run([promtool, "check", "config", str(COLLECTOR / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "1 rule files found" in done.stdout, done.stdout + done.stderr
    done = subprocess.run([promtool, "check", "rules", str(COLLECTOR / "prometheus" / "rules.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS: 8 rules found" in done.stdout, done.stdout + done.stderr


def test_prometheus_rule_unit_tests_pass_and_can_fail(tmp_path: Path) -> None:
    promtool = require("promtool")
    tests = COLLECTOR / "prometheus" / "rules_test.yml"
    done = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same tests against rules whose drift alert ignores the processor's verdict: they must fail.
    rules = (COLLECTOR / "prometheus" / "rules.yml").read_text()
    firing = 'ml_alert_firing{ml_alert_kind="drift"}'
    weakened = rules.replace(f"{firing} == 1", f"{firing} >= 0")
    assert weakened != rules
    (tmp_path / "rules.yml").write_text(weakened)
    (tmp_path / "rules_test.yml").write_text(tests.read_text())
    done = subprocess.run([promtool, "test", "rules", str(tmp_path / "rules_test.yml")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "MLFeatureDrift" in done.stdout + done.stderr


def test_alertmanager_config_checks() -> None:
    amtool = require("amtool")
    done = subprocess.run([amtool, "check-config", str(COLLECTOR / "alertmanager" / "alertmanager.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_points_at_the_dashboards_and_datasources() -> None:
    datasources = yaml.safe_load((COLLECTOR / "grafana/provisioning/datasources/mlmon.yaml").read_text())
    uids = {d["uid"]: d for d in datasources["datasources"]}
    assert uids["prometheus"]["url"] == "http://prometheus:9090" and uids["prometheus"]["isDefault"]
    provider = yaml.safe_load((COLLECTOR / "grafana/provisioning/dashboards/mlmon.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]] == "./collector/grafana/dashboards"
    for path in (COLLECTOR / "grafana/dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
        for panel in panels:
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] in uids for t in panel["targets"]), panel["title"]


# --- docker-compose.yml --------------------------------------------------------------------------------------
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_design_cards_services() -> None:
    assert set(COMPOSE["services"]) == {"secrets", "trainer", "model", "loadgen", "processor", "collector",
                                        "prometheus", "alertmanager", "grafana", "jaeger"}
    for name, service in COMPOSE["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in COMPOSE["services"], f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"


def _mlmon_argv(service: dict[str, Any]) -> list[str]:
    return list(service["command"])


@pytest.mark.parametrize("name", ["trainer", "loadgen", "processor"])
def test_compose_mlmon_commands_parse_with_the_real_cli(name: str) -> None:
    """The image's entry point is `mlmon`: each service's command must be valid `mlmon` flags."""
    assert "ENTRYPOINT [\"mlmon\"]" in (REPO / "Dockerfile").read_text()
    parsed = cli._parser().parse_args(_mlmon_argv(COMPOSE["services"][name]))
    assert isinstance(parsed, argparse.Namespace)
    for value in vars(parsed).values():  # files the command reads come from the trainer's volume
        if isinstance(value, str) and value.startswith("/data/"):
            assert Path(value).name in {"model.pkl", "reference.json", "serving.csv"}


def test_compose_model_service_runs_the_example_under_opentelemetry_instrument() -> None:
    model = COMPOSE["services"]["model"]
    assert model["entrypoint"][:2] == ["opentelemetry-instrument", "python"]
    assert (REPO / model["entrypoint"][2]).is_file()
    assert model["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert "http://127.0.0.1:8080/health" in " ".join(model["healthcheck"]["test"])  # the example's health route
    assert "/health" in (REPO / "examples" / "model_service.py").read_text()
    assert COMPOSE["services"]["loadgen"]["depends_on"]["model"]["condition"] == "service_healthy"


def test_compose_addresses_match_the_collector_and_prometheus_configs() -> None:
    config = (COLLECTOR / "otelcol-config.yaml").read_text()

    def default(variable: str) -> str:
        found = re.search(r"\$\{env:" + variable + r":-([^}]+)\}", config)
        assert found, variable
        return found.group(1)

    collector = COMPOSE["services"]["collector"]
    assert collector["environment"]["MLMON_PROCESSOR_ENDPOINT"] == "processor:4317" == default(
        "MLMON_PROCESSOR_ENDPOINT")
    processor = COMPOSE["services"]["processor"]
    assert processor["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(
        ":" + default("MLMON_RESULTS_GRPC_ENDPOINT").rsplit(":", 1)[1])
    assert "0.0.0.0:4317" in processor["command"]
    prometheus = yaml.safe_load((COLLECTOR / "prometheus/prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"collector:" + default("MLMON_PROMETHEUS_EXPORTER_ENDPOINT").rsplit(":", 1)[1],
                       "collector:" + default("MLMON_COLLECTOR_TELEMETRY_PORT")}
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "http://alertmanager:9093" in processor["command"]


def test_compose_processor_takes_tls_and_a_token_made_by_the_secrets_service(tmp_path: Path) -> None:
    from otel_mlmon.demo.credentials import write_secrets

    services = COMPOSE["services"]
    secrets = services["secrets"]
    assert secrets["entrypoint"][:3] == ["python", "-m", "otel_mlmon.demo.credentials"]
    folder, hosts = secrets["entrypoint"][3], tuple(secrets["entrypoint"][4:])
    processor = cli._parser().parse_args(services["processor"]["command"])
    assert (processor.auth_token_file, processor.tls_cert, processor.tls_key) == (
        f"{folder}/token", f"{folder}/server.pem", f"{folder}/server-key.pem")
    collector = services["collector"]
    assert collector["environment"]["MLMON_PROCESSOR_TOKEN_FILE"] == f"{folder}/token"
    assert collector["environment"]["MLMON_PROCESSOR_CA_FILE"] == f"{folder}/ca.pem"
    for name in ("processor", "collector"):
        assert f"processor-secrets:{folder}:ro" in services[name]["volumes"]
        assert services[name]["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    # What the service writes: a certificate for the name the Collector dials, and a token the processor reads.
    dialed = collector["environment"]["MLMON_PROCESSOR_ENDPOINT"].rsplit(":", 1)[0]
    assert dialed in hosts
    token, certs = write_secrets(tmp_path, hosts)
    import ssl

    names = ssl._ssl._test_decode_cert(str(certs.server_cert))["subjectAltName"]  # type: ignore[attr-defined]
    assert ("DNS", dialed) in names
    assert len(token.read_text().strip()) == 64 and oct(token.stat().st_mode)[-3:] == "644"
    assert write_secrets(tmp_path, hosts)[0].read_text() == token.read_text()  # made once, kept
    assert "/secrets" in (REPO / "Dockerfile").read_text()  # the volume's folder belongs to the image's user


def test_docker_compose_config_where_the_client_has_compose() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("this Docker client has no compose plugin (the structure is checked above)")
    done = subprocess.run([docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_dockerfiles_build_what_compose_runs() -> None:
    collector = (COLLECTOR / "Dockerfile").read_text()
    assert "./build.sh $BUILD_FLAGS" in collector and "ARG BUILD_FLAGS=" in collector
    assert "COPY builder-config.yaml builder-config.sum builder-config-cloud.yaml builder-config-cloud.sum build.sh" \
        in collector
    root = (REPO / "Dockerfile").read_text()
    install = re.search(r'pip install --no-cache-dir "\.\[([a-z,]+)\]"', root)
    assert install and {"sklearn", "processor", "batch"} <= set(install.group(1).split(","))


def test_the_kafka_compose_override_fits_the_main_file() -> None:
    """docker-compose.kafka.yml (Kafka between the Collectors) names services, files, volumes and build flags that
    exist: the Collectors run the cloud build, which has the kafka exporter and receiver."""
    override = yaml.safe_load((REPO / "docker-compose.kafka.yml").read_text())
    services = override["services"]
    assert {"kafka", "kafka-topics", "collector", "collector-kafka"} <= set(services)
    assert "collector" in COMPOSE["services"] and "processor" in COMPOSE["services"]
    volumes = set(COMPOSE.get("volumes") or {}) | set(override.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in volumes, f"{name} mounts the volume {source}, declared nowhere"
        for dependency in service.get("depends_on", {}):
            assert dependency in services or dependency in COMPOSE["services"], (name, dependency)
    for name in ("collector", "collector-kafka"):
        assert services[name]["build"]["args"]["BUILD_FLAGS"] == "--cloud"
    assert "ARG BUILD_FLAGS" in (COLLECTOR / "Dockerfile").read_text()
    topics = services["kafka-topics"]["entrypoint"][-1]
    pipeline = (COLLECTOR / "examples" / "kafka-pipeline.yaml").read_text()
    assert all(topic in topics and topic in pipeline for topic in ("otel-mlmon-events", "otel-mlmon-sketches"))
