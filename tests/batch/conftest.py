from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest


def make_frame(n: int, seed: int, shift: float = 0.0, start: str = "2026-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age years": rng.normal(40 + shift * 10, 10, n),
        "income": rng.lognormal(10, 0.5, n),
        "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1]),
        "visits": rng.integers(0, 20, n).astype(float),
    })
    logit = (frame["age years"] - 40) / 10 - 0.5 * (frame["plan"] == "gold")
    score = 1 / (1 + np.exp(-logit))
    frame["score"] = score
    frame["prediction"] = (score > 0.5).astype(int)
    frame["target"] = (rng.random(n) < score).astype(int)
    frame["id"] = [f"{seed}-{i}" for i in range(n)]
    frame["ts"] = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    return frame


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    return write_files(tmp_path)


def write_files(tmp_path: Path) -> dict[str, Any]:
    """The files of the ``files`` fixture (the MLflow tests in tests/integrations write them too)."""
    reference = make_frame(3000, 0)
    analysis = pd.concat([make_frame(1500, 1, start="2026-02-01"),
                          make_frame(1700, 2, shift=1.0, start="2026-02-02 01:00")], ignore_index=True)
    labels = analysis[["id", "target"]].sample(frac=0.7, random_state=0)
    paths = {"reference": tmp_path / "reference.parquet", "analysis": tmp_path / "analysis.parquet",
             "analysis_csv": tmp_path / "analysis.csv.gz", "labels": tmp_path / "labels.csv",
             "analysis_frame": analysis}
    reference.to_parquet(paths["reference"])
    analysis.drop(columns="target").to_parquet(paths["analysis"])
    analysis.drop(columns="target").to_csv(paths["analysis_csv"], index=False)
    labels.to_csv(paths["labels"], index=False)
    return paths
