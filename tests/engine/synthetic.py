"""Seeded synthetic monitoring data with known answers: stationary columns and injected shifts."""

from __future__ import annotations

import numpy as np

from otel_mlmon.engine.columns import profile_from_columns, window_from_columns
from otel_mlmon.engine.evaluate import WindowData
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.windows import WindowSpec

CATEGORIES = np.array(list("abcde"))
BASE_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def numeric(rng: np.random.Generator, n: int, shift: str | None = None) -> np.ndarray:
    x = rng.normal(10.0, 2.0, n)
    if shift == "mean":
        x += 0.5 * 2.0
    elif shift == "scale":
        x = 10.0 + (x - 10.0) * 1.5
    elif shift == "mixture":
        outliers = rng.random(n) < 0.15
        x[outliers] = rng.normal(16.0, 1.0, outliers.sum())
    return x


def categorical(rng: np.random.Generator, n: int, shift: bool = False) -> np.ndarray:
    p = np.array([0.25, 0.25, 0.2, 0.15, 0.15]) if shift else BASE_P
    return rng.choice(CATEGORIES, n, p=p).astype(object)


def profile_from(reference: dict[str, np.ndarray], chunk: int) -> tuple[ReferenceProfile, list[WindowData]]:
    return profile_from_columns(reference, WindowSpec(chunk_size=chunk), model="synthetic")


def analysis_window(profile: ReferenceProfile, columns: dict[str, np.ndarray], index: int = 0) -> WindowData:
    return window_from_columns(profile, columns, index)
