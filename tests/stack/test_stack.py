"""End to end, natively, the docker-compose topology: model service (zero-code instrumented) -> Collector ->
processor -> Collector -> Prometheus -> Alertmanager, plus the processor's own alerts to Alertmanager. Drift is
injected from row 1500 (window 3 of 6); the processor is killed and restarted while rows stream; labels arrive
late through the same Collector. One stack run serves every test here (tests/stack/conftest.py)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_mlmon import semconv
from otel_mlmon.demo.data import DRIFT_FROM, FEATURES, SHIFTS, WINDOW_ROWS
from otel_mlmon.demo.stack import NativeStack, _get

from ..conftest import eventually
from .conftest import REPO

ROWS = 3000


def _counters(stack: NativeStack) -> dict[str, int]:
    return dict(stack.processor_api("/healthz"))


def _final_results(stack: NativeStack) -> list[dict[str, Any]]:
    """The processor's results once every window is evaluated with all of its labels."""
    def done() -> list[dict[str, Any]] | None:
        results = [r for r in stack.results() if r["period"] == "analysis"]
        windows = {r["window"]: r["labeled_rows"] for r in results}
        return results if len(windows) == ROWS // WINDOW_ROWS and set(windows.values()) == {WINDOW_ROWS} else None
    return eventually(done, what="all 6 windows evaluated with their labels")


def test_every_row_and_label_arrives_despite_a_processor_crash(stack: NativeStack) -> None:
    counters = eventually(lambda: (c := _counters(stack))["labels_joined"] == ROWS and c,
                          what=f"{ROWS} labels joined")
    assert counters["predictions"] == ROWS  # every row once (resent batches are dropped as duplicates)
    # Rows held in the Collector's retry queue while the processor was down can arrive after their labels: those
    # labels wait as orphans and join when the rows come. None is left waiting, none was refused.
    assert counters["orphan_labels"] == 0 and counters["pending_predictions"] == 0
    assert counters.get("rejected_records", 0) == 0
    # The outage was real: rows waited in the Collector's persistent queue.
    queued = stack.query('max_over_time(otelcol_exporter_queue_size{exporter="otlp_grpc/mlmon-processor"}'
                                   '[10m])')
    assert queued and max(float(q["value"][1]) for q in queued) > 0
    processor_log = (stack.folder / "processor.log").read_text()
    assert processor_log.count("serving OTLP/HTTP and the API") == 2, "the processor was not killed and restarted"


