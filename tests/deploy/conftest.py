"""helm built from its Go module (scripts/build-helm.sh), the otel-mlmon Collector builds (collector/build.sh), and
`helm template` of the chart read back as objects. `make test` builds both (scripts/system-deps.sh); as in
tests/stack, a build that fails fails the test with its output, it is never skipped."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "otel-mlmon"
RELEASE = "mlmon"
NAMESPACE = "monitoring"
MAIN_CONTAINER = {"StatefulSet": "processor", "Deployment": "collector"}


def _build(script: Path, *flags: str) -> str:
    try:
        done = subprocess.run([str(script), *flags], capture_output=True, text=True, timeout=1800, check=True)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{script.relative_to(REPO)} {' '.join(flags)} failed:\n{exc.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def helm() -> str:
    """helm v3 from its Go module (cached: instant after the first build)."""
    return _build(REPO / "scripts" / "build-helm.sh")


@pytest.fixture(scope="session")
def otelcol() -> str:
    """The Collector of collector/builder-config.yaml: the image the chart runs by default."""
    return _build(REPO / "collector" / "build.sh")


@pytest.fixture(scope="session")
def otelcol_cloud() -> str:
    """The Collector of collector/builder-config-cloud.yaml: the one with the Kafka components."""
    return _build(REPO / "collector" / "build.sh", "--cloud")


@pytest.fixture
def render(helm: str) -> Callable[[dict[str, Any]], Rendered]:
    """`helm template` of the chart with these values; a refusal raises AssertionError with helm's message."""
    def rendered(values: dict[str, Any]) -> Rendered:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            yaml.safe_dump(values, file)
            file.flush()
            done = subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", file.name],
                                  capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(done.stderr)
        return Rendered(done.stdout, values)

    return rendered


