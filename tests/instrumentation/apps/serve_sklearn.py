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
# Models whose predict comes from a mixin (LinearClassifierMixin), used bare: named by their class.
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis  # noqa: E402

bare = LogisticRegression(max_iter=5000).fit(X[:400], y[:400]).predict(X[400:405])
lda = LinearDiscriminantAnalysis().fit(X[:400], y[:400]).predict(X[400:404])
# Which otel-mlmon instrumentors did opentelemetry-instrument load from the entry points?
from otel_mlmon.instrumentation.lightgbm import LightGBMInstrumentor  # noqa: E402
from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor  # noqa: E402
from otel_mlmon.instrumentation.torch import TorchInstrumentor  # noqa: E402
from otel_mlmon.instrumentation.xgboost import XGBoostInstrumentor  # noqa: E402

loaded = {cls.__name__: cls().is_instrumented_by_opentelemetry
          for cls in (SklearnInstrumentor, XGBoostInstrumentor, LightGBMInstrumentor, TorchInstrumentor)}
json.dump({"scores": proba[:, 1].tolist(), "single": single, "bare": bare.tolist(), "lda": lda.tolist(),
           "loaded": loaded}, sys.stdout)
