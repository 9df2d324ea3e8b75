"""``python -m otel_mlmon.processor [flags]``: the same as ``mlmon processor serve [flags]``."""

from __future__ import annotations

import sys

from otel_mlmon.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["processor", "serve", *sys.argv[1:]]))
