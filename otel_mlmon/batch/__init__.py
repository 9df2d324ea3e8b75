"""The batch path: files (or DataFrames) in, window results out.

``evaluate`` and ``build_reference`` are ``mlmon evaluate`` and ``mlmon reference build`` in Python; both return
``Results`` (``.frame``, ``.alerts()``, ``.to_html()``, a summary in Jupyter); ``Results.from_processor`` reads a
processor's ``GET /v1/results``.
"""

from __future__ import annotations

from otel_mlmon.batch.api import Results, build_reference, evaluate
from otel_mlmon.batch.output import MissingExtraError, OutputError
from otel_mlmon.batch.reader import DataError
from otel_mlmon.batch.runner import LooksLikeIdWarning

__all__ = ["DataError", "LooksLikeIdWarning", "MissingExtraError", "OutputError", "Results", "build_reference",
           "evaluate"]
