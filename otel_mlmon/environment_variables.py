"""Every ``OTEL_PYTHON_MLMON_*`` setting, of the instrumentation and of the processor, with type and default.

Precedence everywhere: an explicit argument > the environment variable > the default. A malformed value logs a
warning naming the variable and falls back to the default (it never stops the application).
"""

from __future__ import annotations

from typing import Final

OTEL_PYTHON_MLMON_CAPTURE_FEATURES: Final = "OTEL_PYTHON_MLMON_CAPTURE_FEATURES"
"""bool, default ``false``. Put raw feature values on ``ml.predictions`` events: one array attribute per
feature, ``ml.feature.<name>``, while the event has at most 64 attributes in all; a wider model's features go in
one map attribute ``ml.features`` (feature name -> array of the rows' values), so that the SDK's limit of 128
attributes per log record never drops a feature, the model name or the ids. Off by default: raw inputs may be
personal data."""

OTEL_PYTHON_MLMON_FEATURE_SKETCHES: Final = "OTEL_PYTHON_MLMON_FEATURE_SKETCHES"
"""bool, default ``true``. Sketch every input feature and export the sketches as ``ml.feature.*`` metrics."""

OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL: Final = "OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL"
"""int milliseconds > 0, default: ``OTEL_METRIC_EXPORT_INTERVAL`` if set, else 60000. The interval ``I`` of the
pre-aggregated sketches (features, missing counts, categories, scores, regression outputs), exported as delta
temporality. Exports are aligned to the Unix clock: every exported point's ``[start, end)`` lies inside one
interval ``[k·I, (k+1)·I)``, and a call's rows are counted in the interval of the call's time. An interval is
exported once it has ended (plus a grace of min(I/10, 1 s) for calls still running); a flush (``force_flush``,
exit) also sends the open interval, cut at the flush time, and later rows of that interval make a part starting
where the flush cut. A failed export is sent again with the next export of the same interval. So a time window
whose length is a multiple of ``I`` holds whole points, and the points of a window add up to its sketch."""

OTEL_PYTHON_MLMON_SKETCH_PRECISION: Final = "OTEL_PYTHON_MLMON_SKETCH_PRECISION"
"""int 1..10, default 7. Sub-buckets per power of two of a numeric sketch: the relative bucket width is
2**-precision (0.78 % at 7). Higher is sharper and larger."""

OTEL_PYTHON_MLMON_EVENT_MODE: Final = "OTEL_PYTHON_MLMON_EVENT_MODE"
"""``buffered`` (default) or ``per_call``. Buffered: rows of several predict calls share one ``ml.predictions``
event, flushed every ``OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL`` ms, at ``OTEL_PYTHON_MLMON_EVENT_MAX_ROWS`` rows
and at exit. Per call: one event per call, emitted in the call's span context."""

OTEL_PYTHON_MLMON_SPAN_MODE: Final = "OTEL_PYTHON_MLMON_SPAN_MODE"
"""``current`` (default) or ``deferred``. Current: the span is started before the call and is the current span while
the model runs. Deferred: the span is built after the call by the background flusher (at most ~200 ms later, or at
``force_flush``) from the start time and duration measured around it, with the caller's context as parent. A one-row
call then returns ~3.5x sooner (p50) for about the same CPU in all, and a model that releases the GIL loses less
throughput (measured in benchmarks/README.md). But the span is not current while the model runs: spans and logs
made inside the model call belong to the caller's span, and the span reaches the span processors only when the
flusher builds it. Choose it for latency-bound services."""

OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL: Final = "OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL"
"""int milliseconds > 0, default 1000. Longest time a buffered prediction row waits before its event."""

OTEL_PYTHON_MLMON_EVENT_MAX_ROWS: Final = "OTEL_PYTHON_MLMON_EVENT_MAX_ROWS"
"""int > 0, default 4096. Rows per buffered ``ml.predictions`` event; a larger call is split into several."""

OTEL_PYTHON_MLMON_CATEGORY_TOP_K: Final = "OTEL_PYTHON_MLMON_CATEGORY_TOP_K"
"""int > 0, default 50. Categories of a categorical feature exported per interval; the rest are summed into
``__other__``."""

