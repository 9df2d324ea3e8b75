"""Loopback ports for the demo, the native stack, the tests and the benchmarks: one allocator, never the same
port twice in a process."""

from __future__ import annotations

import functools
import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


@functools.cache
def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems: the bind(0) fallback below still dedupes


def free_port() -> int:
    """A loopback TCP port nobody listens on, never the same twice in this process.

    ``bind(("127.0.0.1", 0))`` alone is not enough: two calls can return the same port (the kernel picks at random
    in its ephemeral range), and any outgoing connection may take a port handed out but not yet bound. So ports
    are drawn below the ephemeral range, checked bindable, and remembered."""
    low = _ephemeral_low()
    candidates = range(10000, low) if low - 10000 >= 1000 else None
    for _ in range(1000):
        if candidates is not None:
            port = random.choice(candidates)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback TCP port found in 1000 tries")
