"""Reference profiles from files and requests: anything malformed is one ValueError with a one-line message.

Never RecursionError, KeyError, TypeError, OverflowError or a profile that later breaks the engine: wrong types,
non-finite numbers, window bounds out of range and deeply nested JSON are refused by name.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from otel_mlmon.engine.evaluate import evaluate_window, reference_results
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.windows import WindowSpec
from tests.engine.synthetic import analysis_window, categorical, numeric, profile_from


@pytest.fixture(scope="module")
def valid() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    profile, _ = profile_from({"age": numeric(rng, 1200), "plan": categorical(rng, 1200)}, chunk=300)
    profile.classes = ["0", "1"]
    profile.reference_performance = {"accuracy": 0.9}
    return json.loads(json.dumps(profile.to_dict()))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the field at a dotted path (list positions as numbers)."""
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


def _first_reference_value(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        document["reference_values"][next(iter(document["reference_values"]))][0][0] = value
    return mutate


CASES = {
    "columns as a list": (_set("columns", []), "columns must be an object, got a list"),
    "column as a number": (_set("columns.age", 3), "columns['age'] must be an object"),
    "model as a list": (_set("model", ["a"]), "model must be a string, got a list"),
    "unknown task": (_set("task", "clustering"), "task must be one of"),
    "no task": (lambda d: d.pop("task"), "task is missing"),
    "unknown kind": (_set("columns.age.kind", "text"), "columns['age'].kind must be"),
    "infinite scale": (_set("columns.age.sketch.scale", float("inf")), "columns['age'].sketch.scale must be a "
                                                                       "finite number"),
    "zero scale": (_set("columns.age.sketch.scale", 0.0), "columns['age'].sketch.scale must be > 0"),
    "NaN mean": (_set("columns.age.sketch.mean", float("nan")), "columns['age'].sketch.mean must be a finite"),
    "precision 11": (_set("columns.age.sketch.precision", 11), "columns['age'].sketch.precision must be in 1..10"),
    "key beyond any double": (_set("columns.age.sketch.keys.0", 2**70), "columns['age'].sketch.keys[0] must be in"),
    "negative count": (_set("columns.age.sketch.counts.0", -1), "columns['age'].sketch.counts[0] must be in"),
    "counts not adding up": (_set("columns.age.sketch.count", 1), "bucket counts add up to"),
    "bin key as text": (_set("columns.age.bin_keys.0", "x"), "columns['age'].bin_keys[0] must be a whole number"),
    "categorical counts as a list": (_set("columns.plan.sketch.counts", [1]), "columns['plan'].sketch.counts must "
                                                                              "be an object"),
    "category count NaN": (_set("columns.plan.sketch.counts.a", float("nan")), "must be a whole number"),
    "chunk_size 10**30": (_set("window", {"chunk_size": 10**30}), "window: chunk_size must be a whole number of "
                                                                   "rows from 1 to 10,000,000"),
    "chunk_size 1e30": (_set("window", {"chunk_size": 1e30}), "got 1e+30"),
    "chunk_size 0": (_set("window", {"chunk_size": 0}), "chunk_size must be a whole number"),
    "chunk_size as text": (_set("window", {"chunk_size": "100"}), "got '100'"),
    "too many chunks": (_set("window", {"chunks": 10**6 + 1}), "chunks must be a whole number of windows from 1 "
                                                                "to 1,000,000"),
    "window below 1 s": (_set("window", {"window": "500ms"}), "window must be from 1s to 366d"),
    "window over 366 d": (_set("window", {"window": "367d"}), "window must be from 1s to 366d"),
    "window as a number": (_set("window", {"window": 3600}), "window must be a duration"),
    "window as a list": (_set("window", [1]), "window: must be an object"),
    "two windows": (_set("window", {"chunk_size": 10, "chunks": 3}), "exactly one of"),
    "reference value inf": (_first_reference_value(float("inf")), "must be a finite number"),
    "reference values short": (lambda d: d["reference_values"][next(iter(d["reference_values"]))].pop(),
                               "values for 4 reference windows"),
    "reference window without rows": (lambda d: d["reference_windows"][0].pop("rows"),
                                      "reference_windows[0].rows is missing"),
    "more labeled rows than rows": (_set("reference_windows.0.labeled_rows", 10**12),
                                    "reference_windows[0].labeled_rows must be in 0..300"),
    "class as an object": (_set("classes", [{}]), "classes[0] must be a string, got an object"),
    "performance NaN": (_set("reference_performance", {"accuracy": float("nan")}), "must be a finite number"),
    "rows as a float": (_set("rows", 1.5), "rows must be a whole number, got 1.5"),
    "huge number": (_set("rows", 10**400), "rows must be in 0..4,611,686,018,427,387,904, got a 401-digit number"),
}


def _refused(text: str, match: str) -> str:
    with pytest.raises(ValueError) as caught:
        ReferenceProfile.loads(text, "reference profile 'p.json'")
    message = str(caught.value)
    assert type(caught.value) is ValueError and "\n" not in message and len(message) < 400, message
    assert message.startswith("reference profile 'p.json'") and match in message, message
    return message


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_profiles_are_one_clear_value_error(valid: dict[str, Any], case: str) -> None:
    document = copy.deepcopy(valid)
    mutate, match = CASES[case]
    mutate(document)
    message = _refused(json.dumps(document), match)
    assert "rebuild it with `mlmon reference build`" in message


def test_a_valid_profile_loads_and_evaluates(valid: dict[str, Any]) -> None:
    profile = ReferenceProfile.loads(json.dumps(valid))
    assert profile.to_dict() == valid
    assert reference_results(profile) and evaluate_window(profile, analysis_window(
        profile, {"age": numeric(np.random.default_rng(1), 300), "plan": categorical(np.random.default_rng(1), 300)}))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_json_nested_100k_deep_is_a_one_line_error(valid: dict[str, Any], where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    text = deep if where == "top" else json.dumps(valid).replace('"classes": ["0", "1"]', f'"classes": {deep}')
    _refused(text, "nested too deeply")


def test_numbers_beyond_pythons_digit_limit_are_unreadable_json(valid: dict[str, Any]) -> None:
    _refused(json.dumps(valid).replace('"rows": 1200', '"rows": ' + "9" * 5000), "not readable JSON")


def test_load_reads_files_and_says_which(valid: dict[str, Any], tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**valid, "columns": []}))
    with pytest.raises(ValueError, match=f"reference profile '{path}' is invalid: columns must be an object"):
        ReferenceProfile.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not readable JSON"):
        ReferenceProfile.load(path)


def test_python_callers_get_the_same_checks(valid: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="columns must be an object"):
        ReferenceProfile.from_dict({**valid, "columns": ["age"]})
    with pytest.raises(ValueError, match="must be a whole number of rows from 1 to 10,000,000"):
        WindowSpec(chunk_size=10**7 + 1)
    assert WindowSpec(chunk_size=10**7).chunk_size == 10**7
    assert WindowSpec(window="366d").seconds == 366 * 86400 and WindowSpec(window="1s").seconds == 1
