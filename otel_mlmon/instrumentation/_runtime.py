"""The instrumentation runtime: the one object that owns otel-mlmon's process-wide state.

``RUNTIME`` holds what every instrumented call and every instrumentor shares in a process:

- the guard (failure counts, kinds already logged, listeners);
- the telemetries, one per set of providers, each with the users that keep it (instrumented models, held weakly,
  and active instrumentors); one that nobody uses any more is flushed, closed and forgotten by the flusher, so
  that its providers can go. The telemetry of the global providers lives as long as the process;
- the ``ml.predictions`` row observers, one per meter provider; the pool of prediction ids made ahead; the
  default resource of sketches;
- which frameworks are instrumented zero-code, and with which telemetry;
- what otel-mlmon wrapped (owner, attribute, original object) and who needs each wrapper: instrumentors by name,
  instrumented models by weak reference. A wrapper is removed, and the very original object put back, when the
  last of them lets go;
- the background flusher thread, the fork hook (a forked child starts with empty buffers and new locks; its
  thread starts again at its first prediction) and the exit flush (registered again after the SDK providers
  exist, so that it runs before their own shutdown: atexit is LIFO).

Importing this module imports neither numpy nor the OpenTelemetry SDK: telemetries are built on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from otel_mlmon.instrumentation._rows import RowObserver
    from otel_mlmon.instrumentation._telemetry import Telemetry

_logger = logging.getLogger("otel_mlmon")

T = TypeVar("T")
ProviderKey = tuple[Any, Any, Any, Any]  # (tracer, meter, logger provider, sketch exporter), by identity

EXPORT_TIMEOUT_MILLIS = 10_000


class Guard:
    """Catch, log once per kind, count, drop: nothing here ever raises into the application."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []

    def failure(self, kind: str, exc: BaseException | None = None, message: str | None = None) -> None:
        with self._lock:
            self._counts[kind] += 1
            first = kind not in self._logged
            self._logged.add(kind)
            listeners = list(self._listeners)
        if first:
            text = message or f"otel-mlmon dropped telemetry ({kind})"
            if exc is not None:
                _logger.warning("%s: %s: %s (logged once; later failures of this kind are only counted)",
                                text, type(exc).__name__, exc, exc_info=exc)
            else:
                _logger.warning("%s (logged once; later occurrences are only counted)", text)
        for listener in listeners:
            try:
                listener(kind)
            except Exception:  # a broken listener must not break the guard
                pass

    def call(self, kind: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            self.failure(kind, exc)
            return None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._logged.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()


class Flusher:
    """One daemon thread per process that ticks every live telemetry and retires unused ones."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.stopped = False  # True in a forked child until its first prediction starts the thread again

    def ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="otel-mlmon-flusher", daemon=True)
                self._thread.start()
            self.stopped = False

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        runtime = self._runtime
        delay = 0.5
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            delay = 5.0
            runtime.guard.call("retire", runtime.retire_unused)
            now = time.monotonic()
            for telemetry in list(runtime.live):
                wait = runtime.guard.call("tick", telemetry.tick, now)
                if wait is not None:
                    delay = min(delay, wait)
            delay = max(delay, 0.05)

    def after_fork(self) -> None:
        self._thread = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.stopped = True


@dataclass
class Wrapped:
    """One attribute otel-mlmon replaced: where, the original object, and who needs the wrapper."""

    owner: Any  # a class or a module
    name: str
    original: Any
    installed: Any  # the wrapper object put in its place
    instrumentors: set[str] = field(default_factory=set)
    models: dict[int, Callable[[], Any]] = field(default_factory=dict)  # id -> (weak) reference

    def needed(self) -> bool:
        if self.instrumentors:
            return True
        for key in [k for k, ref in self.models.items() if ref() is None]:
            del self.models[key]
        return bool(self.models)


def _reference(model: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(model)
    except TypeError:  # not weakly referenceable: held for the process's life
        return lambda: model


class Runtime:
    """Process-wide state of the instrumentation (see the module docstring). One instance: ``RUNTIME``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.guard = Guard()
        self.flusher = Flusher(self)
        self.live: weakref.WeakSet[Telemetry] = weakref.WeakSet()  # telemetries the flusher ticks
        self.telemetries: dict[ProviderKey, Telemetry] = {}  # explicit providers -> their telemetry
        self.default: Telemetry | None = None  # the global providers' telemetry
        self.zero_code: dict[str, Telemetry | None] = {}  # system -> its instrumentor's telemetry (None: global)
        self.wrapped: dict[tuple[Any, str], Wrapped] = {}
        self.row_observers: weakref.WeakKeyDictionary[Any, RowObserver] = weakref.WeakKeyDictionary()
        self.row_observers_strong: dict[int, tuple[Any, RowObserver]] = {}  # providers without weak references
        self.global_row_observer: RowObserver | None = None
        self._users: dict[ProviderKey, int] = {}
        self._retiring: set[ProviderKey] = set()
        self._model_uses: dict[int, tuple[weakref.finalize, ProviderKey]] = {}  # id(model) -> its use
        self.id_pool: list[str] = []  # prediction ids made ahead for calls on few rows (see _ids)
        self.resource: Any = None  # Resource.create(), made once, for sketches without an SDK meter provider

    # --- telemetries -----------------------------------------------------------------------------------------
    def default_telemetry(self) -> Telemetry:
        """The telemetry of the global providers (zero-code and ``instrument_model`` without providers)."""
        found = self.default
        if found is None:
            with self.lock:
                found = self.default
                if found is None:
                    from otel_mlmon.instrumentation._telemetry import Telemetry

                    found = self.default = Telemetry()
        return found

    def telemetry_for(self, tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                      sketch_exporter: Any = None) -> Telemetry:
        """The telemetry of these providers (the global ones when all are None), created once."""
        if tracer_provider is None and meter_provider is None and logger_provider is None and \
                sketch_exporter is None:
            return self.default_telemetry()
        key = (tracer_provider, meter_provider, logger_provider, sketch_exporter)
        with self.lock:
            found = self.telemetries.get(key)
            if found is None:
                from otel_mlmon.instrumentation._telemetry import Telemetry

                found = self.telemetries[key] = Telemetry(tracer_provider, meter_provider, logger_provider,
                                                          sketch_exporter)
            return found

    def use(self, telemetry: Telemetry, model: Any = None) -> None:
        """Count a user of ``telemetry``: an instrumentor (``model`` None, until ``release``) or a model (until it
        is garbage-collected or ``release_model``)."""
        key = telemetry.key
        if key is None:
            return
        with self.lock:
            self._users[key] = self._users.get(key, 0) + 1
            self._retiring.discard(key)
            if model is not None:
                before = self._model_uses.pop(id(model), None)
                if before is not None:  # instrumented again: the former use ends
                    before[0].detach()
                    self._release(before[1])
                try:
                    finalizer = weakref.finalize(model, self._model_gone, id(model), key)
                except TypeError:  # not weakly referenceable: a user for the process's life
                    return
                finalizer.atexit = False
                self._model_uses[id(model)] = (finalizer, key)

    def release(self, telemetry: Telemetry) -> None:
        if telemetry.key is not None:
            with self.lock:
                self._release(telemetry.key)

    def release_model(self, model: Any) -> None:
        with self.lock:
            found = self._model_uses.pop(id(model), None)
            if found is not None:
                found[0].detach()
                self._release(found[1])

    def _model_gone(self, model_id: int, key: ProviderKey) -> None:
        # Runs wherever the garbage collector runs: only bookkeeping here, the flusher thread does the rest.
        with self.lock:
            found = self._model_uses.get(model_id)
            if found is not None and found[1] is key:
                del self._model_uses[model_id]
            self._release(key)

    def _release(self, key: ProviderKey) -> None:
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        if key in self.telemetries:
            self._retiring.add(key)
            self.flusher.wake()

    def retire_unused(self) -> None:
        """Flush, close and forget the telemetries nobody uses any more (on the flusher thread)."""
        if not self._retiring:
            return
        with self.lock:
            keys = [k for k in self._retiring if not self._users.get(k)]
            self._retiring.clear()
            retired = [self.telemetries.pop(k) for k in keys if k in self.telemetries]
        for telemetry in retired:
            telemetry.close()

    def forget(self, telemetry: Telemetry) -> None:
        """Stop ticking ``telemetry`` and drop it from the registry (``Telemetry.close``)."""
        self.live.discard(telemetry)
        with self.lock:
            key = telemetry.key
            if key is not None and self.telemetries.get(key) is telemetry:
                del self.telemetries[key]
                self._users.pop(key, None)

    # --- wrapping ---------------------------------------------------------------------------------------------
    def wrap(self, owner: Any, name: str, wrapper: Callable[..., Any], who: str, model: Any = None) -> bool:
        """Wrap ``owner.name`` with the wrapt ``wrapper`` unless otel-mlmon already did, and note that ``who``
        (an instrumentor) or ``model`` needs it. True when this call wrapped it."""
        import wrapt

        key = (owner, name)
        with self.lock:
            entry = self.wrapped.get(key)
            made = entry is None
            if entry is None:
                original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
                wrapt.wrap_function_wrapper(owner, name, wrapper)
                installed = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
                entry = self.wrapped[key] = Wrapped(owner, name, original, installed)
            if model is None:
                entry.instrumentors.add(who)
            else:
                entry.models[id(model)] = _reference(model)
            return made

    def unwrap(self, who: str | None = None, model: Any = None) -> None:
        """``who`` (an instrumentor) or ``model`` no longer needs its wrappers: remove those nobody needs."""
        with self.lock:
            for key, entry in list(self.wrapped.items()):
                if who is not None:
                    entry.instrumentors.discard(who)
                if model is not None:
                    entry.models.pop(id(model), None)
                if not entry.needed():
                    self._restore(entry)
                    del self.wrapped[key]

    @staticmethod
    def _restore(entry: Wrapped) -> None:
        owner, name = entry.owner, entry.name
        current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if current is entry.installed:  # someone else's wrapper on top of ours stays, and so does ours
            setattr(owner, name, entry.original)

    # --- flushing, fork, exit ---------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = EXPORT_TIMEOUT_MILLIS) -> bool:
        """Emit buffered events and export sketches of every live telemetry now."""
        ok = True
        for telemetry in list(self.live):
            ok = telemetry.force_flush(timeout_millis) and ok
        return ok

    def register_exit_flush(self) -> None:
        """(Re-)register the exit flush last, so that it runs before the SDK providers shut down (atexit is LIFO)
        even when the providers were created after otel-mlmon was imported. Called when a model is first seen."""
        atexit.unregister(self._at_exit)
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        self.force_flush(timeout_millis=5_000)

    def after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self.guard.after_fork()
        self.flusher.after_fork()
        self.id_pool.clear()  # else the child would repeat its parent's ids
        observers = [*self.row_observers.values(), *(o for _, o in self.row_observers_strong.values())]
        for observer in [self.global_row_observer, *observers]:
            if observer is not None:
                observer.after_fork()
        for telemetry in list(self.live):
            telemetry.after_fork()


RUNTIME = Runtime()
os.register_at_fork(after_in_child=RUNTIME.after_fork_in_child)
atexit.register(RUNTIME._at_exit)