OTEL_PYTHON_MLMON_MAX_CATEGORIES: Final = "OTEL_PYTHON_MLMON_MAX_CATEGORIES"
"""int > 0, default 1000. Distinct categories a categorical sketch keeps in memory per feature; new ones beyond it
count as ``__other__``."""

OTEL_PYTHON_MLMON_MAX_MODELS: Final = "OTEL_PYTHON_MLMON_MAX_MODELS"
"""int > 0, default 100. Distinct (model name, version) pairs per process; more are recorded under the model
name ``__overflow__``."""

OTEL_PYTHON_MLMON_MAX_FEATURES: Final = "OTEL_PYTHON_MLMON_MAX_FEATURES"
"""int > 0, default 1000. Input columns sketched per model; wider inputs have only their first columns
sketched (counted in ``ml.instrumentation.errors`` with ``error.type=too_many_features``)."""

OTEL_PYTHON_MLMON_ID_COLUMN: Final = "OTEL_PYTHON_MLMON_ID_COLUMN"
"""str, default none. Zero-code label joins: the name of an input column whose values become the prediction ids of
the rows (``ml.prediction.id``), e.g. ``order_id``. Read from pandas DataFrames, dicts of columns and lists of row
dicts. The column is not sketched and not captured as a feature. The model receives its input unchanged, so it must
ignore the column itself: e.g. a Pipeline starting with ``ColumnTransformer([...], remainder="drop")`` that selects
its features by name (a bare estimator fitted without the column refuses a DataFrame that has it). Rows whose id is
missing get generated ids (counted as ``id_column_missing``). An explicit ``prediction_ids(ids=...)`` wins."""

OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY: Final = "OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY"
"""str, default none. Zero-code label joins: the key of a W3C baggage entry (in the context current at the predict
call) whose value becomes the prediction id: a one-row call gets ``<value>``, a call on n rows gets
``<value>-0`` … ``<value>-<n-1>`` (row index in the call, from 0). Used when no id column gave the ids; an explicit
``prediction_ids(ids=...)`` wins over both."""

OTEL_PYTHON_MLMON_SEGMENT_COLUMN: Final = "OTEL_PYTHON_MLMON_SEGMENT_COLUMN"
"""str, default none. Segments: the name of an input column (pandas DataFrames, dicts of columns, lists of row
dicts) whose value is each row's segment (``ml.segment``): an array of the rows' segments on every
``ml.predictions`` event, and every sketch point (``ml.feature.*``, ``ml.prediction.score``,
``ml.prediction.value``) split per segment, carrying ``ml.segment``: the model's whole sketch is the merge of its
segments' points (nothing unsegmented is sent besides). The column stays an input (and a feature) of the model.
Values are bounded per model (``OTEL_PYTHON_MLMON_MAX_SEGMENTS``): those of a segmented reference profile, else the
first values seen; the rest are ``__other__``; a row without a value (or an input without the column) is
``__missing__``. ``instrument_model(segment_by=...)`` wins."""

OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY: Final = "OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY"
"""str, default none. Segments: the key of a W3C baggage entry (in the context current at the predict call) whose
value is the segment of all the call's rows (e.g. ``tenant``); bounded as ``OTEL_PYTHON_MLMON_SEGMENT_COLUMN``'s
values. Used when no segment column is set or the input has none; no entry: ``__missing__``.
``instrument_model(segment_baggage_key=...)`` wins."""

OTEL_PYTHON_MLMON_MAX_SEGMENTS: Final = "OTEL_PYTHON_MLMON_MAX_SEGMENTS"
"""int >= 2, default 10 (as ``mlmon evaluate --max-segments``). Segments per model counting ``__other__``: the
first ``N - 1`` distinct values seen by the process are kept, later new ones are ``__other__`` (plus
``__missing__``). With a segmented reference profile its segments are used instead. Also bounds the values of
``ml.fairness.group``. ``instrument_model(max_segments=...)`` wins."""

OTEL_PYTHON_MLMON_SENSITIVE_COLUMN: Final = "OTEL_PYTHON_MLMON_SENSITIVE_COLUMN"
"""str, default none. Fairness, opt-in personal data: the name of an input column (e.g. ``sex``) whose value per row
goes on ``ml.predictions`` events as the string array ``ml.fairness.group`` (missing: ``__missing__``; bounded as
segments, the rest ``__other__``), never on metrics or spans. The column is not sketched nor captured as a feature
(as ``mlmon evaluate --sensitive-column``); the model still receives it. ``instrument_model(sensitive_column=...)``
wins."""

