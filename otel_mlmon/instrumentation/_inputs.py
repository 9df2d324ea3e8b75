"""Model inputs as columns: numpy arrays, pandas DataFrames, lists, dicts, scipy sparse matrices, torch tensors.

Nothing here imports pandas, scipy or torch: objects are recognised by their module and attributes. Iterators and
generators are never touched (the model consumes them; reading them first would change what it sees). Values
are not copied unless a conversion needs it; callers consume the result before the user's call returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from otel_mlmon.sketch import to_float

NUMERIC = "numeric"
CATEGORICAL = "categorical"


_NO_COLUMNS: Mapping[str, Any] = MappingProxyType({})


class InputBatch:
    """One call's features. ``numeric`` is (rows, len(numeric_names)) float64; ``categorical`` maps name to a
    1-D array of objects. ``rows`` is None when the input could not be read (the output's length is used).
    (A plain slotted class: one is made per model call, and a dataclass's default factories cost more.)"""

    __slots__ = ("categorical", "ids", "invalid", "names", "numeric", "numeric_names", "raw_invalid", "rows",
                 "segments", "sensitive")

    def __init__(self, rows: int | None, names: tuple[str, ...] = (), numeric_names: tuple[str, ...] = (),
                 numeric: np.ndarray | None = None, categorical: Mapping[str, np.ndarray] = _NO_COLUMNS,
                 invalid: Mapping[str, int] = _NO_COLUMNS) -> None:
        self.rows = rows
        self.names = names
        self.numeric_names = numeric_names
        self.numeric = numeric
        self.categorical = categorical
        self.invalid = invalid  # non-numbers met in numeric columns
        self.ids: list[str | None] | None = None  # prediction ids read from the id column (None: missing)
        self.segments: list[Any] | None = None  # raw values of the segment column, when configured and present
        self.sensitive: list[Any] | None = None  # raw values of the sensitive column, when configured and present
        self.raw_invalid: Mapping[str, np.ndarray] = _NO_COLUMNS  # the values of numeric columns with invalid ones

    def take(self, index: np.ndarray) -> InputBatch:
        """The features of the rows at ``index`` (a segment's rows), invalid values counted again on them."""
        numeric = self.numeric[index] if self.numeric is not None else None
        categorical = {name: values[index] for name, values in self.categorical.items()}
        invalid: dict[str, int] = {}
        raw: dict[str, np.ndarray] = {}
        for name, values in self.raw_invalid.items():
            part = values[index]
            bad = to_float(part)[1]
            if bad:
                invalid[name], raw[name] = bad, part
        batch = InputBatch(int(index.size), self.names, self.numeric_names, numeric, categorical, invalid)
        batch.raw_invalid = raw
        return batch

    def __repr__(self) -> str:
        return (f"InputBatch(rows={self.rows!r}, names={self.names!r}, categorical={list(self.categorical)!r}, "
                f"invalid={dict(self.invalid)!r})")


def _module_root(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def default_names(count: int) -> tuple[str, ...]:
    return tuple(f"feature_{i}" for i in range(count))


def _names_for(width: int, given: Sequence[str] | None, model: Any) -> tuple[str, ...]:
    if given is not None and len(given) == width:
        return tuple(str(n) for n in given)
    learned = getattr(model, "feature_names_in_", None)
    if learned is None:
        learned = getattr(model, "feature_names", None)  # xgboost.Booster
        if callable(learned):  # lightgbm.Booster.feature_name() is a method under another name
            learned = None
    if learned is not None and not isinstance(learned, str):
        try:
            names = [str(n) for n in learned]
        except TypeError:
            names = []
        if len(names) == width:
            return tuple(names)
    return default_names(width)


def read_input(x: Any, model: Any, feature_names: Sequence[str] | None, kinds: Mapping[str, str] | None,
               max_features: int, id_column: str | None = None, segment_column: str | None = None,
               sensitive_column: str | None = None) -> InputBatch:
    """Split an input into numeric and categorical columns (and the id, segment and sensitive columns, when named
    and present).

    Args:
        x: the first positional argument of the model call.
        model: the model (for learned feature names).
        feature_names: names given by the user, if any.
        kinds: known kind per feature name (from a reference profile or an earlier call).
        max_features: columns beyond this are not read.
        id_column: a column of prediction ids (DataFrames, dicts of columns, lists of row dicts): read into
            ``ids`` and left out of the features.
        segment_column: a column read (raw values) into ``segments``; it stays a feature.
        sensitive_column: a column read (raw values) into ``sensitive`` and left out of the features.
    """
    if id_column is not None or segment_column is not None or sensitive_column is not None:
        split = _split_columns(x, id_column, segment_column, sensitive_column)
        if split is not None:
            rest, found = split
            batch = read_input(rest, model, feature_names, kinds, max_features)
            if id_column in found:
                batch.ids = [_id_text(v) for v in found[id_column]]
            batch.segments = found.get(segment_column)  # type: ignore[arg-type]
            batch.sensitive = found.get(sensitive_column)  # type: ignore[arg-type]
            return batch
    if isinstance(x, Iterator) or x is None:
        return InputBatch(rows=None)
    root = _module_root(x)
    if root == "pandas":
        if hasattr(x, "columns"):
            return _from_frame(x, kinds, max_features)
        if hasattr(x, "index") and hasattr(x, "to_numpy"):  # a Series: one row indexed by feature name
            return _from_matrix(np.asarray(x.to_numpy(), dtype=object).reshape(1, -1),
                                [str(i) for i in x.index], kinds, max_features)
    if root == "torch" and hasattr(x, "detach"):
        if x.dim() > 2:
            return InputBatch(rows=int(x.shape[0]))
        x = x.detach().cpu().numpy()
    elif root == "scipy" and hasattr(x, "tocsr") and hasattr(x, "shape"):
        width = min(x.shape[1], max_features)
        block = x.tocsr()[:, :width].toarray()
        names = _names_for(x.shape[1], feature_names, model)[:width]
        return _from_numeric(np.asarray(block, dtype=np.float64), names)
    elif root in ("xgboost", "lightgbm"):  # DMatrix / Dataset: opaque, rows only
        num_row = getattr(x, "num_row", None) or getattr(x, "num_data", None)
        return InputBatch(rows=int(num_row()) if callable(num_row) else None)
    if isinstance(x, Mapping):
        return _from_mapping(x, kinds, max_features)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Mapping):
        keys = [str(k) for k in x[0]]
        matrix = np.empty((len(x), len(keys)), dtype=object)
        for i, row in enumerate(x):
            for j, key in enumerate(keys):
                matrix[i, j] = row.get(key) if isinstance(row, Mapping) else None
        return _from_matrix(matrix, keys, kinds, max_features)
    array = x if isinstance(x, np.ndarray) else np.asarray(x)
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)  # one row of features
    elif array.ndim > 2:
        return InputBatch(rows=int(array.shape[0]))
    names = _names_for(array.shape[1], feature_names, model)
    if array.dtype.kind in "fiub" and not (kinds and any(kinds.get(n) == CATEGORICAL for n in names)):
        width = min(array.shape[1], max_features)
        return _from_numeric(np.asarray(array[:, :width], dtype=np.float64), names[:width])
    return _from_matrix(array.astype(object, copy=False), list(names), kinds, max_features)


def _id_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or str(value) in ("", "<NA>", "NaT"):
        return None
    return str(value.item() if isinstance(value, np.generic) else value)


def _split_columns(x: Any, id_column: str | None, segment_column: str | None, sensitive_column: str | None
                   ) -> tuple[Any, dict[str, list[Any]]] | None:
    """``(the input without the id and sensitive columns, {column: its raw values})`` for the named columns that
    ``x`` has, or None when it has none of them. Only what is read for telemetry loses columns: the model's own
    input is never changed."""
    wanted = [c for c in (id_column, segment_column, sensitive_column) if c is not None]
    drop = {c for c in (id_column, sensitive_column) if c is not None}
    if _module_root(x) == "pandas" and hasattr(x, "columns"):
        positions: dict[str, int] = {}
        for j, c in enumerate(x.columns):
            positions.setdefault(str(c), j)
        present = [c for c in wanted if c in positions]
        if not present:
            return None
        found = {c: x.iloc[:, positions[c]].tolist() for c in present}
        if drop.intersection(present):
            x = x.iloc[:, [j for j, c in enumerate(x.columns) if str(c) not in drop]]
        return x, found
    if isinstance(x, Mapping):
        present = [c for c in wanted if c in x]
        if not present:
            return None
        found = {c: list(x[c]) if isinstance(x[c], (list, tuple, np.ndarray)) else [x[c]] for c in present}
        if drop.intersection(present):
            x = {k: v for k, v in x.items() if k not in drop}
        return x, found
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Mapping):
        present = [c for c in wanted if c in x[0]]
        if not present:
            return None
        found = {c: [row.get(c) if isinstance(row, Mapping) else None for row in x] for c in present}
        if drop.intersection(present):
            x = [{k: v for k, v in row.items() if k not in drop} if isinstance(row, Mapping) else row for row in x]
        return x, found
    return None


