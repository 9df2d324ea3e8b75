"""The Helm chart (deploy/helm/otel-mlmon) checked by the real tools: `helm lint --strict` and `helm template` with
helm built from its Go module (scripts/build-helm.sh); the processor's rendered command parsed by `mlmon`'s own
argparse, its settings loaded by the processor's config loader, and the processor run with that command to answer
the rendered probes; the Collector's rendered config validated by the otel-mlmon Collector; every port followed
from the config that binds it to the Service that exposes it (as tests/stack/test_configs.py does for compose)."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_mlmon import cli
from otel_mlmon.processor.config import ProcessorConfig, load

from .conftest import CHART, NAMESPACE, RELEASE, REPO, Rendered, merge_configs, resolve_env

# Values switched on for the variants: the optional parts, and everything together with TLS and custom ports.
# Kafka with names other than the examples' defaults, so that the chart's substitutions are seen.
KAFKA: dict[str, Any] = {"kafka": {
    "enabled": True, "brokers": ["kafka-0.kafka:9092", "kafka-1.kafka:9092"], "partitions": 4,
    "topics": {"logs": "ml-events", "metrics": "ml-sketches"},
    "consumerGroups": {"logs": "mlmon-a-events", "metrics": "mlmon-a-sketches"}}}
KAFKA_REPLICAS: dict[str, Any] = {**KAFKA, "processor": {"replicas": 3}}
SERVICE_MONITOR: dict[str, Any] = {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
PROMETHEUS_RULE: dict[str, Any] = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}}
EXISTING_SECRET: dict[str, Any] = {"auth": {"existingSecret": "mlmon-token", "existingSecretKey": "bearer"}}
EVERYTHING: dict[str, Any] = {
    **KAFKA, **SERVICE_MONITOR, **PROMETHEUS_RULE, **EXISTING_SECRET,
    "processor": {"tls": {"existingSecret": "mlmon-processor-tls"}, "ports": {"grpc": 5317, "http": 5318},
                  "alertmanager": "http://alertmanager-operated.monitoring.svc:9093",
                  "settings": {"allowed_lateness_s": 10, "retention_s": 86400, "require_reference": True},
                  "references": {"churn.json": '{"model": "churn"}', "fraud.json": '{"model": "fraud"}'},
                  "persistence": {"storageClassName": "fast", "size": "50Gi"}},
    "collector": {"ports": {"otlpGrpc": 14317, "otlpHttp": 14318, "resultsGrpc": 14319, "resultsHttp": 14320,
                            "prometheus": 18889, "telemetry": 18888, "health": 23133},
                  "traces": {"endpoint": "jaeger-collector.tracing.svc:4317"}},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {}, "kafka": KAFKA, "kafkaReplicas": KAFKA_REPLICAS, "serviceMonitor": SERVICE_MONITOR,
    "prometheusRule": PROMETHEUS_RULE, "existingSecret": EXISTING_SECRET, "everything": EVERYTHING}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(helm: str, tmp_path: Path, variant: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[variant]))
    done = subprocess.run([helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "0 chart(s) failed" in done.stdout, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout, done.stdout


def test_helm_lint_is_a_real_check(helm: str, tmp_path: Path) -> None:
    """A template that renders broken YAML fails the lint, so the lint above means something."""
    broken = tmp_path / "otel-mlmon"
    subprocess.run(["cp", "-r", str(CHART), str(broken)], check=True)
    service = broken / "templates" / "collector-service.yaml"
    service.write_text(service.read_text().replace("  ports:\n", "  ports\n", 1))
    done = subprocess.run([helm, "lint", "--strict", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "collector-service.yaml" in done.stdout + done.stderr


def test_more_than_one_processor_replica_is_refused_with_the_reason(render: Any) -> None:
    with pytest.raises(AssertionError, match="every model's data must reach one processor"):
        render({"processor": {"replicas": 2}})


def test_values_schema_refuses_misspelt_and_mistyped_values(render: Any) -> None:
    with pytest.raises(AssertionError, match="replica"):
        render({"processor": {"replica": 2}})
    with pytest.raises(AssertionError, match="grpc"):
        render({"processor": {"ports": {"grpc": "4317x"}}})
    with pytest.raises(AssertionError, match="alertmanager"):
        render({"processor": {"alertmanager": "alertmanager:9093"}})  # the processor wants an http(s) URL


def test_default_install_has_the_parts_and_needs_no_crds(render: Any) -> None:
    chart = render({})
    assert sorted(chart.objects) == sorted([
        ("ConfigMap", f"{RELEASE}-otel-mlmon-collector"), ("ConfigMap", f"{RELEASE}-otel-mlmon-processor"),
        ("Deployment", f"{RELEASE}-otel-mlmon-collector"), ("Secret", f"{RELEASE}-otel-mlmon-token"),
        ("Service", f"{RELEASE}-otel-mlmon-collector"), ("Service", f"{RELEASE}-otel-mlmon-processor"),
        ("Service", f"{RELEASE}-otel-mlmon-processor-headless"), ("StatefulSet", f"{RELEASE}-otel-mlmon-processor")])
    statefulset = chart.one("StatefulSet")
    assert statefulset["spec"]["serviceName"] == f"{RELEASE}-otel-mlmon-processor-headless"
    assert chart.get("Service", statefulset["spec"]["serviceName"])["spec"]["clusterIP"] == "None"


def test_the_collector_runs_the_repository_config_and_rules_are_the_repositorys(render: Any) -> None:
    chart = render({})
    # helm reads no file outside the chart: files/ holds copies, which must follow the repository's.
    for copy, original in (("otelcol-config.yaml", "collector/otelcol-config.yaml"),
                           ("rules.yml", "collector/prometheus/rules.yml"),
                           ("kafka-pipeline.yaml", "collector/examples/kafka-pipeline.yaml"),
                           ("kafka-processor.yaml", "collector/examples/kafka-processor.yaml")):
        assert (CHART / "files" / copy).read_text() == (REPO / original).read_text(), (
            f"deploy/helm/otel-mlmon/files/{copy} differs from {original}: copy it over (cp {original} "
            "deploy/helm/otel-mlmon/files/)")
    repository_config = (REPO / "collector" / "otelcol-config.yaml").read_text()
    assert chart.one("ConfigMap", "collector")["data"]["otelcol-config.yaml"] == repository_config
    container = chart.container("Deployment")
    assert container["args"] == ["--config=/etc/otelcol/otelcol-config.yaml", "--config=/etc/otelcol/kubernetes.yaml"]
    assert chart.mount("Deployment", "/etc/otelcol/otelcol-config.yaml") == ("configMap", chart.one(
        "ConfigMap", "collector")["metadata"]["name"], "otelcol-config.yaml")
    assert container["image"] == "otelcol-mlmon:0.152.0"
    manifest = (REPO / "collector" / "builder-config.yaml").read_text()
    assert "name: otelcol-mlmon\n" in manifest and "otlpreceiver v0.152.0" in manifest


@pytest.mark.parametrize("variant", VARIANTS)
def test_processor_command_parses_with_the_real_cli_and_its_settings_load(
        render: Any, tmp_path: Path, variant: str) -> None:
    chart = render(VARIANTS[variant])
    container = chart.container("StatefulSet")
    assert "ENTRYPOINT [\"mlmon\"]" in (REPO / "Dockerfile").read_text() and "command" not in container
    args = cli._parser().parse_args(container["args"])
    assert (args.command, args.processor_command) == ("processor", "serve")
    # Every file the command names is mounted from the right place.
    assert chart.mount("StatefulSet", args.store) == ("volumeClaimTemplate", "state", "processor.db")
    assert chart.mount("StatefulSet", args.auth_token_file) == (
        "secret", chart.token_secret, chart.token_key)
    config_map = chart.one("ConfigMap", "processor")
    assert chart.mount("StatefulSet", args.config) == ("configMap", config_map["metadata"]["name"], "processor.yaml")
    for path in args.reference:
        kind, name, key = chart.mount("StatefulSet", path)
        assert (kind, name) == ("configMap", config_map["metadata"]["name"]) and key in config_map["data"]
    assert len(args.reference) == len(VARIANTS[variant].get("processor", {}).get("references", {}))
    tls = VARIANTS[variant].get("processor", {}).get("tls", {}).get("existingSecret")
    if tls:
        assert chart.mount("StatefulSet", args.tls_cert) == ("secret", tls, "tls.crt")
        assert chart.mount("StatefulSet", args.tls_key) == ("secret", tls, "tls.key")
    else:
        assert args.tls_cert is None and args.tls_key is None
    # The settings file and the flags, through the processor's own loader (as `mlmon processor serve` calls it):
    # unknown settings, a public address without a token and the like would refuse startup here.
    settings = tmp_path / "processor.yaml"
    settings.write_text(config_map["data"]["processor.yaml"])
    config = load({"grpc_endpoint": args.grpc_endpoint, "http_endpoint": args.http_endpoint, "store": args.store,
                   "references": tuple(args.reference), "alertmanager": args.alertmanager,
                   "webhook": args.webhook, "auth_token_file": args.auth_token_file, "tls_cert": args.tls_cert,
                   "tls_key": args.tls_key, "allow_unauthenticated": args.allow_unauthenticated},
                  environ=chart.environment("StatefulSet"), yaml_path=str(settings))
    assert config.authenticated and not config.allow_unauthenticated
    for name, value in VARIANTS[variant].get("processor", {}).get("settings", {}).items():
        assert getattr(config, name) == value


def test_the_processor_runs_with_the_rendered_command_and_answers_the_rendered_probes(
        render: Any, tmp_path: Path) -> None:
    """`mlmon processor serve` with the chart's arguments, its files where the pod mounts them (moved under
    tmp_path) and its ports on free loopback ports: the probes answer without the token, the API only with it."""
    chart = render({"processor": {"settings": {"tick_s": 0.5}}})
    container = chart.container("StatefulSet")
    token = base64.b64decode(chart.one("Secret")["data"]["token"]).decode()
    files = {"/secrets/token": token,
             "/etc/mlmon/processor.yaml": chart.one("ConfigMap", "processor")["data"]["processor.yaml"]}
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    (tmp_path / "state").mkdir()
    ports = {name: _free_port() for name in ("grpc", "http")}
    moved = []
    for arg in container["args"]:
        if arg.startswith("0.0.0.0:"):
            port = int(arg.rsplit(":", 1)[1])
            arg = "127.0.0.1:" + str(ports["grpc" if port == chart.container_port("StatefulSet", "otlp-grpc")
                                           else "http"])
        elif arg.startswith("/"):
            assert arg.split("/")[1] in {"secrets", "etc", "state"}, arg
            arg = str(tmp_path / arg.lstrip("/"))
        moved.append(arg)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLMON_"))}
    environment["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen([sys.executable, "-c", "import sys; from otel_mlmon.cli import main; "
                                "sys.exit(main(sys.argv[1:]))", *moved], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{ports['http']}"
        probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        for probe in probes.values():
            assert chart.container_port("StatefulSet", probe["port"]) == int(
                container["args"][container["args"].index("--http-endpoint") + 1].rsplit(":", 1)[1])
            assert probe["scheme"] == "HTTP"
        assert {p["path"] for p in probes.values()} == {"/healthz", "/readyz"}
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the processor did not answer /healthz within 30 s"
                time.sleep(0.2)
        for probe in probes.values():
            with urllib.request.urlopen(base + probe["path"], timeout=5) as answer:
                assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/v1/results", timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(base + "/v1/results", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
    finally:
        process.terminate()
        process.wait(30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_ports_follow_from_the_configs_to_the_services(render: Any, variant: str) -> None:
    chart = render(VARIANTS[variant])
    config, environment = chart.collector_config()
    # Collector: every listener of its config is a container port, exposed by its Service under the same name.
    listeners = {
        "otlp-grpc": config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "otlp-http": config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "results-grpc": config["receivers"]["otlp/results"]["protocols"]["grpc"]["endpoint"],
        "results-http": config["receivers"]["otlp/results"]["protocols"]["http"]["endpoint"],
        "prometheus": config["exporters"]["prometheus"]["endpoint"],
        "telemetry": "{host}:{port}".format(
            **config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]),
        "health": config["extensions"]["health_check"]["endpoint"],
    }
    collector_service = chart.one("Service", "collector")
    for name, endpoint in listeners.items():
        host, port = endpoint.rsplit(":", 1)
        assert host == "0.0.0.0", f"{name} listens on {host} only"
        assert chart.container_port("Deployment", name) == int(port), name
        if name != "health":
            assert chart.service_target("Service", collector_service["metadata"]["name"], name) == (
                "Deployment", int(port)), name
    container = chart.container("Deployment")
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    # The Collector -> processor: the exporter dials the processor Service's gRPC port, which leads to the
    # container port the processor's --grpc-endpoint binds.
    exporter = config["exporters"]["otlp_grpc/mlmon-processor"]
    host, port = exporter["endpoint"].rsplit(":", 1)
    service, namespace, suffix = host.split(".")
    assert (namespace, suffix) == (NAMESPACE, "svc")
    args = cli._parser().parse_args(chart.container("StatefulSet")["args"])
    assert chart.service_target("Service", service, int(port)) == (
        "StatefulSet", int(args.grpc_endpoint.rsplit(":", 1)[1]))
    assert chart.service_target("Service", service, "otlp-http") == (
        "StatefulSet", int(args.http_endpoint.rsplit(":", 1)[1]))
    assert args.grpc_endpoint.startswith("0.0.0.0:") and args.http_endpoint.startswith("0.0.0.0:")
    # The processor -> the Collector's results receiver (gRPC, as OTEL_EXPORTER_OTLP_PROTOCOL says).
    processor_environment = chart.environment("StatefulSet")
    assert processor_environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    found = re.fullmatch(r"http://([^:/]+):(\d+)", processor_environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert found, processor_environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert chart.service_target("Service", found.group(1), int(found.group(2))) == (
        "Deployment", int(listeners["results-grpc"].rsplit(":", 1)[1]))
    # Traces: to the configured endpoint, or to the debug exporter.
    traces = VARIANTS[variant].get("collector", {}).get("traces", {}).get("endpoint")
    if traces:
        assert config["exporters"]["otlp_grpc/jaeger"]["endpoint"] == traces
        assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_grpc/jaeger"]
    else:
        assert config["service"]["pipelines"]["traces"]["exporters"] == ["debug"]
    assert "MLMON_JAEGER_ENDPOINT" not in environment or traces


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_the_collector_and_the_processor_share_the_token_and_tls(render: Any, variant: str) -> None:
    chart = render(VARIANTS[variant])
    config, _ = chart.collector_config()
    exporter = config["exporters"]["otlp_grpc/mlmon-processor"]
    assert config["extensions"][exporter["auth"]["authenticator"]]["filename"] == "/secrets/token"
    assert chart.mount("Deployment", "/secrets/token") == ("secret", chart.token_secret, chart.token_key)
    processor = cli._parser().parse_args(chart.container("StatefulSet")["args"])
    assert chart.mount("StatefulSet", processor.auth_token_file) == chart.mount("Deployment", "/secrets/token")
    tls = VARIANTS[variant].get("processor", {}).get("tls", {}).get("existingSecret")
    if tls:
        assert exporter["tls"] == {"ca_file": "/tls/ca.crt", "insecure": False}
        assert chart.mount("Deployment", "/tls/ca.crt") == ("secret", tls, "ca.crt")
        assert {p["httpGet"]["scheme"] for k, p in chart.container("StatefulSet").items()
                if k.endswith("Probe")} == {"HTTPS"}
    else:
        assert exporter["tls"] == {"ca_file": "", "insecure": True}
        assert processor.tls_cert is None


def test_the_generated_token_is_random_and_one_the_processor_takes(render: Any) -> None:
    tokens = {base64.b64decode(render({}).one("Secret")["data"]["token"]).decode() for _ in range(2)}
    assert len(tokens) == 2  # made per install, never a default shipped in the chart
    for token in tokens:
        assert len(token) == 64
        ProcessorConfig(auth_token=token, grpc_endpoint="0.0.0.0:4317", http_endpoint="0.0.0.0:4318").validate()


def test_an_existing_secret_replaces_the_generated_one(render: Any) -> None:
    chart = render(EXISTING_SECRET)
    assert not [o for o in chart.objects if o[0] == "Secret"]
    for workload in ("StatefulSet", "Deployment"):
        assert chart.mount(workload, "/secrets/token") == ("secret", "mlmon-token", "bearer")


POD = f"{RELEASE}-otel-mlmon-processor-0"  # the first replica's pod: its name is the consumer's member id


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_the_rendered_collector_config_validates(render: Any, otelcol: str, otelcol_cloud: str, tmp_path: Path,
                                                 variant: str) -> None:
    """The files of the ConfigMap, with the Deployment's environment, through the Collector's `validate`: the
    core build, or with Kafka the cloud build, which has the Kafka components."""
    chart = render(VARIANTS[variant])
    done = _validate(chart, otelcol_cloud if variant == "everything" else otelcol, tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("variant", ["kafka", "everything"])
def test_the_rendered_kafka_configs_validate(render: Any, otelcol_cloud: str, tmp_path: Path, variant: str) -> None:
    """With Kafka, both Collectors' rendered configs (the application side, and the consumer beside each processor
    replica) pass the cloud build's `validate`; the core build has no Kafka components and refuses them."""
    chart = render(VARIANTS[variant])
    for workload, container in (("Deployment", "collector"), ("StatefulSet", "collector-kafka")):
        done = _validate(chart, otelcol_cloud, tmp_path / container, workload, container)
        assert done.returncode == 0, f"{container}: {done.stderr}"