# --- The processor (``mlmon processor serve``): flags > these > the YAML file > defaults --------------------

OTEL_PYTHON_MLMON_PROCESSOR_GRPC_ENDPOINT: Final = "OTEL_PYTHON_MLMON_PROCESSOR_GRPC_ENDPOINT"
"""str HOST:PORT, default ``127.0.0.1:4317``. Where the processor takes OTLP/gRPC."""

OTEL_PYTHON_MLMON_PROCESSOR_HTTP_ENDPOINT: Final = "OTEL_PYTHON_MLMON_PROCESSOR_HTTP_ENDPOINT"
"""str HOST:PORT, default ``127.0.0.1:4318``. Where the processor takes OTLP/HTTP and serves its API."""

OTEL_PYTHON_MLMON_PROCESSOR_STORE: Final = "OTEL_PYTHON_MLMON_PROCESSOR_STORE"
"""str path, default ``mlmon-processor.db``. The processor's SQLite state file."""

OTEL_PYTHON_MLMON_PROCESSOR_REFERENCES: Final = "OTEL_PYTHON_MLMON_PROCESSOR_REFERENCES"
"""str, comma-separated profile paths, default none. Reference profiles loaded at start."""

OTEL_PYTHON_MLMON_PROCESSOR_ALERTMANAGER: Final = "OTEL_PYTHON_MLMON_PROCESSOR_ALERTMANAGER"
"""str URL, default none. Alertmanager that receives the alerts (``/api/v2/alerts``)."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_BODY_BYTES: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_BODY_BYTES"
"""int > 0, default 16777216. Largest OTLP/HTTP body, after decompression."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_GRPC_MESSAGE_BYTES: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_GRPC_MESSAGE_BYTES"
"""int > 0, default 4194304. Largest OTLP/gRPC message."""

OTEL_PYTHON_MLMON_PROCESSOR_LABEL_TTL_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_LABEL_TTL_S"
"""float seconds > 0, default 604800 (7 days). How long a prediction takes labels."""

OTEL_PYTHON_MLMON_PROCESSOR_ORPHAN_TTL_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_ORPHAN_TTL_S"
"""float seconds > 0, default 86400. How long a label waits for its prediction."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_PENDING: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_PENDING"
"""int > 0, default 10000000. Unlabeled predictions held per model before that model's rows get 503 (naming it;
the other models' rows of the same request are kept)."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_ORPHANS: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_ORPHANS"
"""int > 0, default 1000000. Labels waiting for their predictions held per model before that model's unjoinable
labels get 503 (its joinable ones are still taken)."""

OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S"
"""float seconds >= 0, default 30. A model's watermark is its latest event time less this: a window is evaluated
once the watermark passes its end. Long enough for a sketch export after its interval plus Collector batching."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_LATENESS_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_LATENESS_S"
"""float seconds > 0, default 3600. Rows and sketch points up to this far behind their model's latest event time
revise their window's results; older ones are counted (``late_dropped`` in /healthz) and not stored."""

OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S"
"""float seconds > 0, default 120. A model without new rows for this long (processing time) is idle: all its
windows close, the last partial one too, and its event-time clock (for TTLs) moves on with processing time."""

