# The otel-mlmon image: the processor (`mlmon processor serve`), the demo's model service
# (examples/model_service.py under opentelemetry-instrument) and the load driver (`mlmon replay`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY otel_mlmon ./otel_mlmon
COPY examples ./examples
RUN pip install --no-cache-dir ".[sklearn,processor,batch]" \
    && useradd --create-home --uid 10001 mlmon \
    && mkdir -p /data /state /secrets && chown mlmon /data /state /secrets
USER mlmon
EXPOSE 4317 4318 8080
ENTRYPOINT ["mlmon"]
# Listening on every interface needs a token: OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN_FILE (or _AUTH_TOKEN); TLS with
# OTEL_PYTHON_MLMON_PROCESSOR_TLS_CERT and _TLS_KEY. Without a token the processor refuses to start and says so.
CMD ["processor", "serve", "--grpc-endpoint", "0.0.0.0:4317", "--http-endpoint", "0.0.0.0:4318", "--store", "/state/processor.db"]
