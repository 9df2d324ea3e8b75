"""The processor's settings: command-line flags > ``OTEL_PYTHON_MLMON_PROCESSOR_*`` > YAML file > defaults.

A plain frozen object with ``validate()``; the defaults live here only. An invalid setting — from any source —
refuses startup with a message that names the setting and its source.

Security settings: ``auth_token`` or ``auth_token_file`` (one token, from whichever source ranks higher; both from
the same source is an error), ``tls_cert`` + ``tls_key`` (TLS on both listeners), ``tls_client_ca`` (mTLS: client
certificates signed by this CA are required). Without a token nor client certificates the processor only binds
loopback addresses, unless ``allow_unauthenticated`` says that something in front of it (a service mesh, a network
policy) authenticates instead.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ENV_PREFIX = "OTEL_PYTHON_MLMON_PROCESSOR_"
# Sequential change detection on the label stream: the engine's detectors (engine.sequential.DETECTORS), or off.
SEQUENTIAL_DETECTORS = ("adwin", "page_hinkley", "off")
# The processor's own log lines at and above this level (the standard logging levels, case-insensitive).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class ProcessorConfig:
    grpc_endpoint: str = "127.0.0.1:4317"
    http_endpoint: str = "127.0.0.1:4318"
    store: str = "mlmon-processor.db"
    references: tuple[str, ...] = field(default_factory=tuple)
    alertmanager: str | None = None
    webhook: str | None = None
    tensorboard_dir: str | None = None
    require_reference: bool = False
    max_body_bytes: int = 16 * 1024 * 1024
    max_grpc_message_bytes: int = 4 * 1024 * 1024
    label_ttl_s: float = 7 * 86400.0
    orphan_ttl_s: float = 86400.0
    max_pending: int = 10_000_000
    max_orphans: int = 1_000_000
    tick_s: float = 1.0
    bootstrap_windows: int = 10
    bootstrap_window_rows: int = 1000
    allowed_lateness_s: float = 30.0
    max_lateness_s: float = 3600.0
    idle_timeout_s: float = 120.0
    sketch_window_s: float = 3600.0
    max_future_s: float = 300.0
    retention_s: float = 3600.0
    # A window already evaluated is evaluated again for late data at most once per this (or 10x its evaluation);
    # ``Processor`` itself revises at every tick unless told (revision_interval_s=0), as its tests of revisions expect.
    revision_interval_s: float = 30.0
    max_models: int = 10_000
    max_features: int = 10_000
    auth_token: str | None = field(default=None, repr=False)
    auth_token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    allow_unauthenticated: bool = False
    sequential_detector: str = "adwin"
    log_level: str = "info"

    @property
    def authenticated(self) -> bool:
        """Clients must prove who they are: a bearer token, or a client certificate (mTLS)."""
        return bool(self.auth_token or self.auth_token_file or self.tls_client_ca)

    def validate(self) -> ProcessorConfig:
        for name in ("grpc_endpoint", "http_endpoint"):
            host, _, port = getattr(self, name).rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"setting {name}: {getattr(self, name)!r} is not HOST:PORT")
        if not self.store:
            raise ValueError("setting store: a file path is needed")
        if self.bootstrap_windows < 0:
            raise ValueError(f"setting bootstrap_windows: must be 0 (off) or more, got {self.bootstrap_windows}")
        for name in ("max_body_bytes", "max_grpc_message_bytes", "max_pending", "max_orphans",
                     "bootstrap_window_rows", "max_models", "max_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name}: must be a positive number, got {getattr(self, name)}")
        for name in ("label_ttl_s", "orphan_ttl_s", "tick_s", "max_lateness_s", "idle_timeout_s", "max_future_s"):
            if not 0 < getattr(self, name) < 10 * 366 * 86400:
                raise ValueError(f"setting {name}: must be positive seconds (under ten years), got "
                                 f"{getattr(self, name)}")
        for name in ("allowed_lateness_s", "retention_s", "revision_interval_s"):
            if not 0 <= getattr(self, name) < 10 * 366 * 86400:
                raise ValueError(f"setting {name}: must be 0 or more seconds (under ten years), got "
                                 f"{getattr(self, name)}")
        if self.allowed_lateness_s > self.max_lateness_s:
            raise ValueError(f"setting allowed_lateness_s ({self.allowed_lateness_s}) cannot exceed max_lateness_s "
                             f"({self.max_lateness_s}): a window must close before its rows stop being taken")
        if not 1 <= self.sketch_window_s <= 366 * 86400:
            raise ValueError(f"setting sketch_window_s: must be between 1 s and 366 days, got {self.sketch_window_s}")
        if self.sequential_detector not in SEQUENTIAL_DETECTORS:
            raise ValueError(f"setting sequential_detector: {self.sequential_detector!r} is not one of "
                             f"{', '.join(SEQUENTIAL_DETECTORS)}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"setting log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        for name in ("alertmanager", "webhook"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"setting {name}: {url!r} is not an http(s) URL")
        self._validate_security()
        return self

    def _validate_security(self) -> None:
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("settings auth_token and auth_token_file: give one of them, not both")
        if self.auth_token is not None:
            if not self.auth_token.strip():
                raise ValueError("setting auth_token: the token is empty; set a secret of 16 or more characters")
            if not all(33 <= ord(c) <= 126 for c in self.auth_token):
                raise ValueError("setting auth_token: a token is printable ASCII without spaces (it travels in an "
                                 "HTTP header and gRPC metadata); e.g. `openssl rand -hex 32`")
        for name in ("auth_token_file", "tls_cert", "tls_key", "tls_client_ca"):
            if getattr(self, name) == "":
                raise ValueError(f"setting {name}: a file path is needed (or leave it unset)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("settings tls_cert and tls_key: TLS needs both the certificate and its private key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("setting tls_client_ca: client certificates are checked over TLS; set tls_cert and "
                             "tls_key too")
        if self.authenticated or self.allow_unauthenticated:
            return
        for name in ("grpc_endpoint", "http_endpoint"):
            host = getattr(self, name).rpartition(":")[0]
            if not is_loopback(host):
                raise ValueError(
                    f"setting {name}: {getattr(self, name)!r} is reachable from other machines, and no "
                    f"authentication is set: set a token (--auth-token-file FILE, or {ENV_PREFIX}AUTH_TOKEN), or "
                    "client certificates (--tls-client-ca), or bind 127.0.0.1; --allow-unauthenticated only if "
                    "something in front of the processor authenticates its clients")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (of HOST:PORT) only binds loopback addresses: ``localhost``, 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _convert(name: str, raw: Any, source: str) -> Any:
    kind = {f.name: f.type for f in fields(ProcessorConfig)}[name]
    try:
        if name == "references":
            if isinstance(raw, str):
                return tuple(p for p in raw.split(",") if p)
            if isinstance(raw, (list, tuple)) and all(isinstance(p, str) for p in raw):
                return tuple(raw)
            raise ValueError("a list of profile paths")
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return str(raw).lower() in ("true", "1", "yes", "on")
            raise ValueError("true or false")
        if kind in ("int",):
            if isinstance(raw, bool):
                raise ValueError("a whole number")
            return int(raw)
        if kind in ("float",):
            return float(raw)
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name} from {source}: {raw!r} is not {kind} ({exc})") from None


def load(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
         yaml_path: str | None = None) -> ProcessorConfig:
    """The configuration, each setting from the first source that has it; validated."""
    environ = os.environ if environ is None else environ
    names = [f.name for f in fields(ProcessorConfig)]
    values: dict[str, Any] = {}
    if yaml_path:
        import yaml

        try:
            with open(yaml_path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ValueError(f"config file {yaml_path!r} does not exist") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config file {yaml_path!r} is not readable YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ValueError(f"config file {yaml_path!r} must be a mapping of settings")
        unknown = sorted(set(document) - set(names))
        if unknown:
            raise ValueError(f"config file {yaml_path!r}: unknown setting(s) {', '.join(unknown)} "
                             f"(settings: {', '.join(names)})")
        values.update({k: _convert(k, v, yaml_path) for k, v in document.items()})
    rank = dict.fromkeys(values, 1)  # which source each setting came from: 1 file, 2 environment, 3 flags
    for name in names:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw.strip():
            values[name] = _convert(name, raw.strip(), ENV_PREFIX + name.upper())
            rank[name] = 2
    for name, raw in (flags or {}).items():
        if raw is not None and raw != () and raw != [] and raw is not False:
            values[name] = _convert(name, raw, "the command line")
            rank[name] = 3
    # The token and the token file are one setting: the higher source wins (--auth-token-file over the variable
    # OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN); both from the same source is refused by validate().
    if "auth_token" in values and "auth_token_file" in values and rank["auth_token"] != rank["auth_token_file"]:
        del values["auth_token" if rank["auth_token"] < rank["auth_token_file"] else "auth_token_file"]
    return replace(ProcessorConfig(), **values).validate()