def test_validate_refuses_the_kafka_configs_on_the_core_build(render: Any, otelcol: str, tmp_path: Path) -> None:
    """The validation above is a real check: the core build does not know the Kafka components."""
    chart = render(KAFKA)
    for workload, container in (("Deployment", "collector"), ("StatefulSet", "collector-kafka")):
        done = _validate(chart, otelcol, tmp_path / container, workload, container)
        assert done.returncode != 0 and 'unknown type: "kafka"' in done.stderr, f"{container}: {done.stderr}"


def _kafka_values(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's kafka values, defaults filled in from values.yaml."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["kafka"]
    found: dict[str, Any] = merge_configs(defaults, values.get("kafka", {}))
    return found


@pytest.mark.parametrize("variant", ["kafka", "everything"])
def test_the_application_collector_writes_to_kafka_as_kafka_pipeline_yaml(render: Any, variant: str) -> None:
    """Drift: with kafka.enabled, the Collector's effective config is the one without Kafka plus
    collector/examples/kafka-pipeline.yaml (the tested settings: groupbyattrs + transform to key by model, OTLP
    protobuf, the on-disk queue), key by key, with only the chart's brokers and topics put in."""
    values = VARIANTS[variant]
    kafka = _kafka_values(values)
    config, environment = render(values).collector_config()
    without, _ = render({**values, "kafka": {"enabled": False}}).collector_config()
    example = resolve_env(yaml.safe_load((REPO / "collector/examples/kafka-pipeline.yaml").read_text()), environment)
    exporter = example["exporters"]["kafka/mlmon"]
    exporter["brokers"] = kafka["brokers"]
    exporter["logs"]["topic"], exporter["metrics"]["topic"] = kafka["topics"]["logs"], kafka["topics"]["metrics"]
    expected = merge_configs(without, example)
    for section in ("extensions", "receivers", "processors", "connectors", "exporters"):
        for name in set(config.get(section, {})) | set(expected.get(section, {})):
            assert config[section].get(name) == expected[section].get(name), f"{section}: {name}"
    for name in set(config["service"]["pipelines"]) | set(expected["service"]["pipelines"]):
        assert config["service"]["pipelines"].get(name) == expected["service"]["pipelines"].get(name), name
    assert config == expected
    # What that means, checked on its own: the ml.* data goes to Kafka only, keyed by model, and nothing in this
    # Collector consumes the topics (each processor replica's own consumer does).
    pipelines = config["service"]["pipelines"]
    for signal in ("metrics", "logs"):
        assert pipelines[f"{signal}/mlmon"]["exporters"] == ["kafka/mlmon"]
        assert pipelines[f"{signal}/mlmon"]["processors"][-2:] == ["groupbyattrs/model", "transform/model-key"]
    assert config["processors"]["groupbyattrs/model"] == {"keys": ["ml.model.name"]}
    assert not [r for r in config["receivers"] if r.startswith("kafka")]
    assert config["exporters"]["kafka/mlmon"]["brokers"] == kafka["brokers"]


@pytest.mark.parametrize("variant", ["kafka", "kafkaReplicas", "everything"])
def test_each_processor_replica_consumes_as_kafka_processor_yaml(render: Any, variant: str) -> None:
    """Drift: the collector-kafka container beside each processor replica runs collector/examples/
    kafka-processor.yaml (a consumer group per topic, range assignment by a static member id, offsets marked only
    after the processor acknowledged, no queue), key by key, with only the chart's brokers, topics, groups and the
    loopback TLS put in; it dials the processor of its own pod with the processor's token."""
    values = VARIANTS[variant]
    kafka = _kafka_values(values)
    chart = render(values)
    assert chart.one("StatefulSet")["spec"]["replicas"] == values.get("processor", {}).get("replicas", 1)
    config, environment = chart.collector_config("StatefulSet", "collector-kafka", pod_name=POD)
    expected = resolve_env(yaml.safe_load((REPO / "collector/examples/kafka-processor.yaml").read_text()),
                           environment)
    for receiver, signal in (("kafka/events", "logs"), ("kafka/sketches", "metrics")):
        expected["receivers"][receiver].update(brokers=kafka["brokers"], group_id=kafka["consumerGroups"][signal])
        expected["receivers"][receiver][signal]["topics"] = [kafka["topics"][signal]]
    tls = values.get("processor", {}).get("tls", {}).get("existingSecret")
    exporter = expected["exporters"]["otlp_grpc/mlmon-processor"]
    if tls:  # the processor's certificate names its Service; the consumer dials 127.0.0.1
        exporter["tls"].update(insecure=False, server_name_override=f"{RELEASE}-otel-mlmon-processor.{NAMESPACE}.svc")
        assert chart.mount("StatefulSet", exporter["tls"]["ca_file"], "collector-kafka") == ("secret", tls, "ca.crt")
    else:
        exporter["tls"]["insecure"] = True
    for section in ("extensions", "receivers", "exporters"):
        for name in set(config[section]) | set(expected[section]):
            assert config[section].get(name) == expected[section].get(name), f"{section}: {name}"
    assert config == expected
    # What that means, checked on its own.
    receivers = config["receivers"]
    assert {receivers[r]["group_id"] for r in receivers} == set(kafka["consumerGroups"].values())
    assert len(set(kafka["consumerGroups"].values())) == 2  # one group per topic
    for receiver in receivers.values():
        assert receiver["group_instance_id"] == POD and receiver["group_rebalance_strategy"] == "range"
        assert receiver["message_marking"]["after"] is True and receiver["message_marking"]["on_error"] is False
    processor_exporter = config["exporters"]["otlp_grpc/mlmon-processor"]
    assert processor_exporter["sending_queue"] == {"enabled": False}
    assert "file_storage/queue" not in config["extensions"]
    args = cli._parser().parse_args(chart.container("StatefulSet")["args"])
    host, port = processor_exporter["endpoint"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) == int(args.grpc_endpoint.rsplit(":", 1)[1])
    assert chart.mount("StatefulSet", config["extensions"]["bearertokenauth/mlmon-processor"]["filename"],
                       "collector-kafka") == chart.mount("StatefulSet", args.auth_token_file)
    # Nothing it holds survives it, nothing needs to: it writes no volume (no emptyDir queue).
    consumer = chart.container("StatefulSet", "collector-kafka")
    assert all(m.get("readOnly") for m in consumer["volumeMounts"]), consumer["volumeMounts"]
    assert consumer["image"] == chart.container("Deployment")["image"]  # the cloud build, as the Collector's
    for name in ("kafka-health", "kafka-telemetry"):
        assert chart.container_port("StatefulSet", name) not in (
            int(args.grpc_endpoint.rsplit(":", 1)[1]), int(args.http_endpoint.rsplit(":", 1)[1]))
    assert consumer["livenessProbe"]["httpGet"]["port"] == "kafka-health"
    health = config["extensions"]["health_check"]["endpoint"]
    assert chart.container_port("StatefulSet", "kafka-health") == int(health.rsplit(":", 1)[1])
    # Its config changes roll the pods.
    annotations = chart.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/kafka-config" in annotations


def test_kafka_replicas_are_bounded_by_the_partitions_and_ports_by_the_pod(render: Any) -> None:
    render({"kafka": {**KAFKA["kafka"], "partitions": 3}, "processor": {"replicas": 3}})
    with pytest.raises(AssertionError, match=r"processor\.replicas is 3 but kafka\.partitions is 2"):
        render({"kafka": {"enabled": True}, "processor": {"replicas": 3}})
    with pytest.raises(AssertionError, match=r"kafka\.consumer\.ports\.health is 4318"):
        render({"kafka": {"enabled": True, "consumer": {"ports": {"health": 4318, "telemetry": 8888}}}})
    with pytest.raises(AssertionError, match="consume"):  # the old wiring's values are gone
        render({"kafka": {"enabled": True, "consume": True}})
    assert "collector-kafka" not in {c["name"] for c in render({}).pod("StatefulSet")["containers"]}


def _validate(chart: Rendered, binary: str, tmp_path: Path, workload: str = "Deployment",
              container: str | None = None) -> subprocess.CompletedProcess[str]:
    """`validate` on a Collector container's ConfigMap files, with its environment; the files its config names (the
    token, the CA) are created under tmp_path, where the pod mounts them."""
    folder = tmp_path / "otelcol"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in chart.config_files(workload, container).items():
        (folder / name).write_text(text)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLMON_", "KAFKA_"))}
    for name, value in chart.environment(workload, container, pod_name=POD).items():
        if value.startswith("/"):
            value = str(tmp_path / value.lstrip("/"))
        environment[name] = value
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "token").write_text("a-token")
    if "MLMON_PROCESSOR_CA_FILE" in environment:
        from otel_mlmon.demo.credentials import write_secrets

        _, certs = write_secrets(tmp_path / "certs", ("localhost",))
        Path(environment["MLMON_PROCESSOR_CA_FILE"]).parent.mkdir(parents=True, exist_ok=True)
        Path(environment["MLMON_PROCESSOR_CA_FILE"]).write_bytes(certs.ca.read_bytes())
    args = [arg.replace("/etc/otelcol/", f"{folder}/") for arg in chart.container(workload, container)["args"]]
    return subprocess.run([binary, "validate", *args], capture_output=True, text=True, timeout=120,
                          env=environment)


