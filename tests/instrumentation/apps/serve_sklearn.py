"""An application that knows nothing of otel-mlmon: trains and serves a scikit-learn model.

Run under `opentelemetry-instrument`; it prints its predictions so the test can compare them with what arrived.
"""

import json
import sys

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[:400], y[:400])
model.otel_mlmon_name = "cancer"
model.otel_mlmon_version = "7"
proba = model.predict_proba(X[400:])
single = [int(model.predict(X.iloc[[i]])[0]) for i in range(400, 410)]
json.dump({"scores": proba[:, 1].tolist(), "single": single}, sys.stdout)
