"""Train the churn classifier that MLServer serves from this folder (writes model.joblib next to this file).

Run: python examples/mlserver/train.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

FEATURES = ["tenure", "charges", "calls"]


def customers(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic customers and whether each churned."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"tenure": rng.integers(1, 72, rows).astype(float), "charges": rng.normal(70, 20, rows),
                          "calls": rng.poisson(2, rows).astype(float)})
    score = -0.05 * frame["tenure"] + 0.03 * frame["charges"] + 0.4 * frame["calls"] - 1.0
    return frame, (rng.random(rows) < 1 / (1 + np.exp(-score))).astype(int).to_numpy()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    frame, churned = customers(2000, seed=0)
    model = LogisticRegression(max_iter=500).fit(frame, churned)  # learns the column names
    joblib.dump(model, out / "model.joblib")
    print(f"wrote {out / 'model.joblib'}")


if __name__ == "__main__":
    main()
