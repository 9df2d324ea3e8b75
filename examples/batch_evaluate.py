"""Batch: a reference profile from training-time data, then drift and realized accuracy over a week of
predictions whose labels came later, with the same engine as the processor.

Run: python examples/batch_evaluate.py [FOLDER]   (writes the data files, the results and report.html there)
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

from otel_mlmon.demo.data import FEATURES, churn, churn_model

folder = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mlmon-batch-"))
folder.mkdir(parents=True, exist_ok=True)

# A model, its outputs on the reference data, and on a week of traffic that drifts from row 3000 on.
train = churn(4000, 1)
model = churn_model(train)
for name, frame in (("reference", churn(5000, 3)), ("analysis", churn(6000, 4, drift_from=3000))):
    scores = model.predict_proba(frame[FEATURES])[:, 1]
    frame = frame.assign(y_score=scores, y_pred=(scores > 0.5).astype(int))
    if name == "analysis":  # the labels come in a file of their own, later
        frame[["id", "churned"]].to_csv(folder / "labels.csv", index=False)
        frame = frame.drop(columns=["churned"])
    frame.to_parquet(folder / f"{name}.parquet")

columns = ["--id-column", "id", "--target-column", "churned", "--prediction-column", "y_pred",
           "--score-column", "y_score", "--categorical", "plan"]
subprocess.run(["mlmon", "reference", "build", "--data", str(folder / "reference.parquet"), "--model", "churn",
                "--version", "1", "--chunk-size", "1000", *columns, "--output", str(folder / "profile.json")],
               check=True)
subprocess.run(["mlmon", "evaluate", "--reference", str(folder / "profile.json"), "--analysis",
                str(folder / "analysis.parquet"), "--labels", str(folder / "labels.csv"), *columns,
                "--output", str(folder / "results.csv"), "--report", str(folder / "report.html")], check=True)

with open(folder / "results.csv", newline="") as handle:
    rows = [r for r in csv.DictReader(handle) if r["period"] == "analysis"]
for window in sorted({int(r["window"]) for r in rows}):
    mine = [r for r in rows if int(r["window"]) == window]
    drifted = sorted({r["column"] for r in mine if r["kind"] == "drift" and r["alert"] == "true"})
    accuracy = next(float(r["value"]) for r in mine if r["metric"] == "accuracy")
    print(f"window {window}: accuracy {accuracy:.3f}, drift in {', '.join(drifted) or 'nothing'}")
print(f"results: {folder / 'results.csv'}   report: {folder / 'report.html'}")