def merge_configs(base: Any, overlay: Any) -> Any:
    """The Collector's merge of --config files: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{k: merge_configs(base[k], v) if k in base else v for k, v in overlay.items()}}
    return overlay


class Rendered:
    """The objects of one `helm template` run, with the look-ups the tests need."""

    def __init__(self, text: str, values: dict[str, Any]) -> None:
        self.values = values
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        for document in yaml.safe_load_all(text):
            if document:
                key = (document["kind"], document["metadata"]["name"])
                assert key not in self.objects, f"{key} rendered twice"
                self.objects[key] = document
                assert document["metadata"].get("namespace") in (None, NAMESPACE)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.objects, f"no {kind} {name} in {sorted(self.objects)}"
        return self.objects[(kind, name)]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [o for (k, _), o in self.objects.items() if k == kind and (
            component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)]
        assert len(found) == 1, f"{len(found)} {kind} objects of component {component}"
        return found[0]

    @property
    def token_secret(self) -> str:
        existing = self.values.get("auth", {}).get("existingSecret")
        return str(existing) if existing else str(self.one("Secret")["metadata"]["name"])

    @property
    def token_key(self) -> str:
        return str(self.values.get("auth", {}).get("existingSecretKey", "token"))

    def pod(self, workload: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.one(workload)["spec"]["template"]["spec"]
        return spec

    def container(self, workload: str, name: str | None = None) -> dict[str, Any]:
        """A container of the workload's pod: by name, or the workload's own (the processor, the Collector)."""
        name = name or MAIN_CONTAINER[workload]
        found = [c for c in self.pod(workload)["containers"] if c["name"] == name]
        assert len(found) == 1, f"{len(found)} containers named {name} in the {workload}"
        return dict(found[0])

    def environment(self, workload: str, container: str | None = None, pod_name: str | None = None
                    ) -> dict[str, str]:
        """A container's environment: its values, and its pod's name where a variable takes metadata.name."""
        environment = {}
        for variable in self.container(workload, container).get("env", []):
            if "value" in variable:
                environment[variable["name"]] = variable["value"]
            elif pod_name and variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                environment[variable["name"]] = pod_name
        return environment

    def container_port(self, workload: str, name: str) -> int:
        """A named port of the workload's pod (names are unique across its containers)."""
        (port,) = [p["containerPort"] for c in self.pod(workload)["containers"] for p in c.get("ports", [])
                   if p["name"] == name]
        return int(port)

    def mount(self, workload: str, path: str, container: str | None = None) -> tuple[str, str, str]:
        """Where a file the container reads comes from: (volume kind, its source's name, the key or file in it)."""
        mounts = [m for m in self.container(workload, container)["volumeMounts"]
                  if path.startswith(m["mountPath"] + "/")]
        assert len(mounts) == 1, f"{path} is under {len(mounts)} mounts of the {workload}"
        mount = mounts[0]
        relative = path[len(mount["mountPath"]) + 1:]
        volumes = [v for v in self.pod(workload).get("volumes", []) if v["name"] == mount["name"]]
        if not volumes:
            claims = [c for c in self.one(workload)["spec"].get("volumeClaimTemplates", [])
                      if c["metadata"]["name"] == mount["name"]]
            assert claims, f"{workload} mounts {mount['name']}, which is neither a volume nor a claim template"
            return "volumeClaimTemplate", mount["name"], relative
        (volume,) = volumes
        for kind, name_field in (("configMap", "name"), ("secret", "secretName")):
            if kind in volume:
                items = {i["path"]: i["key"] for i in volume[kind].get("items", [])}
                assert not items or relative in items, f"{path}: {volume[kind][name_field]} has no item {relative}"
                return kind, volume[kind][name_field], items.get(relative, relative)
        if "emptyDir" in volume:
            return "emptyDir", mount["name"], relative
        if "persistentVolumeClaim" in volume:
            return "persistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], relative
        raise AssertionError(f"{workload}: volume {volume} of an unexpected kind")

    def service_port(self, service: str, name: str) -> int:
        (port,) = [p["port"] for p in self.get("Service", service)["spec"]["ports"] if p["name"] == name]
        return int(port)

    def service_target(self, kind: str, service: str, port: str | int) -> tuple[str, int]:
        """The workload and container port behind a Service's port (given by name or number)."""
        spec = self.get(kind, service)["spec"]
        (entry,) = [p for p in spec["ports"] if p["name" if isinstance(port, str) else "port"] == port]
        selected = [workload for (workload, _), o in self.objects.items() if workload in ("StatefulSet", "Deployment")
                    and all(o["spec"]["template"]["metadata"]["labels"].get(k) == v
                            for k, v in spec["selector"].items())]
        assert len(selected) == 1, f"Service {service} selects {selected}"
        target = entry.get("targetPort", entry["port"])
        return selected[0], self.container_port(selected[0], target) if isinstance(target, str) else int(target)

    def collector_config(self, workload: str = "Deployment", container: str | None = None,
                         pod_name: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """A Collector's effective config: the files of its ConfigMap (the one mounted at /etc/otelcol) merged in
        the order of --config, with the container's environment in place of each ${env:NAME:-default}."""
        environment = self.environment(workload, container, pod_name)
        data = self.config_files(workload, container)
        merged: dict[str, Any] = {}
        for arg in self.container(workload, container)["args"]:
            name = arg.removeprefix("--config=/etc/otelcol/")
            merged = merge_configs(merged, yaml.safe_load(data[name]))
        return resolve_env(merged, environment), environment

    def config_files(self, workload: str = "Deployment", container: str | None = None) -> dict[str, str]:
        """The files of the ConfigMap a Collector container mounts at /etc/otelcol."""
        kind, name, _ = self.mount(workload, "/etc/otelcol/config.yaml", container)
        assert kind == "configMap", kind
        files: dict[str, str] = self.get("ConfigMap", name)["data"]
        return files


def resolve_env(config: Any, environment: dict[str, str]) -> Any:
    """The Collector's ${env:NAME:-default} substitution, with these variables."""
    def resolve(found: re.Match[str]) -> str:
        return environment.get(found.group(1), found.group(2) or "")

    return json.loads(re.sub(r"\$\{env:([A-Za-z0-9_]+)(?::-([^}]*))?\}", resolve, json.dumps(config)))
