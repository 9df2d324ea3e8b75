"""Who may talk to the processor: the bearer token on both listeners, and their TLS.

One token guards OTLP/HTTP (``Authorization: Bearer <token>``), OTLP/gRPC (``authorization`` metadata) and the
control API; ``/healthz`` and ``/readyz`` stay open for probes. Tokens are compared in constant time. Refusals:
HTTP 401 with ``WWW-Authenticate: Bearer`` (OTLP paths carry a ``google.rpc.Status`` body, code UNAUTHENTICATED),
gRPC UNAUTHENTICATED. TLS files are loaded once at start; a missing or unreadable file, or a key that does not
match its certificate, refuses startup with a message naming the setting.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.rpc import status_pb2

from otel_mlmon.processor.config import ENV_PREFIX, ProcessorConfig, is_loopback

_logger = logging.getLogger("otel_mlmon.processor")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes: no token (they show counts, never data)
OTLP_PATHS = frozenset({"/v1/logs", "/v1/metrics", "/v1/traces"})
UNAUTHENTICATED = 16  # google.rpc.Code
REALM = 'Bearer realm="otel-mlmon"'


def read_token(config: ProcessorConfig) -> str | None:
    """The bearer token of the configuration, read from ``auth_token_file`` when that is how it was given.

    Raises:
        ValueError: the token file is missing, unreadable, empty, or holds more than one token.
    """
    if config.auth_token is not None:
        return config.auth_token
    path = config.auth_token_file
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ValueError(f"setting auth_token_file: {path!r} does not exist; write the token there (e.g. "
                         f"`openssl rand -hex 32 > {path}`) or point the setting at the right file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"setting auth_token_file: cannot read {path!r}: {exc}") from None
    token = text.strip()
    if not token:
        raise ValueError(f"setting auth_token_file: {path!r} is empty; write the token there (e.g. "
                         f"`openssl rand -hex 32 > {path}`)")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ValueError(f"setting auth_token_file: {path!r} must hold one token of printable ASCII characters "
                         "without spaces (one line)")
    return token


def matches(presented: str | None, token: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>`` (constant time in the token's content)."""
    if presented is None:
        return False
    scheme, _, value = presented.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode())


def _refusal(request: web.Request, presented: bool) -> web.Response:
    message = ("the bearer token is wrong" if presented else
               "authentication required: send the header `Authorization: Bearer <token>`")
    challenge = REALM + (', error="invalid_token"' if presented else "")
    headers = {"WWW-Authenticate": challenge}
    if request.path in OTLP_PATHS:
        if request.content_type == "application/json":
            return web.Response(status=401, text=json.dumps({"code": UNAUTHENTICATED, "message": message}),
                                content_type="application/json", headers=headers)
        body = status_pb2.Status(code=UNAUTHENTICATED, message=message).SerializeToString()
        return web.Response(status=401, body=body, content_type="application/x-protobuf", headers=headers)
    return web.json_response({"error": message}, status=401, headers=headers)


def auth_middleware(token: str) -> Any:
    """An aiohttp middleware that answers 401 to requests without ``Authorization: Bearer <token>``."""

    @web.middleware
    async def authenticate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        presented = request.headers.get("Authorization")
        if not matches(presented, token):
            return _refusal(request, presented is not None)
        return await handler(request)

    return authenticate


class TokenInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED to calls without ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str) -> None:
        self._token = token

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            presented = _metadata(context.invocation_metadata(), "authorization")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is wrong" if presented else
                          "authentication required: send `authorization: Bearer <token>` metadata")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        presented = _metadata(handler_call_details.invocation_metadata, "authorization")  # type: ignore[attr-defined]
        if matches(presented, self._token):
            return continuation(handler_call_details)
        return self._refuse


def _metadata(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
    return None


@dataclass(frozen=True)
class Tls:
    """The listeners' TLS: an ``ssl.SSLContext`` for aiohttp and ``grpc.ServerCredentials`` for gRPC."""

    http: ssl.SSLContext
    grpc: grpc.ServerCredentials
    client_certificates: bool

    @classmethod
    def load(cls, cert: str, key: str, client_ca: str | None = None) -> Tls:
        """Loads and checks the PEM files (a missing file, bad PEM or a key of another certificate: ValueError)."""
        files = {"tls_cert": cert, "tls_key": key, **({"tls_client_ca": client_ca} if client_ca else {})}
        contents = {}
        for name, path in files.items():
            try:
                with open(path, "rb") as handle:
                    contents[name] = handle.read()
            except FileNotFoundError:
                raise ValueError(f"setting {name}: {path!r} does not exist") from None
            except OSError as exc:
                raise ValueError(f"setting {name}: cannot read {path!r}: {exc}") from None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ValueError(f"settings tls_cert and tls_key: {cert!r} and {key!r} are not a PEM certificate (chain) "
                             f"and its unencrypted private key ({exc.reason or exc})") from None
        if client_ca:
            try:
                context.load_verify_locations(cafile=client_ca)
            except ssl.SSLError as exc:
                raise ValueError(f"setting tls_client_ca: {client_ca!r} is not a PEM CA certificate "
                                 f"({exc.reason or exc})") from None
            context.verify_mode = ssl.CERT_REQUIRED
        credentials = grpc.ssl_server_credentials([(contents["tls_key"], contents["tls_cert"])],
                                                  root_certificates=contents.get("tls_client_ca"),
                                                  require_client_auth=bool(client_ca))
        return cls(context, credentials, bool(client_ca))


@dataclass(frozen=True)
class Security:
    """What guards the listeners, resolved from the configuration at start (files read, checked)."""

    token: str | None = None
    tls: Tls | None = None

    @classmethod
    def from_config(cls, config: ProcessorConfig) -> Security:
        token = read_token(config)
        tls = Tls.load(config.tls_cert, config.tls_key, config.tls_client_ca) if config.tls_cert and \
            config.tls_key else None
        return cls(token, tls)

    def http_middlewares(self) -> list[Any]:
        return [auth_middleware(self.token)] if self.token else []

    def grpc_interceptors(self) -> tuple[grpc.ServerInterceptor, ...]:
        return (TokenInterceptor(self.token),) if self.token else ()

    def describe(self, config: ProcessorConfig) -> str:
        """One line for the start log: how clients are authenticated, and whether traffic is encrypted."""
        if self.token and self.tls and self.tls.client_certificates:
            who = "bearer token and client certificates required"
        elif self.token:
            who = "bearer token required"
        elif self.tls and self.tls.client_certificates:
            who = "client certificates required (no bearer token)"
        else:
            loopback = all(is_loopback(getattr(config, name).rpartition(":")[0])
                           for name in ("grpc_endpoint", "http_endpoint"))
            who = ("UNAUTHENTICATED: anyone who reaches the ports can send data and use the API" +
                   ("; bound to loopback only" if loopback else " (--allow-unauthenticated)") +
                   f"; set a token with --auth-token-file or {ENV_PREFIX}AUTH_TOKEN")
        return who + ("; TLS on both listeners" if self.tls else "; plaintext (no TLS)")
