"""gunicorn --preload in miniature: the parent configures the SDK, instruments and predicts, then forks workers
that predict too. With CHILD_WAITS=<seconds> a worker does not flush: it waits, then stops, so only what its own
background threads sent in the meantime counts."""

import json
import os
import sys
import time

import numpy as np
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import set_meter_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

import otel_mlmon
from otel_mlmon.instrumentation import force_flush

logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
set_logger_provider(logger_provider)
set_meter_provider(MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())]))


class Doubler:
    def predict(self, X):
        return np.asarray(X)[:, 0] * 2


model = otel_mlmon.instrument_model(Doubler(), name="forked", task="regression")
model.predict(np.ones((3, 2)))  # buffered in the parent before the fork
children = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        model.predict(np.full((5 + worker, 2), float(worker)))
        if os.environ.get("CHILD_WAITS"):
            time.sleep(float(os.environ["CHILD_WAITS"]))
        else:
            force_flush()
            logger_provider.force_flush()
        os._exit(0)  # like a worker stopped by its master: only what it flushed counts
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
model.predict(np.ones((4, 2)))
json.dump({"children": codes}, sys.stdout)
