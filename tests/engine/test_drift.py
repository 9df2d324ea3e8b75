"""Every drift value against an independent computation: scipy / numpy on the same bins, scipy on raw data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from otel_mlmon.engine.drift import (
    METHODS,
    CategoricalComparison,
    ChiSquared,
    CramerVonMises,
    Hellinger,
    JensenShannon,
    KolmogorovSmirnov,
    LInfinity,
    NumericComparison,
    PopulationStabilityIndex,
    Wasserstein,
    cvm_p_value,
    resolve_methods,
)
from otel_mlmon.engine.profile import bin_keys, choose_bucketing
from otel_mlmon.sketch import CategoricalSketch, NumericSketch

CASES = {
    "same": lambda rng, n: rng.normal(5, 2, n),
    "mean": lambda rng, n: rng.normal(6, 2, n),
    "scale": lambda rng, n: rng.normal(5, 3, n),
    "skewed": lambda rng, n: rng.lognormal(1.5, 0.5, n),
    "integers": lambda rng, n: rng.integers(0, 7, n).astype(float),
}


def _numeric(reference: np.ndarray, current: np.ndarray) -> NumericComparison:
    first = NumericSketch()
    first.update(reference)
    center, scale = choose_bucketing(first)
    ref, cur = NumericSketch(center, scale), NumericSketch(center, scale)
    ref.update(reference)
    cur.update(current)
    return NumericComparison.build(ref, cur, bin_keys(ref), float(np.std(reference)))


def _coarse_by_hand(comparison: NumericComparison, reference: np.ndarray, current: np.ndarray,
                    ref: NumericSketch) -> tuple[np.ndarray, np.ndarray]:
    """The coarse bins recomputed from raw values with numpy: the same bin edges, as values."""
    keys = bin_keys(ref)
    edges, _ = ref.bounds(keys)
    full = np.concatenate([[-np.inf], edges, [np.inf]])
    return (np.histogram(reference, full)[0].astype(float), np.histogram(current, full)[0].astype(float))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_agrees_with_scipy_on_raw_data(case: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = CASES["same"](rng, 4000) if case != "integers" else rng.integers(0, 6, 4000).astype(float)
    current = CASES[case](rng, 3000)
    ours = KolmogorovSmirnov().compute(_numeric(reference, current))
    exact = stats.ks_2samp(reference, current, method="asymp")
    assert abs(ours.value - exact.statistic) < 0.005
    if ours.value == pytest.approx(exact.statistic, abs=1e-12):
        assert ours.p_value == pytest.approx(exact.pvalue, rel=1e-9)
    assert (ours.p_value < 0.01) == (exact.pvalue < 0.01)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cramer_von_mises_agrees_with_scipy_on_raw_data(case: str, seed: int) -> None:
    """ω² · n·m / (n + m) is scipy's statistic T: within 1 % on continuous data (the sketch's buckets), and the
    same p-value for the same T; on integers (ties everywhere, which scipy ranks by midranks and the buckets hold
    as one value) the same verdict."""
    rng = np.random.default_rng(seed)
    reference = CASES["same"](rng, 4000) if case != "integers" else rng.integers(0, 6, 4000).astype(float)
    current = CASES[case](rng, 3000)
    ours = CramerVonMises().compute(_numeric(reference, current))
    exact = stats.cramervonmises_2samp(reference, current, method="asymptotic")
    statistic = ours.value * 4000 * 3000 / 7000
    if exact.pvalue > 1e-6:  # where the limit's series holds (below, see the next test)
        assert cvm_p_value(exact.statistic, 4000, 3000) == pytest.approx(exact.pvalue, rel=1e-9)
    if case != "integers":
        assert statistic == pytest.approx(exact.statistic, rel=0.01, abs=0.002)
        if exact.pvalue > 1e-6:
            assert ours.p_value == pytest.approx(exact.pvalue, rel=0.05, abs=1e-3)
        else:
            assert ours.p_value < 1e-6
    assert (ours.p_value < 0.01) == (exact.pvalue < 0.01)


def test_cramer_von_mises_p_value_falls_with_the_statistic_past_the_series() -> None:
    """Past where the limit's series holds (scipy's gives 2e-7 at T = 737, more than at T = 10), the p-value
    goes on falling: the tail's own form."""
    values = [cvm_p_value(t, 200_000, 200_000) for t in (0.5, 1, 2, 2.9, 3.1, 5, 10, 50, 737)]
    assert all(a > b for a, b in zip(values, values[1:-1])) and values[-1] <= values[-2]
    n = 10**9  # the normalized statistic is T itself: no jump where the series stops (3)
    assert cvm_p_value(3.0 + 1e-7, n, n) == pytest.approx(cvm_p_value(3.0 - 1e-7, n, n), rel=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_binned_methods_equal_numpy_and_scipy_on_the_same_bins(case: str) -> None:
    rng = np.random.default_rng(11)
    reference, current = CASES["same"](rng, 5000), CASES[case](rng, 4000)
    comparison = _numeric(reference, current)
    first = NumericSketch()
    first.update(reference)
    ref = NumericSketch(*choose_bucketing(first))
    ref.update(reference)
    r, c = _coarse_by_hand(comparison, reference, current, ref)
    np.testing.assert_array_equal(comparison.coarse_reference, r)
    np.testing.assert_array_equal(comparison.coarse_current, c)
    p, q = r / r.sum(), c / c.sum()
    assert JensenShannon().compute(comparison).value == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert PopulationStabilityIndex().compute(comparison).value == pytest.approx(
        np.sum((qe - pe) * np.log(qe / pe)), rel=1e-12)
    assert Hellinger().compute(comparison).value == pytest.approx(
        np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)), rel=1e-12, abs=1e-15)
    keep = (r + c) > 0
    chi2 = stats.chi2_contingency(np.vstack([r[keep], c[keep]]), correction=False)
    assert JensenShannon().compute(comparison).p_value == pytest.approx(chi2.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("case", ["same", "mean", "scale", "skewed"])
def test_wasserstein_agrees_with_scipy_on_raw_data(case: str) -> None:
    rng = np.random.default_rng(5)
    reference, current = CASES["same"](rng, 5000), CASES[case](rng, 4000)
    ours = Wasserstein().compute(_numeric(reference, current)).value
    exact = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert ours == pytest.approx(exact, abs=0.01)


def _categorical(ref_values: list[str], cur_values: list[str]) -> CategoricalComparison:
    ref, cur = CategoricalSketch(), CategoricalSketch()
    ref.update(ref_values)
    cur.update(cur_values)
    return CategoricalComparison.build(ref, cur)


def test_categorical_methods_equal_scipy_with_new_and_missing_categories() -> None:
    rng = np.random.default_rng(3)
    reference = rng.choice(list("abcd"), 3000, p=[0.4, 0.3, 0.2, 0.1]).tolist()
    current = rng.choice(list("abce"), 2000, p=[0.3, 0.3, 0.2, 0.2]).tolist()  # d vanished, e is new
    comparison = _categorical(reference, current)
    assert comparison.categories == ("a", "b", "c", "d", "e")
    r, c = comparison.reference, comparison.current
    p, q = r / r.sum(), c / c.sum()
    for method in (JensenShannon(), PopulationStabilityIndex(), Hellinger(), LInfinity(), ChiSquared()):
        value = method.compute(comparison).value
        assert np.isfinite(value)
    assert JensenShannon().compute(comparison).value == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert LInfinity().compute(comparison).value == pytest.approx(np.max(np.abs(p - q)))
    chi2 = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    result = ChiSquared().compute(comparison)
    assert result.p_value == pytest.approx(chi2.pvalue, rel=1e-9, abs=1e-300)
    assert result.value == pytest.approx(np.sqrt(0.5 * np.sum((p - q) ** 2 / (p + q))))


def test_identical_distributions_give_zero() -> None:
    values = ["a", "b", "b", "c"] * 50
    comparison = _categorical(values, values)
    for method in (JensenShannon(), PopulationStabilityIndex(), Hellinger(), LInfinity(), ChiSquared()):
        assert method.compute(comparison).value == pytest.approx(0.0, abs=1e-12)


def test_empty_current_gives_nan_not_an_error() -> None:
    reference = np.random.default_rng(0).normal(size=100)
    comparison = _numeric(reference, np.array([]))
    assert np.isnan(KolmogorovSmirnov().compute(comparison).value)
    assert np.isnan(Wasserstein().compute(comparison).value)


def test_methods_are_conformant() -> None:
    import pickle

    for name, method in METHODS.items():
        assert method.name == name and method.kinds and all(0 < f < 1 for f in method.floors.values())
        assert pickle.loads(pickle.dumps(method)) == method
        assert repr(method).endswith("()")


def test_resolve_methods() -> None:
    assert [m.name for m in resolve_methods(None, "numeric")] == ["jensen_shannon", "kolmogorov_smirnov"]
    assert [m.name for m in resolve_methods(["psi", "chi2"], "numeric")] == ["psi"]
    with pytest.raises(ValueError, match="unknown drift method"):
        resolve_methods(["energy"], "numeric")