def test_prometheus_rule_and_service_monitor(render: Any) -> None:
    assert not [o for o in render({}).objects if o[0] in ("PrometheusRule", "ServiceMonitor")]
    chart = render({**PROMETHEUS_RULE, **SERVICE_MONITOR})
    rule = chart.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The rules as promtool tests them, annotations' {{ $labels }} templates left for Prometheus.
    assert rule["spec"]["groups"] == yaml.safe_load((REPO / "collector/prometheus/rules.yml").read_text())["groups"]
    assert "{{ $labels.ml_model_name }}" in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    monitor = chart.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [name for (kind, name), service in chart.objects.items() if kind == "Service" and all(
        service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
    assert selected == [chart.one("Service", "collector")["metadata"]["name"]]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # What collector/prometheus/prometheus.yml scrapes: the exporter (honor_labels) and the Collector's telemetry.
    scrape = yaml.safe_load((REPO / "collector/prometheus/prometheus.yml").read_text())["scrape_configs"]
    ports = {"collector:" + str(chart.service_port(selected[0], e["port"])): e for e in monitor["spec"]["endpoints"]}
    for job in scrape:
        (target,) = job["static_configs"][0]["targets"]
        assert ports[target].get("honorLabels", False) == job.get("honor_labels", False), target


def test_the_store_is_on_the_volume_and_resources_are_requested(render: Any) -> None:
    chart = render(EVERYTHING)
    statefulset = chart.one("StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    args = cli._parser().parse_args(chart.container("StatefulSet")["args"])
    assert chart.mount("StatefulSet", args.store) == ("volumeClaimTemplate", "state", "processor.db")
    resources = chart.container("StatefulSet")["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    values = (CHART / "values.yaml").read_text()
    # The measured figures (benchmarks/README.md), cited: the soak's peak RSS under the request, the loaded peak
    # under the limit, and twice the soak's 55 s SIGTERM-to-exit as the grace period.
    for figure in ("peak RSS 358 MiB", "748 MiB", "91 %", "447 MiB", "50-55 s"):
        assert figure in values, figure
    assert chart.one("StatefulSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 2 * 55
    assert "limits" in chart.container("Deployment")["resources"]  # memory_limiter needs a limit to take 80 % of
    ephemeral = render({"processor": {"persistence": {"enabled": False}}})
    assert "volumeClaimTemplates" not in ephemeral.one("StatefulSet")["spec"]
    assert ephemeral.mount("StatefulSet", args.store) == ("emptyDir", "state", "processor.db")
