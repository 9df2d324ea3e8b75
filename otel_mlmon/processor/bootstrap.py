"""Reference profiles for models that stream without one: built from their first rows (in event-time order)."""

from __future__ import annotations

import numpy as np

from otel_mlmon.engine.evaluate import Policy
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.processor.store import Joined
from otel_mlmon.sketch import category_key


def bootstrap_profile(model: str, version: str, rows: list[Joined], window_rows: int,
                      policy: Policy | None = None) -> ReferenceProfile | None:
    """A reference profile from a model's first rows: its outputs, and its features when captured."""
    from otel_mlmon.engine.columns import build_profile, sorted_classes
    from otel_mlmon.engine.windows import WindowSpec

    if not rows:
        return None
    first = rows[0].outputs
    columns: dict[str, np.ndarray] = {}
    scores = first.get("scores", {})
    if first.get("value") is not None:
        task = "regression"
        columns["prediction"] = np.asarray([r.outputs.get("value", np.nan) for r in rows], dtype=np.float64)
    else:
        task = "classification"
        if first.get("label") is not None:
            columns["prediction"] = np.asarray([r.outputs.get("label") for r in rows], dtype=object)
    for key in scores:
        columns[f"score_{key}" if key else "score"] = np.asarray(
            [r.outputs.get("scores", {}).get(key, np.nan) for r in rows], dtype=np.float64)
    for name in first.get("features", {}):
        values = [r.outputs.get("features", {}).get(name) for r in rows]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        columns[name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64) if numeric \
            else np.asarray(values, dtype=object)
    if not columns:
        return None
    seen = {category_key(r.outputs.get("label")) for r in rows} if task == "classification" else set()
    classes = sorted_classes(c for c in seen if c is not None)
    if "" in scores and len(classes) != 2:
        classes = ["0", "1"]
    score_columns = ({classes[-1]: "score"} if "score" in columns and classes else
                     {name[len("score_"):]: name for name in columns if name.startswith("score_")})
    profile, _ = build_profile(columns, WindowSpec(chunk_size=window_rows), model=model, version=version, task=task,
                               prediction_column="prediction" if "prediction" in columns else None,
                               score_columns=score_columns, target_column="target",
                               classes=classes if task == "classification" else None, policy=policy)
    return profile
