"""The HTTP listener (OTLP/HTTP receiver and control API in one aiohttp application) and the serving loop.

With a :class:`~otel_mlmon.processor.security.Security` that has a token, every route but ``/healthz`` and
``/readyz`` needs ``Authorization: Bearer <token>`` (401 otherwise); with TLS, the listener speaks only HTTPS (and
asks for client certificates under mTLS).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from otel_mlmon.processor.api import ControlApi
from otel_mlmon.processor.receiver import DEFAULT_MAX_BODY, Receiver

if TYPE_CHECKING:
    from otel_mlmon.processor.security import Security
    from otel_mlmon.processor.service import Processor

_logger = logging.getLogger("otel_mlmon.processor")


def build_app(processor: Processor, max_body: int = DEFAULT_MAX_BODY, *,
              security: Security | None = None) -> web.Application:
    """The aiohttp application: the OTLP/HTTP routes and the control API, behind the token when one is set."""
    receiver = Receiver(processor, max_body, processor.clock)
    processor.receiver_counters = receiver.counters
    application = web.Application(client_max_size=max_body,
                                  middlewares=security.http_middlewares() if security is not None else [])
    application.add_routes(receiver.routes())
    application.add_routes(ControlApi(processor).routes())
    return application


async def serve(processor: Processor, host: str, port: int, tick_s: float = 1.0,
                stop: asyncio.Event | None = None, max_body: int = DEFAULT_MAX_BODY, *,
                security: Security | None = None, started: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set; windows are ticked every ``tick_s``. ``started`` is called once the listener
    is bound (a port in use raises ``ValueError`` before it)."""
    # auto_decompress=False: the receiver inflates bodies itself, under its cap (aiohttp would inflate first).
    runner = web.AppRunner(build_app(processor, max_body, security=security), auto_decompress=False)
    await runner.setup()
    tls = security.tls if security is not None else None
    site = web.TCPSite(runner, host, port, ssl_context=tls.http if tls is not None else None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ValueError(f"cannot listen for OTLP/HTTP and the API on {host}:{port}: {exc.strerror or exc} (set "
                         "--http-endpoint)") from None
    if started is not None:
        started()
    stop = stop or asyncio.Event()
    # The tick has a thread of its own: it never takes one of the pool's threads that requests are decoded and
    # recorded in, and a window's evaluation (its large arrays) allocates from one thread's malloc arena, not from
    # whichever pool thread ran each tick.
    ticker = ThreadPoolExecutor(1, thread_name_prefix="mlmon-tick")
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), tick_s)
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.get_running_loop().run_in_executor(ticker, processor.tick)
            except Exception:  # a failing tick (the store's disk, say) is logged; the service keeps serving
                _logger.exception("the periodic evaluation failed")
    finally:
        ticker.shutdown(wait=False)  # no tick runs: each is awaited before the loop looks at ``stop``
        await runner.cleanup()
