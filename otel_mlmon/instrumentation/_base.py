"""What every otel-mlmon instrumentor shares: provider arguments, the zero-code switch, wrapping the methods its
classes resolve to (and those of classes defined later), symmetric unwrapping."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_mlmon.instrumentation import _patch
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._telemetry import Telemetry
from otel_mlmon.instrumentation._wrap import system_of


class MlInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base of the framework instrumentors: a subclass names its system, module and ``patch()``."""

    system: str = ""
    module: str = ""  # patched when this module is imported (at once if it already is)
    dependencies: tuple[str, ...] = ()
    _telemetry: Telemetry | None = None
    _hooks: list[_patch.SubclassHook] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return self.dependencies

    def _instrument(self, **kwargs: Any) -> None:
        telemetry = None
        if any(kwargs.get(k) is not None for k in ("tracer_provider", "meter_provider", "logger_provider",
                                                    "sketch_exporter")):
            telemetry = RUNTIME.telemetry_for(kwargs.get("tracer_provider"), kwargs.get("meter_provider"),
                                              kwargs.get("logger_provider"), kwargs.get("sketch_exporter"))
            RUNTIME.use(telemetry)
        self._telemetry = telemetry
        RUNTIME.zero_code[self.system] = telemetry
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
        RUNTIME.guard.call(f"patch_{self.system}", self.patch)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._active = False
        RUNTIME.zero_code.pop(self.system, None)
        for hook in self._hooks or ():
            hook.remove()
        self._hooks = None
        RUNTIME.guard.call(f"unpatch_{self.system}", self.unpatch)
        RUNTIME.unwrap(who=self.who)
        if self._telemetry is not None:
            RUNTIME.release(self._telemetry)
            self._telemetry = None

    @property
    def who(self) -> str:
        return f"instrumentor:{self.system}"

    def patch(self) -> None:
        raise NotImplementedError

    def unpatch(self) -> None:
        """Undo anything ``patch`` did beyond wrapping and class hooks."""

    def ours(self, cls: type) -> bool:
        """Whether this instrumentor records ``cls`` (classes of another framework are left to theirs)."""
        return system_of(cls) == self.system

    def wrap_classes(self, base: type, task_of: Callable[[Any], str | None]) -> None:
        """Wrap what ``base`` and its subclasses resolve to, now and for the subclasses defined later."""
        for cls in _patch.subclasses(base):
            if self.ours(cls):
                _patch.wrap_resolved(cls, self.who, self.system, task_of)
        if self._hooks is None:
            self._hooks = []
        if all(hook.base is not base for hook in self._hooks):
            def on_class(cls: type) -> None:
                if getattr(self, "_active", False) and self.ours(cls):
                    _patch.wrap_resolved(cls, self.who, self.system, task_of)

            self._hooks.append(_patch.SubclassHook(base, on_class))
