"""The demo's data: a churn dataset with drift injected from row ``DRIFT_FROM``, the model, its reference profile.

Two of the four features shift from ``DRIFT_FROM`` on (:data:`SHIFTS` says how). ``plan`` is a real change of the
customer base, which the model takes in its stride. ``monthly_charges`` is not: an upstream change adds fees to the
value the model receives, while what customers pay — and so whether they churn — stays the same. The model relies
on that feature (higher charges, more churn), so it predicts churn that does not come and its accuracy falls: the
drift alerts say where, the late labels show what it costs.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

WINDOW_ROWS = 500
BATCH_ROWS = 50
DRIFT_FROM = 1500
TRAIN_ROWS = 4000
REFERENCE_ROWS = 3000  # held-out labelled rows: the reference's drift and performance bands
SERVE_ROWS = 3000
STACK_ROWS = 3000  # rows `mlmon demo --stack` streams
FEATURES = ["tenure", "monthly_charges", "support_calls", "plan"]
PLANS = ["basic", "plus", "premium"]
PLAN_MIX, DRIFTED_PLAN_MIX = (0.5, 0.35, 0.15), (0.2, 0.3, 0.5)
CHARGES_SHIFT = 40.0
CAUSE = "monthly_charges"  # the shifted feature that costs accuracy
SHIFTS = {  # feature -> how it shifts from DRIFT_FROM on (printed by the demo)
    "monthly_charges": f"+{CHARGES_SHIFT:.0f} on every row, by a change upstream: customers pay and churn as "
                       "before, but the model relies on it",
    "plan": "customers move up: basic/plus/premium " + "/".join(f"{p:.0%}"[:-1] for p in PLAN_MIX) + " % -> "
            + "/".join(f"{p:.0%}"[:-1] for p in DRIFTED_PLAN_MIX) + " %",
}


def require_extras() -> None:
    """Exit with what to install when the demo's packages are missing."""
    missing = [name for name in ("sklearn", "pandas", "aiohttp") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"mlmon demo needs {', '.join(missing)}: pip install 'otel-mlmon[sklearn,processor,batch]'")


def churn(rows: int, seed: int, drift_from: int | None = None) -> Any:
    """A churn dataset: tenure (months), monthly charges, support calls, plan, the ``churned`` truth and an ``id``;
    from row ``drift_from`` on, the :data:`SHIFTS`."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    drifted = np.zeros(rows, dtype=bool) if drift_from is None else np.arange(rows) >= drift_from
    tenure = rng.gamma(2.0, 12.0, rows)
    charges = rng.normal(70, 20, rows)  # what the customer pays
    calls = rng.poisson(1.5, rows)
    plan = np.where(drifted, rng.choice(PLANS, rows, p=DRIFTED_PLAN_MIX), rng.choice(PLANS, rows, p=PLAN_MIX))
    logit = -1.0 - 0.08 * tenure + 0.06 * (charges - 70) + 0.8 * calls + 0.6 * (plan == "basic")
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    received = charges + np.where(drifted, CHARGES_SHIFT, 0.0)  # what the model is sent
    return pd.DataFrame({"tenure": tenure, "monthly_charges": received, "support_calls": calls.astype(float),
                         "plan": plan, "churned": churned, "id": [f"{seed}-{i}" for i in range(rows)]})


def churn_model(train: Any) -> Any:
    """The churn model: a scikit-learn Pipeline that takes the raw features (the plan as text), as a service would."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer([("plan", OrdinalEncoder(categories=[PLANS]), ["plan"])], remainder="passthrough",
                               verbose_feature_names_out=False)
    model = Pipeline([("encode", encode), ("trees", HistGradientBoostingClassifier(
        max_iter=60, categorical_features=[0], random_state=0))])
    with one_thread():
        return model.fit(train[FEATURES], train["churned"])


def one_thread() -> Any:
    """OpenMP and BLAS limited to one thread, from now until the context exits (or ``restore_original_limits()``):
    the demo's model is small, and on a busy machine the thread pools of its gradient boosting wait for each other
    (a fit took 0.5 s on one thread, 10 s on all of them)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def churn_profile(model: Any, rows: Any) -> Any:
    """The reference profile of held-out labelled ``rows`` (not the training rows, on which the model looks better
    than it is) with the model's outputs, windowed like the stream: drift and accuracy bands."""
    import numpy as np

    from otel_mlmon.engine.columns import build_profile
    from otel_mlmon.engine.windows import WindowSpec

    with one_thread():
        scores = model.predict_proba(rows[FEATURES])[:, 1]
    reference = {name: rows[name].to_numpy(dtype=object if name == "plan" else float) for name in FEATURES}
    reference["prediction"] = np.where(scores > 0.5, "1", "0").astype(object)
    reference["score"] = scores
    reference["churned"] = rows["churned"].astype(str).to_numpy(dtype=object)
    profile, _ = build_profile(reference, WindowSpec(chunk_size=WINDOW_ROWS), model="churn", version="1",
                               prediction_column="prediction", score_columns={"1": "score"},
                               target_column="churned", classes=["0", "1"])
    return profile


def demo_inputs(serve_rows: int = SERVE_ROWS, drift_from: int = DRIFT_FROM) -> tuple[Any, Any, Any]:
    """The fitted model, its reference profile and the serving rows (drift from ``drift_from``)."""
    model = churn_model(churn(TRAIN_ROWS, 1))
    profile = churn_profile(model, churn(REFERENCE_ROWS, 3))
    return model, profile, churn(serve_rows, 2, drift_from=drift_from)


def window_shares(model: Any, serving: Any) -> dict[int, tuple[float, float]]:
    """Per window of ``WINDOW_ROWS`` serving rows: the share the model predicts to churn and the share that did."""
    with one_thread():
        predicted = model.predict(serving[FEATURES])
    truth = serving["churned"].to_numpy()
    return {start // WINDOW_ROWS: (float(predicted[start:start + WINDOW_ROWS].mean()),
                                   float(truth[start:start + WINDOW_ROWS].mean()))
            for start in range(0, len(serving), WINDOW_ROWS)}


def prepare(folder: str, serve_rows: int = SERVE_ROWS, drift_from: int = DRIFT_FROM) -> dict[str, str]:
    """The demo stack's inputs, written to ``folder``: the pickled model, the reference profile, and the serving
    data (``id``, the features, the ``churned`` truth; drift from row ``drift_from``) that the load driver sends."""
    import pickle

    require_extras()
    os.makedirs(folder, exist_ok=True)
    model, profile, serving = demo_inputs(serve_rows, drift_from)
    paths = {"model": os.path.join(folder, "model.pkl"), "reference": os.path.join(folder, "reference.json"),
             "serving": os.path.join(folder, "serving.csv")}
    with open(paths["model"], "wb") as handle:
        pickle.dump(model, handle)
    profile.save(paths["reference"])
    serving.to_csv(paths["serving"], index=False)
    return paths