OTEL_PYTHON_MLMON_PROCESSOR_SKETCH_WINDOW_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_SKETCH_WINDOW_S"
"""float seconds in [1, 366 days], default 3600. The time windows on which the features of a row-windowed model
whose events carry no captured features are judged from their sketches (a multiple of the apps' sketch export
interval)."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_FUTURE_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_FUTURE_S"
"""float seconds > 0, default 300. Records with an event time further ahead of the processor's clock are refused
(partial success): a wrong clock would otherwise close every window of its model."""

OTEL_PYTHON_MLMON_PROCESSOR_RETENTION_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_RETENTION_S"
"""float seconds >= 0, default 3600. Rows and sketch points are deleted this long after no window can need them
again (past the label TTL and the lateness bound of their model's event-time clock)."""

OTEL_PYTHON_MLMON_PROCESSOR_REVISION_INTERVAL_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_REVISION_INTERVAL_S"
"""float seconds >= 0, default 30. A window already evaluated is evaluated again for rows, labels or sketch points
that arrived after it closed at most once per this interval or ten times the CPU its model's last window evaluation
took, whichever is longer (one revision takes everything that came meanwhile); 0 revises at every tick. A window's
first evaluation never waits, nor do row windows shifted by a late row."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_MODELS: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_MODELS"
"""int > 0, default 10000. Distinct (model, version) streams; records of more are refused per record (counted
``models_over_cap``)."""

OTEL_PYTHON_MLMON_PROCESSOR_MAX_FEATURES: Final = "OTEL_PYTHON_MLMON_PROCESSOR_MAX_FEATURES"
"""int > 0, default 10000. Distinct sketched features per model; sketch points of more are refused per point
(counted ``features_over_cap``)."""

OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN: Final = "OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN"
"""str, default none. Bearer token required on OTLP and the API (not /healthz, /readyz). Prefer the _FILE
variant (an environment variable is visible to other processes of the same user)."""

OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN_FILE: Final = "OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN_FILE"
"""str path, default none. File holding the token (whitespace stripped); missing or empty refuses startup."""

OTEL_PYTHON_MLMON_PROCESSOR_TLS_CERT: Final = "OTEL_PYTHON_MLMON_PROCESSOR_TLS_CERT"
"""str path, default none. PEM server certificate (chain): TLS on both listeners (with TLS_KEY)."""

OTEL_PYTHON_MLMON_PROCESSOR_TLS_KEY: Final = "OTEL_PYTHON_MLMON_PROCESSOR_TLS_KEY"
"""str path, default none. The unencrypted PEM key of TLS_CERT."""

OTEL_PYTHON_MLMON_PROCESSOR_TLS_CLIENT_CA: Final = "OTEL_PYTHON_MLMON_PROCESSOR_TLS_CLIENT_CA"
"""str path, default none. CA of client certificates: mTLS required on both listeners."""

OTEL_PYTHON_MLMON_PROCESSOR_ALLOW_UNAUTHENTICATED: Final = "OTEL_PYTHON_MLMON_PROCESSOR_ALLOW_UNAUTHENTICATED"
"""bool, default ``false``. Allow a non-loopback endpoint without a token or client CA (something in front of the
processor authenticates)."""

OTEL_PYTHON_MLMON_PROCESSOR_SEQUENTIAL_DETECTOR: Final = "OTEL_PYTHON_MLMON_PROCESSOR_SEQUENTIAL_DETECTOR"
"""str, one of ``adwin`` (default), ``page_hinkley``, ``off``. Change detection on each monitored model's label
stream (the engine's ADWIN with river's defaults, or Page–Hinkley): a ``performance_change`` result and alert as
soon as the joined labels show a change in accuracy (MAE for regression), without waiting for a window to close."""

OTEL_PYTHON_MLMON_PROCESSOR_TICK_S: Final = "OTEL_PYTHON_MLMON_PROCESSOR_TICK_S"
"""float seconds > 0, default 1. How often windows are evaluated and TTLs applied."""

OTEL_PYTHON_MLMON_PROCESSOR_WEBHOOK: Final = "OTEL_PYTHON_MLMON_PROCESSOR_WEBHOOK"
"""str URL, default none. Receives every alert transition as a JSON POST (e.g. to start retraining)."""

OTEL_PYTHON_MLMON_PROCESSOR_TENSORBOARD_DIR: Final = "OTEL_PYTHON_MLMON_PROCESSOR_TENSORBOARD_DIR"
"""str path, default none. Also write each evaluated window's drift, data-quality and performance scalars into this
TensorBoard log directory (``<dir>/<model>/<version>/analysis``, as ``mlmon evaluate --tensorboard``; needs
``otel-mlmon[tensorboard]``)."""

OTEL_PYTHON_MLMON_PROCESSOR_REQUIRE_REFERENCE: Final = "OTEL_PYTHON_MLMON_PROCESSOR_REQUIRE_REFERENCE"
"""bool, default ``false``. Refuse (as partial success) predictions of models without a reference profile."""

OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOWS: Final = "OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOWS"
"""int >= 0, default 10. A model streaming without a reference profile gets one from its first this many windows
(0: never; such a model is then not monitored)."""

OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOW_ROWS: Final = "OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOW_ROWS"
"""int > 0, default 1000. Rows per window of a model whose reference was built from its first windows."""

OTEL_PYTHON_MLMON_PROCESSOR_LOG_LEVEL: Final = "OTEL_PYTHON_MLMON_PROCESSOR_LOG_LEVEL"
"""str, one of ``debug``, ``info`` (default), ``warning``, ``error``, ``critical``. The processor's own log lines
at and above this level: JSON lines on stderr (with ``trace_id`` and ``span_id`` inside a span), and OTLP log
records when logs export (``OTEL_EXPORTER_OTLP_ENDPOINT`` set, ``OTEL_LOGS_EXPORTER`` not ``none``)."""

ALL: Final = (
    OTEL_PYTHON_MLMON_CAPTURE_FEATURES,
    OTEL_PYTHON_MLMON_FEATURE_SKETCHES,
    OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL,
    OTEL_PYTHON_MLMON_SKETCH_PRECISION,
    OTEL_PYTHON_MLMON_EVENT_MODE,
    OTEL_PYTHON_MLMON_SPAN_MODE,
    OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL,
    OTEL_PYTHON_MLMON_EVENT_MAX_ROWS,
    OTEL_PYTHON_MLMON_CATEGORY_TOP_K,
    OTEL_PYTHON_MLMON_MAX_CATEGORIES,
    OTEL_PYTHON_MLMON_MAX_MODELS,
    OTEL_PYTHON_MLMON_MAX_FEATURES,
    OTEL_PYTHON_MLMON_ID_COLUMN,
    OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY,
    OTEL_PYTHON_MLMON_SEGMENT_COLUMN,
    OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY,
    OTEL_PYTHON_MLMON_MAX_SEGMENTS,
    OTEL_PYTHON_MLMON_SENSITIVE_COLUMN,
    OTEL_PYTHON_MLMON_PROCESSOR_GRPC_ENDPOINT,
    OTEL_PYTHON_MLMON_PROCESSOR_HTTP_ENDPOINT,
    OTEL_PYTHON_MLMON_PROCESSOR_STORE,
    OTEL_PYTHON_MLMON_PROCESSOR_REFERENCES,
    OTEL_PYTHON_MLMON_PROCESSOR_ALERTMANAGER,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_BODY_BYTES,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_GRPC_MESSAGE_BYTES,
    OTEL_PYTHON_MLMON_PROCESSOR_LABEL_TTL_S,
    OTEL_PYTHON_MLMON_PROCESSOR_ORPHAN_TTL_S,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_PENDING,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_ORPHANS,
    OTEL_PYTHON_MLMON_PROCESSOR_TICK_S,
    OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOWS,
    OTEL_PYTHON_MLMON_PROCESSOR_BOOTSTRAP_WINDOW_ROWS,
    OTEL_PYTHON_MLMON_PROCESSOR_WEBHOOK,
    OTEL_PYTHON_MLMON_PROCESSOR_REQUIRE_REFERENCE,
    OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_LATENESS_S,
    OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S,
    OTEL_PYTHON_MLMON_PROCESSOR_SKETCH_WINDOW_S,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_FUTURE_S,
    OTEL_PYTHON_MLMON_PROCESSOR_RETENTION_S,
    OTEL_PYTHON_MLMON_PROCESSOR_REVISION_INTERVAL_S,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_MODELS,
    OTEL_PYTHON_MLMON_PROCESSOR_MAX_FEATURES,
    OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN,
    OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN_FILE,
    OTEL_PYTHON_MLMON_PROCESSOR_TLS_CERT,
    OTEL_PYTHON_MLMON_PROCESSOR_TLS_KEY,
    OTEL_PYTHON_MLMON_PROCESSOR_TLS_CLIENT_CA,
    OTEL_PYTHON_MLMON_PROCESSOR_ALLOW_UNAUTHENTICATED,
    OTEL_PYTHON_MLMON_PROCESSOR_LOG_LEVEL,
    OTEL_PYTHON_MLMON_PROCESSOR_SEQUENTIAL_DETECTOR,
    OTEL_PYTHON_MLMON_PROCESSOR_TENSORBOARD_DIR,
)