def test_the_collector_reaches_the_processor_over_tls_with_its_token_and_nobody_else_does(
        stack: NativeStack) -> None:
    """Every row above came through the Collector's bearertokenauth over TLS: the processor takes nothing else."""
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    assert stack.secrets is not None
    token, certs = stack.secrets
    log = (stack.folder / "processor.log").read_text()
    assert "access: bearer token required; TLS on both listeners" in log
    assert _counters(stack)["predictions"] == ROWS
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    anonymous = urllib.request.Request(stack.url("processor_http") + "/v1/logs", data=b"", method="POST",
                                       headers={"Content-Type": "application/x-protobuf"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=5, context=trusted)
    assert refused.value.code == 401
    with pytest.raises((OSError, http.client.HTTPException)):  # the processor speaks TLS only
        urllib.request.urlopen(stack.url("processor_http").replace("https:", "http:") + "/healthz", timeout=5)
    assert token.read_text().strip() not in log  # the token never reaches a log


def test_drift_is_found_from_the_injected_window_on_and_not_before(stack: NativeStack) -> None:
    results = _final_results(stack)
    drifted = {(r["window"], r["column"]) for r in results if r["kind"] == "drift" and r["alert"]}
    first = DRIFT_FROM // WINDOW_ROWS
    assert {w for w, _ in drifted} == set(range(first, ROWS // WINDOW_ROWS))
    for window in range(first, ROWS // WINDOW_ROWS):
        found = {c for w, c in drifted if w == window}
        assert found >= set(SHIFTS) and not found & (set(FEATURES) - set(SHIFTS))  # the shifted features only
    accuracy = {r["window"]: r["value"] for r in results if r["kind"] == "performance" and r["metric"] == "accuracy"}
    assert len(accuracy) == ROWS // WINDOW_ROWS and all(0.5 < a < 1 for a in accuracy.values())
    # The monthly_charges shift costs accuracy (the demo's point): every drifted window is below every other.
    assert max(accuracy[w] for w in range(first, ROWS // WINDOW_ROWS)) < min(accuracy[w] for w in range(first)) - 0.1


def test_alerts_reach_alertmanager_from_prometheus_rules_and_from_the_processor(stack: NativeStack) -> None:
    def both() -> list[dict[str, Any]] | None:
        alerts = stack.alerts()
        names = {a["labels"]["alertname"] for a in alerts}
        return alerts if {"MLFeatureDrift", "ml_drift", "MLPerformanceDegraded", "ml_performance"} <= names else None

    alerts = eventually(both, what="MLFeatureDrift and MLPerformanceDegraded (Prometheus rules), ml_drift and "
                        "ml_performance (processor) in Alertmanager")
    ruled = [a for a in alerts if a["labels"]["alertname"] == "MLFeatureDrift"]
    assert {a["labels"]["ml_model_name"] for a in ruled} == {"churn"}
    assert {a["labels"]["ml_feature_name"] for a in ruled} >= set(SHIFTS)
    assert all(a["labels"]["severity"] == "warning" and a["annotations"]["summary"].startswith("churn 1: ")
               for a in ruled)
    direct = [a for a in alerts if a["labels"]["alertname"] == "ml_drift"]
    assert {a["labels"]["column"] for a in direct} >= set(SHIFTS)
    degraded = {a["labels"]["ml_evaluation_name"] for a in alerts
                if a["labels"]["alertname"] == "MLPerformanceDegraded"}
    assert "accuracy" in degraded  # the monthly_charges shift costs accuracy
    # Nothing fires that should not: no errors alert (one failing call of 3000 rows is under the 1 % rate and
    # under the rule's `for`).
    assert "MLPredictErrors" not in {a["labels"]["alertname"] for a in alerts}


def test_ml_series_reach_prometheus_equal_to_the_processors_results(stack: NativeStack) -> None:
    results = _final_results(stack)
    newest = max(r["window"] for r in results)

    def value(promql: str) -> float:
        found = stack.query(promql)
        if len(found) != 1:  # not scraped yet: eventually() asks again
            raise ValueError(f"{len(found)} series for {promql}: {found}")
        return float(found[0]["value"][1])

    def settles(promql: str, check: Callable[[float], bool]) -> None:
        """The series reaches what the processor decided (export and scrape intervals lag a second or two)."""
        eventually(lambda: check(value(promql)), what=promql)

    mine = {(r["column"], r["metric"]): r["value"] for r in results
            if r["window"] == newest and r["kind"] in ("drift", "performance")}
    tenure = mine[("tenure", "kolmogorov_smirnov")]
    settles('ml_drift_score_ratio{ml_model_name="churn",ml_feature_name="tenure",ml_drift_method="kolmogorov_smirnov"}',
            lambda v: v == pytest.approx(tenure, rel=1e-12))
    accuracy = next(v for (c, m), v in mine.items() if m == "accuracy")
    settles('ml_evaluation_score_ratio{ml_model_name="churn",ml_evaluation_name="accuracy"}',
            lambda v: v == pytest.approx(accuracy, rel=1e-12))
    settles('ml_label_coverage_ratio{ml_model_name="churn"}', lambda v: v == 1.0)
    settles('ml_label_latency_seconds{ml_model_name="churn"}', lambda v: v > 1.0)  # labels came >= 2 s late
    settles('sum(ml_predictions_total{ml_model_name="churn"})', lambda v: v == ROWS)
    settles('sum(ml_operation_duration_seconds_count{ml_model_name="churn",error_type="ValueError"})',
            lambda v: v == 1)
    settles('sum(ml_processor_records_total{ml_processor_outcome="label_joined"})', lambda v: v == ROWS)
    settles('count(ml_alert_firing{ml_model_name="churn",ml_alert_kind="drift"} == 1)',
            lambda v: v >= 2 * (len(SHIFTS) + 2))  # two methods each: the shifted features, prediction, score


def test_feature_sketches_stay_out_of_prometheus(stack: NativeStack) -> None:
    """Sketches go to the processor only: per feature, Prometheus holds the processor's results (a few series per
    drift method and alert), not one series per histogram bucket of ``ml.feature.value``."""
    _final_results(stack)  # the processor has judged the features from their sketches

    def series(match: str) -> list[dict[str, str]]:
        return _get(stack.url("prometheus") + "/api/v1/series?" + urllib.parse.urlencode({"match[]": match}))["data"]

    eventually(lambda: series('ml_drift_score_ratio{ml_feature_name="tenure"}'), what="tenure's drift series")
    assert series('{__name__=~"ml_feature_.*"}') == []
    per_feature = {feature: len(series(f'{{__name__=~"ml_.*",ml_feature_name="{feature}"}}')) for feature in FEATURES}
    assert all(0 < n <= 40 for n in per_feature.values()), per_feature


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:ml|otelcol)_[a-z0-9_]+)\b", text)) - {"ml_model_name", "ml_model_version"}


def test_every_series_the_rules_and_dashboards_use_exists(stack: NativeStack) -> None:
    """The rules and dashboards use the names our telemetry really has after OTLP -> Prometheus translation."""
    rules = (REPO / "collector/prometheus/rules.yml").read_text()
    dashboard = (REPO / "collector/grafana/dashboards/mlmon-overview.json").read_text()
    used = {name for name in _metric_names(rules) | _metric_names(dashboard)
            if not re.fullmatch(r"ml_(feature|drift|evaluation|alert|processor|prediction|model|operation|label)"
                                r"_(name|method|kind|metric|outcome|state|class|category|task)", name)}

    def present() -> set[str]:
        return {series["__name__"] for series in _get(stack.url("prometheus") + "/api/v1/series?" +
                                                      "match[]=%7B__name__%3D~%22(ml|otelcol)_.%2A%22%7D")["data"]}

    assert used
    eventually(lambda: used <= present(), what=f"every series of the rules and dashboards: {sorted(used)}")


def _dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((REPO / "collector/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']} {target['refId']}", target["expr"]))
        for variable in dashboard["templating"]["list"]:
            metric, label = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["definition"]).groups()
            found.append((f"{path.name}: variable {variable['name']}", f"group by ({label}) ({metric})"))
    return found


DASHBOARD_QUERIES = _dashboard_queries()


@pytest.mark.parametrize(("where", "expr"), DASHBOARD_QUERIES, ids=[w for w, _ in DASHBOARD_QUERIES])
def test_every_dashboard_query_returns_data(stack: NativeStack, where: str, expr: str) -> None:
    # Grafana's variables as Grafana sends them with "All" selected and a one-hour range.
    promql = (expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
              .replace("$model", ".*").replace("$version", ".*"))
    assert "$" not in promql, f"{where}: a variable the test does not know: {promql}"
    eventually(lambda: stack.query(promql), timeout_s=60, what=f"{where}: {promql}")


def test_traces_reach_jaeger(stack: NativeStack) -> None:
    def predict_spans() -> list[dict[str, Any]]:
        return [span for trace in stack.traces("churn-model") for span in trace["spans"]
                if span["operationName"] == "predict_proba churn"]

    # 3000 rows in calls of 50, and the one failing call; the span processor may still be exporting the last ones.
    spans = eventually(lambda: (found := predict_spans()) and len(found) == ROWS // 50 + 1 and found,
                       what="61 predict spans in Jaeger")
    tags = [{t["key"]: t["value"] for t in span["tags"]} for span in spans]
    assert all(t[semconv.ML_MODEL_NAME] == "churn" and t[semconv.ML_MODEL_VERSION] == "1" for t in tags)
    failed = [t for t in tags if t.get("error") is True]
    assert len(failed) == 1 and failed[0][semconv.ERROR_TYPE] == "ValueError"


def test_traces_and_alert_events_come_out_of_the_collector(stack: NativeStack) -> None:
    folder: Path = stack.folder

    def spans() -> list[dict[str, Any]]:
        found = []
        if (folder / "traces.jsonl").exists():
            for line in (folder / "traces.jsonl").read_text().splitlines():
                for rs in json.loads(line)["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        found.extend(ss["spans"])
        return found

    found = eventually(lambda: [s for s in spans() if s["name"].startswith("predict_proba")], what="predict spans")
    attributes = [{a["key"]: a["value"] for a in s["attributes"]} for s in found]
    assert all(a[semconv.ML_MODEL_NAME] == {"stringValue": "churn"} for a in attributes)
    assert sum(s.get("status", {}).get("code") == 2 for s in found) == 1  # the one failing call, STATUS_CODE_ERROR

    def alert_events() -> list[dict[str, Any]]:
        events = []
        path = folder / "alert-events.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            for rl in json.loads(line)["resourceLogs"]:
                for sl in rl["scopeLogs"]:
                    events.extend(r for r in sl["logRecords"] if r.get("eventName") == semconv.EVENT_ALERT)
        return events

    events = eventually(alert_events, what="ml.alert events back through the Collector")
    states = {a["key"]: a["value"] for a in events[0]["attributes"]}
    assert states[semconv.ML_ALERT_STATE] == {"stringValue": "firing"}
