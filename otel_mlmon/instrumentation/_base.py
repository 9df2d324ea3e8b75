"""What every otel-mlmon instrumentor shares: provider arguments, zero-code switch, symmetric unwrapping."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_mlmon.instrumentation import _guard, _patch
from otel_mlmon.instrumentation._wrap import disable_zero_code, enable_zero_code


class MlInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base of the framework instrumentors: a subclass names its system, module and ``patch()``."""

    system: str = ""
    module: str = ""  # patched when this module is imported (at once if it already is)
    dependencies: tuple[str, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.dependencies

    def _instrument(self, **kwargs: Any) -> None:
        from otel_mlmon.instrumentation._api import telemetry_for

        telemetry = None
        if any(kwargs.get(k) is not None for k in ("tracer_provider", "meter_provider", "logger_provider",
                                                    "sketch_exporter")):
            telemetry = telemetry_for(kwargs.get("tracer_provider"), kwargs.get("meter_provider"),
                                      kwargs.get("logger_provider"), kwargs.get("sketch_exporter"))
        enable_zero_code(self.system, telemetry)
        self._active = True
        if self.module in sys.modules:
            self._patch_guarded()
        else:
            # Importing the framework at startup would slow every process down; patch when the app imports it.
            wrapt.register_post_import_hook(self._on_import, self.module)

    def _on_import(self, _module: Any) -> None:
        if getattr(self, "_active", False):
            self._patch_guarded()

    def _patch_guarded(self) -> None:
        _guard.call(f"patch_{self.system}", self.patch)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._active = False
        disable_zero_code(self.system)
        _guard.call(f"unpatch_{self.system}", self.unpatch)
        _patch.unwrap_all(self.who)

    @property
    def who(self) -> str:
        return f"instrumentor:{self.system}"

    def patch(self) -> None:
        raise NotImplementedError

    def unpatch(self) -> None:
        """Undo anything ``patch`` did beyond wrapping (e.g. a subclass hook)."""

    def wrap_classes(self, classes: list[type], task_of: Callable[[Any], str | None]) -> None:
        for cls in classes:
            _patch.wrap_estimator_class(cls, self.who, self.system, task_of)
