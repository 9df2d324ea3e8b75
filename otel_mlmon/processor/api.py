"""The control API on the HTTP listener: ``GET /v1/results`` (filters ``model``, ``version``, ``kind``, ``window``,
``period``, ``segment``), ``POST /v1/references`` (a profile or a segmented profile), ``/healthz``, ``/readyz``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from otel_mlmon.processor.segmented import reference_loads, whole

if TYPE_CHECKING:
    from otel_mlmon.processor.service import Processor


class ControlApi:
    """The handlers of the control API over one processor."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/results", self.get_results), web.post("/v1/references", self.post_reference),
                web.get("/healthz", self.health), web.get("/readyz", self.ready)]

    async def get_results(self, request: web.Request) -> web.Response:
        query = request.query
        window = query.get("window")
        if window is not None and not window.lstrip("-").isdigit():
            return web.json_response({"error": f"window {window!r} is not a number"}, status=400)
        rows = self.processor.store.results(model=query.get("model"), version=query.get("version"),
                                            kind=query.get("kind"), period=query.get("period"),
                                            window=int(window) if window is not None else None,
                                            segment=query.get("segment"))
        return web.json_response({"results": rows})

    async def post_reference(self, request: web.Request) -> web.Response:
        processor = self.processor
        try:  # validated (types, finite numbers, window bounds, nesting): a one-line 400 that says what is wrong
            reference = reference_loads(await request.read(), "posted reference profile")
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        processor.register(reference)
        profile = whole(reference)
        monitored = processor.monitored[(profile.model, profile.version)]
        return web.json_response({"model": profile.model, "version": profile.version,
                                  "window_rows": monitored.window_rows,
                                  "window_seconds": monitored.window_ns / 1e9 if monitored.window_ns else None})

    def _state(self) -> dict[str, object]:
        processor = self.processor
        healthy = processor.store.healthy
        return {"status": "ok" if healthy else "store unavailable", "models": len(processor.monitored),
                "evaluation_failures_by_model": processor.failures_by_model(), **processor.counters()}

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the process answers (200), with what it counted; ``status`` says when the store cannot write."""
        return web.json_response(self._state())

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 503 while the store cannot write (disk full, I/O errors), 200 once a write succeeds again."""
        return web.json_response(self._state(), status=200 if self.processor.store.healthy else 503)
