"""``ml.predictions``: rows are counted in plain integers on the hot path and observed at collection.

A monotonic Sum on the wire like a Counter's, without the SDK's per-call attribute hashing (~10 us a call,
measured). The SDK keeps the first instrument of a name per meter and hands it back, without the new callbacks,
to later ``create_observable_counter`` calls; so there is one observable counter per meter provider
(``RowObserver``, kept by the runtime), observing every telemetry that uses it. A telemetry that is closed folds
its counts into its observer, which keeps reporting them: a counter that stops, never one that resets.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import Observation

from otel_mlmon import semconv
from otel_mlmon.instrumentation._runtime import RUNTIME

if TYPE_CHECKING:
    from otel_mlmon.instrumentation._telemetry import Telemetry


class RowObserver:
    """The ``ml.predictions`` observable counter of one meter provider."""

    def __init__(self, meter: Any) -> None:
        self._telemetries: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        self._retired: dict[frozenset[Any], Observation] = {}  # counts of closed telemetries
        self._lock = threading.Lock()
        self.counter = meter.create_observable_counter(
            semconv.ML_PREDICTIONS, callbacks=[self._observe], unit=semconv.ML_PREDICTIONS_UNIT,
            description="Rows predicted")

    def add(self, telemetry: Telemetry) -> None:
        self._telemetries.add(telemetry)

    def retire(self, telemetry: Telemetry) -> None:
        """Keep reporting what ``telemetry`` counted, without observing it any more."""
        with self._lock:
            if telemetry not in self._telemetries:
                return
            self._telemetries.discard(telemetry)
            for observation in telemetry.row_counts():
                self._add(self._retired, observation)

    @staticmethod
    def _add(totals: dict[frozenset[Any], Observation], observation: Observation) -> None:
        key = frozenset((observation.attributes or {}).items())
        before = totals.get(key)
        totals[key] = observation if before is None else Observation(before.value + observation.value,
                                                                     observation.attributes)

    def _observe(self, options: Any) -> Iterable[Observation]:
        with self._lock:
            totals = dict(self._retired)  # the same model seen by several telemetries: one sum
            telemetries = list(self._telemetries)
        for telemetry in telemetries:
            try:
                observed = list(telemetry.observe_rows())
            except Exception as exc:  # one telemetry's failure must not hide the others' rows
                RUNTIME.guard.failure("rows", exc)
                continue
            for observation in observed:
                self._add(totals, observation)
        return list(totals.values())

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._retired = {}  # the parent reports its own


def row_observer(meter_provider: Any, meter: Any) -> RowObserver:
    """The shared row observer of ``meter_provider`` (None: the global one), made with ``meter`` the first time."""
    runtime = RUNTIME
    with runtime.lock:
        if meter_provider is None or meter_provider is metrics.get_meter_provider():  # one global, named or not
            if runtime.global_row_observer is None:
                runtime.global_row_observer = RowObserver(meter)
            return runtime.global_row_observer
        try:
            found = runtime.row_observers.get(meter_provider)
            if found is None:
                found = runtime.row_observers[meter_provider] = RowObserver(meter)
            return found
        except TypeError:  # not weakly referenceable: kept for the process's life
            entry = runtime.row_observers_strong.get(id(meter_provider))
            if entry is None:
                entry = runtime.row_observers_strong[id(meter_provider)] = (meter_provider, RowObserver(meter))
            return entry[1]
