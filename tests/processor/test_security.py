"""Who may talk to the processor: the bearer token on OTLP/HTTP, OTLP/gRPC and the control API (not the probes),
TLS and mTLS on both listeners, loopback-only without authentication, and the real `mlmon processor serve`
started with a token and TLS. Certificates are made for each run with the openssl command."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from otel_mlmon import semconv
from otel_mlmon.demo.credentials import Certificates, make_certificates
from otel_mlmon.processor import grpc_receiver
from otel_mlmon.processor.config import ENV_PREFIX, ProcessorConfig, load
from otel_mlmon.processor.security import Security, Tls, read_token
from otel_mlmon.processor.server import serve
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.conftest import eventually, free_port

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token-0123456789abcdef"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF = "application/x-protobuf"


def _predictions(*ids: str) -> bytes:
    """An OTLP logs request with one ml.predictions event of a regression model."""
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = semconv.EVENT_PREDICTIONS
    record.time_unix_nano = time.time_ns()
    for key, value in ((semconv.ML_MODEL_NAME, AnyValue(string_value="m")),
                       (semconv.ML_MODEL_VERSION, AnyValue(string_value="1")),
                       (semconv.ML_PREDICTION_ID, AnyValue(array_value=ArrayValue(
                           values=[AnyValue(string_value=i) for i in ids]))),
                       (semconv.ML_PREDICTION_VALUE, AnyValue(array_value=ArrayValue(
                           values=[AnyValue(double_value=float(n)) for n, _ in enumerate(ids)])))):
        record.attributes.append(KeyValue(key=key, value=value))
    return request.SerializeToString()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates of another CA: its client certificate must not pass the processor's mTLS."""
    return make_certificates(tmp_path_factory.mktemp("stranger"))


@dataclass
class Running:
    processor: Processor
    url: str
    grpc_target: str

    def stored(self) -> int:
        return int(self.processor.counters().get("predictions", 0))


def _client_context(certs: Certificates | None, client: Certificates | None = None) -> ssl.SSLContext | None:
    if certs is None:
        return None
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client is not None:
        context.load_cert_chain(str(client.client_cert), str(client.client_key))
    return context


