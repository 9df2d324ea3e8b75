"""Zero-code: this file knows nothing of otel-mlmon.

Run: opentelemetry-instrument --traces_exporter console --metrics_exporter console --logs_exporter console \
         python examples/zero_code_app.py
Name the model with attributes (otherwise its class name is used).
"""

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X[:400], y[:400])
model.otel_mlmon_name = "cancer"
model.otel_mlmon_version = "1"
print(model.predict_proba(X[400:]).shape)