def _from_numeric(block: np.ndarray, names: Sequence[str]) -> InputBatch:
    names = tuple(names)
    return InputBatch(rows=block.shape[0], names=names, numeric_names=names, numeric=block)


def _guess_kind(values: np.ndarray) -> str:
    """Numeric when the first values are numbers or None (bools count as numbers), else categorical."""
    for item in values[:64]:
        if item is not None and not isinstance(item, (int, float, np.number)):
            return CATEGORICAL
    return NUMERIC


def _from_matrix(matrix: np.ndarray, names: Sequence[str], kinds: Mapping[str, str] | None,
                 max_features: int) -> InputBatch:
    width = min(matrix.shape[1], max_features)
    columns = {str(names[j]): matrix[:, j] for j in range(width)}
    return _from_columns(columns, matrix.shape[0], kinds)


def _from_columns(columns: Mapping[str, Any], rows: int, kinds: Mapping[str, str] | None) -> InputBatch:
    numeric_names: list[str] = []
    numeric_columns: list[np.ndarray] = []
    categorical: dict[str, np.ndarray] = {}
    invalid: dict[str, int] = {}
    raw_invalid: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        array = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
        kind = (kinds or {}).get(name)
        if kind is None:
            kind = NUMERIC if array.dtype.kind in "fiu" else _guess_kind(array.ravel())
        if kind == NUMERIC:
            floats, bad = to_float(array)
            numeric_names.append(name)
            numeric_columns.append(floats.ravel())
            if bad:
                invalid[name] = bad
                raw_invalid[name] = array.ravel()
        else:
            categorical[name] = array.ravel()
    numeric = np.column_stack(numeric_columns) if numeric_columns else None
    batch = InputBatch(rows=rows, names=tuple(columns), numeric_names=tuple(numeric_names), numeric=numeric,
                       categorical=categorical, invalid=invalid)
    if raw_invalid:
        batch.raw_invalid = raw_invalid
    return batch