def _http(url: str, path: str, body: bytes | None = None, token: str | None = None, scheme: str = "Bearer",
          context: ssl.SSLContext | None = None, content_type: str = PROTOBUF) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def _grpc(target: str, body: bytes, token: str | None = None, certs: Certificates | None = None,
          client: Certificates | None = None) -> grpc.StatusCode:
    if certs is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), client.client_key.read_bytes() if client else None,
            client.client_cert.read_bytes() if client else None))
    with channel:
        export = channel.unary_unary(LOGS_EXPORT, request_serializer=None,
                                     response_deserializer=ExportLogsServiceResponse.FromString)
        try:
            export(body, timeout=10, metadata=[("authorization", f"Bearer {token}")] if token else None)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Starts processors (HTTP listener and gRPC) with the given security; stops them after the test."""
    stops: list[Any] = []

    def started(security: Security, context: ssl.SSLContext | None = None) -> Running:
        processor = Processor(Store(str(tmp_path / f"p{len(stops)}.db")))
        grpc_server, grpc_port = grpc_receiver.start(
            processor, "127.0.0.1:0", credentials=security.tls.grpc if security.tls else None,
            interceptors=security.grpc_interceptors())
        port = free_port()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(target=loop.run_until_complete, daemon=True,
                                  args=(serve(processor, "127.0.0.1", port, 0.1, stop, security=security),))
        thread.start()

        def close() -> None:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            grpc_server.stop(grace=None)

        stops.append(close)
        url = f"{'https' if security.tls else 'http'}://127.0.0.1:{port}"
        eventually(lambda: _http(url, "/healthz", context=context)[0] == 200, 10, "the processor's /healthz",
                   interval_s=0.05)
        return Running(processor, url, f"127.0.0.1:{grpc_port}")

    yield started
    for close in stops:
        close()


def _security(token: str | None, certs: Certificates | None = None, mtls: bool = False) -> Security:
    tls = Tls.load(str(certs.server_cert), str(certs.server_key), str(certs.ca) if mtls else None) if certs else None
    return Security(token, tls)


# --- the token --------------------------------------------------------------------------------------------
def test_a_token_guards_otlp_http_and_the_api_but_not_the_probes(start: Any) -> None:
    running = start(_security(TOKEN))
    url = running.url
    for token, scheme, challenge in ((None, "Bearer", 'Bearer realm="otel-mlmon"'),
                                     ("wrong-token", "Bearer", 'Bearer realm="otel-mlmon", error="invalid_token"'),
                                     (TOKEN[:-1], "Bearer", 'Bearer realm="otel-mlmon", error="invalid_token"'),
                                     (TOKEN, "Basic", 'Bearer realm="otel-mlmon", error="invalid_token"')):
        status, body, headers = _http(url, "/v1/logs", _predictions("a"), token, scheme)
        assert (status, headers["WWW-Authenticate"]) == (401, challenge)
        assert status_pb2.Status.FromString(body).code == 16  # UNAUTHENTICATED, as OTLP/HTTP clients read it
    status, body, _ = _http(url, "/v1/logs", b"{}", None, content_type="application/json")
    assert status == 401 and json.loads(body)["code"] == 16
    assert _http(url, "/v1/metrics", b"", None)[0] == 401 and _http(url, "/v1/traces", b"", None)[0] == 401
    assert running.stored() == 0
    status, _, _ = _http(url, "/v1/logs", _predictions("a", "b"), TOKEN)
    assert status == 200 and running.stored() == 2

    # The control API: reading results and registering references need the token too.
    assert _http(url, "/v1/results", None, None)[0] == 401
    assert _http(url, "/v1/references", b'{"model": "x"}', None, content_type="application/json")[0] == 401
    assert _http(url, "/v1/references", b'{"model": "x"}', "nope", content_type="application/json")[0] == 401
    assert running.processor.monitored == {}
    status, body, _ = _http(url, "/v1/results", None, TOKEN)
    assert status == 200 and "results" in json.loads(body)
    # The probes stay open (they show counts, never data).
    assert _http(url, "/healthz", None, None)[0] == 200 and _http(url, "/readyz", None, None)[0] == 200


def test_a_token_guards_otlp_grpc(start: Any) -> None:
    running = start(_security(TOKEN))
    assert _grpc(running.grpc_target, _predictions("a")) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc(running.grpc_target, _predictions("a"), "wrong") == grpc.StatusCode.UNAUTHENTICATED
    assert running.stored() == 0
    assert _grpc(running.grpc_target, _predictions("a", "b", "c"), TOKEN) == grpc.StatusCode.OK
    assert running.stored() == 3


# --- TLS --------------------------------------------------------------------------------------------------
def test_tls_on_both_listeners(start: Any, certs: Certificates) -> None:
    running = start(_security(TOKEN, certs), _client_context(certs))
    assert running.url.startswith("https://")
    trusted = _client_context(certs)
    assert _http(running.url, "/v1/logs", _predictions("a"), TOKEN, context=trusted)[0] == 200
    assert _http(running.url, "/v1/logs", _predictions("b"), None, context=trusted)[0] == 401  # TLS is not auth
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a client not trusting the CA
        _http(running.url, "/healthz", context=ssl.create_default_context())
    with pytest.raises((OSError, http.client.HTTPException)):  # plaintext to the TLS port
        _http(running.url.replace("https://", "http://"), "/v1/logs", _predictions("c"), TOKEN)
    assert _grpc(running.grpc_target, _predictions("d"), TOKEN, certs) == grpc.StatusCode.OK
    assert _grpc(running.grpc_target, _predictions("e"), TOKEN) == grpc.StatusCode.UNAVAILABLE  # plaintext
    assert running.stored() == 2


def test_mtls_requires_a_client_certificate_of_the_configured_ca(start: Any, certs: Certificates,
                                                                 stranger: Certificates) -> None:
    running = start(_security(TOKEN, certs, mtls=True), _client_context(certs, client=certs))
    mine = _client_context(certs, client=certs)
    assert _http(running.url, "/v1/logs", _predictions("a"), TOKEN, context=mine)[0] == 200
    for context in (_client_context(certs), _client_context(certs, client=stranger)):
        with pytest.raises((OSError, http.client.HTTPException)):  # refused in the handshake
            _http(running.url, "/v1/logs", _predictions("b"), TOKEN, context=context)
    assert _grpc(running.grpc_target, _predictions("c"), TOKEN, certs, client=certs) == grpc.StatusCode.OK
    assert _grpc(running.grpc_target, _predictions("d"), TOKEN, certs) == grpc.StatusCode.UNAVAILABLE
    assert _grpc(running.grpc_target, _predictions("e"), TOKEN, certs, client=stranger) == \
        grpc.StatusCode.UNAVAILABLE
    assert running.stored() == 2


def test_bad_tls_files_refuse_startup_naming_the_setting(certs: Certificates, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"setting tls_cert: .*nowhere\.pem' does not exist"):
        Tls.load(str(tmp_path / "nowhere.pem"), str(certs.server_key))
    with pytest.raises(ValueError, match="settings tls_cert and tls_key"):  # the client's key, not the server's
        Tls.load(str(certs.server_cert), str(certs.client_key))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="settings tls_cert and tls_key"):
        Tls.load(str(tmp_path / "junk.pem"), str(certs.server_key))
    with pytest.raises(ValueError, match="setting tls_client_ca"):
        Tls.load(str(certs.server_cert), str(certs.server_key), str(tmp_path / "junk.pem"))


def test_the_token_file_is_read_stripped_and_must_hold_a_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(ProcessorConfig(auth_token_file=str(path))) == TOKEN
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"auth_token_file: .*token' is empty"):
        read_token(ProcessorConfig(auth_token_file=str(path)))
    with pytest.raises(ValueError, match=r"auth_token_file: .*missing' does not exist"):
        read_token(ProcessorConfig(auth_token_file=str(tmp_path / "missing")))
    path.write_text("two words\n")
    with pytest.raises(ValueError, match="one token"):
        read_token(ProcessorConfig(auth_token_file=str(path)))


# --- the real command -------------------------------------------------------------------------------------
def _mlmon(*argv: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", ENV_PREFIX))}
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", *argv], env={**environment, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_mlmon_processor_serve_with_a_token_and_tls(certs: Certificates, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    http_port, grpc_port = free_port(), free_port()
    process = _mlmon("processor", "serve", "--http-endpoint", f"127.0.0.1:{http_port}",
                     "--grpc-endpoint", f"127.0.0.1:{grpc_port}", "--store", str(tmp_path / "p.db"),
                     "--auth-token-file", str(token_file), "--tls-cert", str(certs.server_cert),
                     "--tls-key", str(certs.server_key))
    url, trusted = f"https://127.0.0.1:{http_port}", _client_context(certs)
    try:
        eventually(lambda: _http(url, "/healthz", context=trusted)[0] == 200, 30, "the processor's /healthz",
                   interval_s=0.1)
        assert _http(url, "/v1/logs", _predictions("a"), None, context=trusted)[0] == 401
        assert _http(url, "/v1/logs", _predictions("a", "b"), TOKEN, context=trusted)[0] == 200
        with pytest.raises((OSError, http.client.HTTPException)):
            _http(url.replace("https", "http"), "/v1/logs", _predictions("c"), TOKEN)
        target = f"127.0.0.1:{grpc_port}"
        assert _grpc(target, _predictions("d"), None, certs) == grpc.StatusCode.UNAUTHENTICATED
        assert _grpc(target, _predictions("e"), TOKEN) == grpc.StatusCode.UNAVAILABLE  # no TLS
        assert _grpc(target, _predictions("f"), TOKEN, certs) == grpc.StatusCode.OK
        counters = json.loads(_http(url, "/healthz", context=trusted)[1])
        assert counters["predictions"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "bearer token required; TLS on both listeners" in stderr


def test_without_a_token_the_processor_binds_loopback_only_and_says_so(tmp_path: Path) -> None:
    refused = _mlmon("processor", "serve", "--http-endpoint", f"0.0.0.0:{free_port()}", "--store",
                     str(tmp_path / "p.db"))
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert "setting http_endpoint: '0.0.0.0:" in stderr and "set a token" in stderr
    assert not (tmp_path / "p.db").exists()  # refused before anything was opened

    missing = _mlmon("processor", "serve", "--http-endpoint", f"0.0.0.0:{free_port()}", "--store",
                     str(tmp_path / "p.db"), env={ENV_PREFIX + "AUTH_TOKEN_FILE": str(tmp_path / "no-such-file")})
    _, stderr = missing.communicate(timeout=60)
    assert missing.returncode == 2 and "setting auth_token_file: " in stderr and "does not exist" in stderr

    http_port = free_port()
    process = _mlmon("processor", "serve", "--http-endpoint", f"127.0.0.1:{http_port}",
                     "--grpc-endpoint", f"127.0.0.1:{free_port()}", "--store", str(tmp_path / "p.db"))
    try:
        eventually(lambda: _http(f"http://127.0.0.1:{http_port}", "/healthz")[0] == 200, 30,
                   "the processor's /healthz", interval_s=0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    access = [json.loads(line)["message"] for line in stderr.splitlines() if '"access: ' in line]
    assert len(access) == 1 and "UNAUTHENTICATED" in access[0] and "bound to loopback only" in access[0]


# --- the settings -----------------------------------------------------------------------------------------
def test_the_token_settings_follow_the_precedence_of_their_sources(tmp_path: Path) -> None:
    config_file = tmp_path / "processor.yaml"
    config_file.write_text("auth_token: from-the-file\n")
    assert load({}, {}, str(config_file)).auth_token == "from-the-file"
    environ = {ENV_PREFIX + "AUTH_TOKEN": "from-the-environment"}
    assert load({}, environ, str(config_file)).auth_token == "from-the-environment"
    flagged = load({"auth_token_file": "/run/secrets/token"}, environ, str(config_file))
    assert (flagged.auth_token, flagged.auth_token_file) == (None, "/run/secrets/token")  # the flag wins
    with pytest.raises(ValueError, match="auth_token and auth_token_file: give one of them"):
        load({}, {ENV_PREFIX + "AUTH_TOKEN": "a", ENV_PREFIX + "AUTH_TOKEN_FILE": "/f"})
    assert "from-the-environment" not in repr(load({}, environ))  # never in a log line


@pytest.mark.parametrize(("flags", "message"), [
    ({"http_endpoint": "0.0.0.0:4318"}, "setting http_endpoint: '0.0.0.0:4318' is reachable from other machines"),
    ({"grpc_endpoint": "[::]:4317"}, "setting grpc_endpoint"),
    ({"grpc_endpoint": "processor.internal:4317"}, "set a token (--auth-token-file FILE"),
    ({"auth_token": "two words"}, "printable ASCII without spaces"),
    ({"auth_token": " "}, "the token is empty"),
    ({"tls_cert": "server.pem"}, "TLS needs both the certificate and its private key"),
    ({"tls_client_ca": "ca.pem"}, "setting tls_client_ca: client certificates are checked over TLS"),
])
def test_unsafe_or_incomplete_security_settings_refuse_to_start(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        load(flags, {})
    assert message in str(raised.value)


@pytest.mark.parametrize("flags", [
    {"http_endpoint": "127.0.0.1:4318", "grpc_endpoint": "localhost:4317"},
    {"http_endpoint": "[::1]:4318"},
    {"http_endpoint": "0.0.0.0:4318", "auth_token": TOKEN},
    {"http_endpoint": "0.0.0.0:4318", "auth_token_file": "/run/secrets/token"},
    {"http_endpoint": "0.0.0.0:4318", "tls_cert": "s.pem", "tls_key": "k.pem", "tls_client_ca": "ca.pem"},
    {"http_endpoint": "0.0.0.0:4318", "allow_unauthenticated": True},
])
def test_loopback_or_authenticated_or_explicitly_unauthenticated_settings_start(flags: dict[str, Any]) -> None:
    load(flags, {})
