"""Wide files: a column cap checked before any data is read, CSV headers wider than a read block, and compact
sketches for the small windows of wide files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import cli
from otel_mlmon.batch.reader import DataError, DataFile
from otel_mlmon.sketch import NumericSketch


def _wide_csv(path: Path, columns: int, rows: int, name_length: int = 6, seed: int = 0) -> list[str]:
    names = [f"f{i}".ljust(name_length, "_") for i in range(columns)]
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        handle.write(",".join(names) + "\n")
        for _ in range(rows):
            handle.write(",".join(f"{v:.2f}" for v in rng.normal(size=columns)) + "\n")
    return names


def test_a_million_column_csv_gets_the_cap_error_not_empty_csv(tmp_path, capsys) -> None:
    path = tmp_path / "million.csv"
    with open(path, "w") as handle:
        handle.write(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + ",".join(["1"] * 1_000_000) + "\n")
    code = cli.main(["evaluate", "--reference", str(path), "--analysis", str(path), "--output",
                     str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "1,000,000 columns, more than the 10,000 allowed; raise --max-columns" in err, err
    assert "Empty CSV" not in err


def test_the_cap_is_checked_before_reading_and_can_be_raised(files, tmp_path, capsys) -> None:
    argv = ["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
            "--prediction-column", "prediction", "--chunk-size", "1000", "--output", str(tmp_path / "o.csv")]
    assert cli.main([*argv, "--max-columns", "5"]) == 1
    assert "columns, more than the 5 allowed" in capsys.readouterr().err
    assert cli.main([*argv, "--max-columns", "11"]) == 0
    with pytest.raises(SystemExit):
        cli.main([*argv, "--max-columns", "0"])
    with pytest.raises(DataError, match="more than the 3 allowed"):
        DataFile(str(files["analysis_csv"]), max_columns=3).columns()


def test_a_csv_header_wider_than_a_read_block_is_read(tmp_path) -> None:
    path = tmp_path / "wide.csv"
    names = _wide_csv(path, 12_000, 3, name_length=100)  # a 1.2 MB header; the schema's block was 1 MiB
    data = DataFile(str(path), max_columns=12_000)
    assert data.columns() == names
    batch = next(data.batches(names[-2:]))
    expected = pd.read_csv(path, usecols=names[-2:])
    np.testing.assert_array_equal(batch[names[-1]], expected[names[-1]].to_numpy())


def test_compact_sketches_behave_like_dense_ones() -> None:
    values = np.array([1e-9, -3.0, 2.5, 1e6, -1e-5])
    dense = NumericSketch(0.5, 2.0)
    dense.update(values)
    compact = NumericSketch(0.5, 2.0)
    compact.update(values)
    assert compact.compact() is compact and compact._sparse is not None
    assert compact._counts.nbytes < dense._counts.nbytes / 100
    assert compact == dense and compact.to_dict() == dense.to_dict() and repr(compact) == repr(dense)
    assert compact.copy() == dense and NumericSketch(0.5, 2.0).merge(compact) == dense
    assert compact.rebucketed(0.0, 1.0, 7) == dense.rebucketed(0.0, 1.0, 7)
    compact.update([4.0])
    dense.update([4.0])
    assert compact == dense and compact._sparse is None  # an update makes it dense again
    assert NumericSketch.from_dict(dense.to_dict())._sparse is not None  # profiles load compact