def _from_frame(frame: Any, kinds: Mapping[str, str] | None, max_features: int) -> InputBatch:
    names = [str(c) for c in frame.columns[:max_features]]
    rows = int(frame.shape[0])
    dtypes = frame.dtypes.iloc[:max_features]
    numeric_positions = [j for j, dtype in enumerate(dtypes)
                         if getattr(dtype, "kind", "O") in "fiu" and (kinds or {}).get(names[j]) != CATEGORICAL]
    if len(numeric_positions) == len(names):
        block = frame.iloc[:, :max_features].to_numpy(dtype=np.float64, na_value=np.nan)
        return _from_numeric(block, names)
    columns: dict[str, Any] = {}
    for j, name in enumerate(names):
        column = frame.iloc[:, j]
        if j in numeric_positions:
            columns[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        elif getattr(dtypes.iloc[j], "kind", "O") == "b" and (kinds or {}).get(name) == NUMERIC:
            columns[name] = column.to_numpy(dtype=np.float64)
        else:
            columns[name] = column.to_numpy(dtype=object)
    frame_kinds = dict(kinds or {})
    for j, name in enumerate(names):
        if j not in numeric_positions and name not in frame_kinds:
            # DESIGN: pandas object/bool/category/string columns are categorical.
            frame_kinds[name] = CATEGORICAL
    return _from_columns(columns, rows, frame_kinds)


def _from_mapping(mapping: Mapping[Any, Any], kinds: Mapping[str, str] | None, max_features: int) -> InputBatch:
    items = list(mapping.items())[:max_features]
    if items and all(isinstance(v, (list, tuple, np.ndarray)) for _, v in items):  # columns
        lengths = {len(v) for _, v in items}
        if len(lengths) == 1:
            return _from_columns({str(k): v for k, v in items}, lengths.pop(), kinds)
    # One row given as {feature: value}.
    return _from_columns({str(k): np.array([v], dtype=object) for k, v in items}, 1, kinds)
