"""The executor side of ``mlmon evaluate --engine spark``: partial window states, and their merge on the driver.

Spark hands each partition of a dataset to a Python worker as Arrow record batches (``mapInArrow``). The functions
here turn those batches into the very numpy batches the local reader makes (``reader.to_numpy``; CSV columns come
from Spark as text and are parsed as pyarrow's CSV reader parses them), give every row its place in file order
(file, split, position in the split) and its window (the local engine's rules: ``order.event_microseconds``,
``WindowSpec.time_windows``), and feed the local engine's accumulator (``runner._Accumulator``). A partition's
windows leave as pickled partial states; the driver merges them (``merge_states``): sketches merge exactly (bucket
counts add; moments merge by Chan's formulas), row counts add, first and last times are the min and max, and a
categorical column's categories are capped as the local engine caps them — the first ``max_categories`` distinct
values in file order — because each partial keeps every category with the place of its first row.

Nothing here imports pyspark: the functions run inside Spark's workers and are tested without Spark.
"""

from __future__ import annotations

import bisect
import math
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon.batch.order import _ordered, event_microseconds, id_strings
from otel_mlmon.batch.reader import DataError, _pyarrow, epoch_seconds, to_numpy
from otel_mlmon.batch.runner import _Accumulator, _Plan
from otel_mlmon.engine.drift import CATEGORICAL
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key

# Columns the Spark side adds (names no data file is expected to have).
FILE, BLOCK, POS = "__mlmon_file", "__mlmon_block", "__mlmon_pos"
TIME, ID, WINDOW, LABEL, STATE = "__mlmon_time", "__mlmon_id", "__mlmon_window", "__mlmon_label", "__mlmon_state"
UNCAPPED = 2**62  # a partial keeps every category; the cap is applied on the merged window

OrderKey = tuple[int, int, int]  # (file number in path order, split start byte, position in the split)


@dataclass(frozen=True)
class Source:
    """How a dataset's columns come out of Spark.

    ``text_types``: for CSV, every column is read by Spark as text and parsed here to the type pyarrow's CSV reader
    infers for it (the local reader's types), with its null spellings; None for Parquet, whose columns come as
    they are. ``files``: the dataset's files in path order (a row's file number is its place here).
    """

    path: str
    files: tuple[str, ...] = ()
    text_types: Mapping[str, Any] | None = None
    nanoseconds: frozenset[str] = frozenset()  # Parquet nanosecond timestamps, which Spark reads as whole numbers

    def numpy(self, batch: Any, names: Iterable[str], rename: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
        """Columns of an Arrow batch (or table) as the local reader gives them (``rename``: batch column -> the
        data column whose type it has)."""
        out = {}
        for name in names:
            array = batch.column(name)
            if hasattr(array, "combine_chunks"):
                array = array.combine_chunks()
            source_name = (rename or {}).get(name, name)
            if self.text_types is not None:
                array = parse_text(array, self.text_types[source_name], self.path, source_name)
            elif source_name in self.nanoseconds:
                pa = _pyarrow()
                array = pa.compute.cast(array, pa.int64()).cast(pa.timestamp("ns"))
            out[name] = to_numpy(array, self.path, source_name)
        return out


def parse_text(array: Any, arrow_type: Any, path: str, name: str) -> Any:
    """A CSV column read as text, parsed as pyarrow's CSV reader parses a column of that type: strings keep
    empty fields as "" (strings are never null), other types take pyarrow's null spellings ("", "NA", "null", …)
    as null and its true/false spellings for booleans."""
    pa = _pyarrow()
    pc = pa.compute
    options = pa.csv.ConvertOptions()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pc.fill_null(array, "")
    nulls = pc.or_kleene(pc.is_null(array), pc.is_in(array, value_set=pa.array(options.null_values)))
    nulls = pc.fill_null(nulls, True)
    if pa.types.is_null(arrow_type):
        return pa.nulls(len(array))
    if pa.types.is_boolean(arrow_type):
        true = pc.is_in(array, value_set=pa.array(options.true_values))
        false = pc.is_in(array, value_set=pa.array(options.false_values))
        bad = pc.invert(pc.or_(pc.or_(nulls, true), false))
        if pc.any(bad).as_py():
            raise DataError(f"{path}: column {name!r} has values that are not booleans (its first rows are)")
        return pc.if_else(nulls, pa.scalar(None, pa.bool_()), true)
    try:
        return pc.cast(pc.if_else(nulls, pa.scalar(None, pa.string()), array), arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{path}: cannot be read as csv: column {name!r} has a value that is not of the type "
                        f"{arrow_type} its first rows have: {exc}") from None


def positions(batch: Any, counters: dict[tuple[str, int], int],
              files: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(file number, split start, position in the split) of each row of a batch. A Spark task reads its splits
    one after the other, each in file order, so counting rows per split gives their place in the file."""
    names = batch.column(FILE).to_numpy(zero_copy_only=False)
    blocks = np.asarray(batch.column(BLOCK).to_numpy(zero_copy_only=False), dtype=np.int64)
    n = len(names)
    numbers = np.empty(n, dtype=np.int64)
    places = np.empty(n, dtype=np.int64)
    if n == 0:
        return numbers, blocks, places
    change = np.flatnonzero((names[1:] != names[:-1]) | (blocks[1:] != blocks[:-1])) + 1
    for begin, end in zip([0, *change.tolist()], [*change.tolist(), n]):
        key = (str(names[begin]), int(blocks[begin]))
        if key[0] not in files:
            raise DataError(f"row of {key[0]!r}, which is not among the dataset's files (a file added while it was "
                            "read?)")
        first = counters.get(key, 0)
        counters[key] = first + end - begin
        numbers[begin:end] = files[key[0]]
        places[begin:end] = np.arange(first, first + end - begin, dtype=np.int64)
    return numbers, blocks, places


@dataclass(frozen=True)
class Layout:
    """What an executor needs to window the rows of one dataset (picklable: shipped with the closures)."""

    plan: _Plan
    source: Source
    names: tuple[str, ...]  # data columns to read (sketched columns, timestamp, id)
    id_column: str | None  # the id column, when it orders ties of event time
    bounds: RowBounds | None = None  # row windows of data out of event-time order: each window's first key
    ranks: SplitRanks | None = None  # row windows of data in event-time order: each split's first rank

    @property
    def timestamp(self) -> str | None:
        return self.plan.columns.timestamp_column

    def times(self, batch: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Epoch seconds of each row (the local engine's ``epoch_seconds``), or None without a timestamp."""
        name = self.timestamp
        return epoch_seconds(batch[name], self.source.path, name) if name else None

    def event_keys(self, batch: Mapping[str, np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Event time (whole microseconds) of each of ``rows`` rows, and the id column's values (for ties), as row
        windows order them; 0 and no ids without a timestamp column (the file's order alone)."""
        name = self.timestamp
        if name is None:
            return np.zeros(rows, dtype=np.int64), None
        ids = batch[self.id_column] if self.id_column else None
        return event_microseconds(batch[name], self.source.path, name), ids

    def windows(self, batch: Mapping[str, np.ndarray], times: np.ndarray | None,
                order: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """The window key of each row: a time window's start (epoch seconds), or a row window's number."""
        spec = self.plan.spec
        if not spec.by_rows:
            assert times is not None
            if np.isnan(times).any():
                raise DataError(f"{self.source.path}: timestamp column {self.timestamp!r} has empty values; "
                                "time windows need a time on every row")
            return spec.time_windows(times)
        if self.ranks is not None:
            return self.ranks.windows(spec, *order).astype(np.float64)
        assert self.bounds is not None
        micros, ids = self.event_keys(batch, len(order[0]))
        return self.bounds.windows(micros, ids, *order).astype(np.float64)


@dataclass(frozen=True)
class SplitRanks:
    """Data already in event-time order (the local engine's fast path): a row's rank is its split's first rank
    plus its position in the split."""

    offsets: Mapping[tuple[int, int], int]  # (file number, split start) -> rank of the split's first row
    total: int

    def windows(self, spec: Any, files: np.ndarray, blocks: np.ndarray, places: np.ndarray) -> np.ndarray:
        firsts = np.empty(len(files), dtype=np.int64)
        change = np.flatnonzero((files[1:] != files[:-1]) | (blocks[1:] != blocks[:-1])) + 1
        for begin, end in zip([0, *change.tolist()], [*change.tolist(), len(files)]):  # one look-up per split
            firsts[begin:end] = self.offsets[(int(files[begin]), int(blocks[begin]))]
        return np.asarray(spec.rank_windows(firsts + places, self.total))


def split_summaries(layout: Layout, batches: Iterable[Any]) -> Iterator[dict[str, list[Any]]]:
    """Each split of a partition: its rows, whether they are in event-time order (``order._ordered``, the local
    engine's check), and its first and last keys (event time in microseconds, id text)."""
    counters: dict[tuple[str, int], int] = {}
    files = {name: i for i, name in enumerate(layout.source.files)}
    splits: dict[tuple[int, int], dict[str, Any]] = {}
    for record_batch in batches:
        if record_batch.num_rows == 0:
            continue
        batch = layout.source.numpy(record_batch, [n for n in (layout.timestamp, layout.id_column) if n])
        numbers, blocks, _ = positions(record_batch, counters, files)
        micros, ids = layout.event_keys(batch, record_batch.num_rows)
        change = np.flatnonzero((numbers[1:] != numbers[:-1]) | (blocks[1:] != blocks[:-1])) + 1
        for begin, end in zip([0, *change.tolist()], [*change.tolist(), len(numbers)]):
            split = splits.setdefault((int(numbers[begin]), int(blocks[begin])), {
                "rows": 0, "ordered": True, "first": (int(micros[begin]), str(ids[begin]) if ids is not None else "")})
            part_ids = ids[begin:end] if ids is not None else None
            if split["ordered"] and layout.timestamp is not None:
                split["ordered"] = _ordered(micros[begin:end], part_ids, split.get("last"))
            split["rows"] += end - begin
            split["last"] = (int(micros[end - 1]), str(ids[end - 1]) if ids is not None else "")
    for (number, block), split in splits.items():
        yield {FILE: [number], BLOCK: [block], "rows": [split["rows"]], "ordered": [split["ordered"]],
               "first_time": [split["first"][0]], "first_id": [split["first"][1]],
               "last_time": [split["last"][0]], "last_id": [split["last"][1]]}


def in_order(summaries: Sequence[Mapping[str, Any]], with_ids: bool) -> SplitRanks | None:
    """The splits' ranks when the whole dataset is in event-time order (each split in order, and each split's
    first key not before the last key of the split before it, in file order), else None."""
    previous: tuple[int, str] | None = None
    offsets: dict[tuple[int, int], int] = {}
    total = 0
    for split in sorted(summaries, key=lambda s: (s[FILE], s[BLOCK])):
        first = np.array([split["first_time"]], dtype=np.int64)
        ids = np.array([split["first_id"]], dtype=object) if with_ids else None
        if not split["ordered"] or not _ordered(first, ids, previous):
            return None
        previous = (int(split["last_time"]), str(split["last_id"]))
        offsets[(int(split[FILE]), int(split[BLOCK]))] = total
        total += int(split["rows"])
    return SplitRanks(offsets, total)


@dataclass(frozen=True)
class RowBounds:
    """The key (event time in microseconds, id text, file number, split start, position) of each row window's
    first row in event-time order: a row's window is the last whose first key is not after the row's key."""

    keys: tuple[tuple[int, str, int, int, int], ...]

    def windows(self, micros: np.ndarray, ids: np.ndarray | None, files: np.ndarray, blocks: np.ndarray,
                places: np.ndarray) -> np.ndarray:
        times = np.fromiter((k[0] for k in self.keys), dtype=np.int64, count=len(self.keys))
        low = np.searchsorted(times, micros, side="left")
        high = np.searchsorted(times, micros, side="right")
        out = low - 1  # no window starts at the row's time: the last one starting before it
        tied = np.flatnonzero(low != high)
        if tied.size:  # a window starts at the row's very time: compare the whole key
            texts = id_strings(ids[tied]) if ids is not None else [""] * tied.size
            for j, row in enumerate(tied.tolist()):
                key = (int(micros[row]), texts[j], int(files[row]), int(blocks[row]), int(places[row]))
                out[row] = bisect.bisect_right(self.keys, key, int(low[row]), int(high[row])) - 1
        return out


@dataclass
class Partial:
    """One window's state within one partition: the local accumulator (categorical sketches uncapped) and, per
    categorical column, the file-order key of each category's first row."""

    layout: Layout
    accumulator: _Accumulator = field(init=False)
    firsts: dict[str, dict[str, OrderKey]] = field(init=False)

    def __post_init__(self) -> None:
        plan = self.layout.plan
        self.accumulator = _Accumulator(plan.kinds, plan.bucketing)
        self.firsts = {}
        for name, kind in plan.kinds.items():
            if kind == CATEGORICAL:
                self.accumulator.sketches[name] = CategoricalSketch(UNCAPPED)
                self.firsts[name] = {}

    def add(self, batch: Mapping[str, np.ndarray], mask: np.ndarray | None, times: np.ndarray | None,
            order: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.accumulator.add(dict(batch), mask, times)
        rows = np.flatnonzero(mask) if mask is not None else None
        for name, firsts in self.firsts.items():
            values = batch[name] if rows is None else batch[name][rows]
            for key, position in _first_rows(values):
                row = position if rows is None else int(rows[position])
                place = (int(order[0][row]), int(order[1][row]), int(order[2][row]))
                if key not in firsts or place < firsts[key]:
                    firsts[key] = place

    def state(self) -> bytes:
        accumulator = self.accumulator
        for sketch in accumulator.sketches.values():
            if isinstance(sketch, NumericSketch):
                sketch.compact()
        return pickle.dumps({"rows": accumulator.rows, "first": accumulator.first, "last": accumulator.last,
                             "sketches": accumulator.sketches, "firsts": self.firsts}, protocol=5)


def _first_rows(values: np.ndarray) -> Iterator[tuple[str, int]]:
    """(category, position of its first row) of each category of a batch column (missing values are none)."""
    import pandas as pd

    try:
        codes, uniques = pd.factorize(values)
    except TypeError:  # unhashable values: the sketch counts their text
        codes, uniques = pd.factorize(np.asarray([str(v) for v in values.tolist()], dtype=object))
    valid = np.flatnonzero(codes >= 0)
    if not valid.size:
        return
    seen, first = np.unique(codes[valid], return_index=True)
    uniques = np.asarray(uniques, dtype=object)
    for code, position in zip(seen.tolist(), valid[first].tolist()):
        key = category_key(uniques[code])
        if key is not None:
            yield key, position


def window_states(layout: Layout, batches: Iterable[Any]) -> Iterator[tuple[float, bytes]]:
    """One partition's partial state of each window it has rows of: (window key, pickled state)."""
    partials: dict[float, Partial] = {}
    counters: dict[tuple[str, int], int] = {}
    files = {name: i for i, name in enumerate(layout.source.files)}
    for record_batch in batches:
        if record_batch.num_rows == 0:
            continue
        batch = layout.source.numpy(record_batch, layout.names)
        order = positions(record_batch, counters, files)
        times = layout.times(batch)
        keys = layout.windows(batch, times, order)
        unique = np.unique(keys)
        for key in unique.tolist():
            partial = partials.get(key)
            if partial is None:
                partial = partials[key] = Partial(layout)
            partial.add(batch, None if unique.size == 1 else keys == key, times, order)
    for key, partial in partials.items():
        yield key, partial.state()


@dataclass
class WindowState:
    """A window merged from its partials: rows, first and last event time, a sketch per column."""

    rows: int = 0
    first: float = math.inf
    last: float = -math.inf
    sketches: dict[str, NumericSketch | CategoricalSketch] = field(default_factory=dict)


def merge_states(plan: _Plan, states: Iterable[bytes]) -> WindowState:
    """A window's state from its partition partials, as the local engine would have built it in one pass."""
    merged = WindowState()
    counts: dict[str, dict[str, int]] = {}
    firsts: dict[str, dict[str, OrderKey]] = {}
    missing: dict[str, int] = {}
    for blob in states:
        state = pickle.loads(blob)
        merged.rows += state["rows"]
        merged.first, merged.last = min(merged.first, state["first"]), max(merged.last, state["last"])
        for name, sketch in state["sketches"].items():
            if isinstance(sketch, NumericSketch):
                whole = merged.sketches.get(name)
                if whole is None:
                    merged.sketches[name] = whole = NumericSketch(*plan.bucketing.get(name, (0.0, 1.0)))
                assert isinstance(whole, NumericSketch)
                whole.merge(sketch)
                continue
            total, first = counts.setdefault(name, {}), firsts.setdefault(name, {})
            missing[name] = missing.get(name, 0) + sketch.missing
            for key, n in sketch.counts.items():
                total[key] = total.get(key, 0) + n
                place = state["firsts"][name][key]
                if key not in first or place < first[key]:
                    first[key] = place
    for name in plan.kinds:
        if name in counts:
            capped = CategoricalSketch()  # the local accumulator's sketch, with its cap
            for key in sorted(counts[name], key=firsts[name].__getitem__):  # first rows first: the same cap
                capped.add(key, counts[name][key])
            capped.missing = missing[name]
            merged.sketches[name] = capped
    merged.sketches = {name: merged.sketches[name] for name in plan.kinds if name in merged.sketches}
    for sketch in merged.sketches.values():
        if isinstance(sketch, NumericSketch):
            sketch.compact()
    return merged


def key_rows(layout: Layout, batches: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The event-time key of every row of a partition (row windows: the driver ranks them)."""
    counters: dict[tuple[str, int], int] = {}
    files = {name: i for i, name in enumerate(layout.source.files)}
    for record_batch in batches:
        if record_batch.num_rows == 0:
            continue
        batch = layout.source.numpy(record_batch, [n for n in (layout.timestamp, layout.id_column) if n])
        order = positions(record_batch, counters, files)
        micros, ids = layout.event_keys(batch, record_batch.num_rows)
        yield {TIME: micros, ID: id_strings(ids) if ids is not None else [""] * len(micros), FILE: order[0],
               BLOCK: order[1], POS: order[2]}


def labeled_rows(layout: Layout, batches: Iterable[Any], outputs: Sequence[str], label: str | None,
                 join_id: str | None, every_row: bool = False) -> Iterator[tuple[dict[str, Any], Any]]:
    """The rows that may carry a label, with their window and file-order key: with a labels file every row and
    the text of its ``join_id`` column (joined in Spark); else the rows whose ``label`` column (the target) has
    a value, or every row with ``every_row`` (estimated performance reads them all).
    Yields (new columns, the batch's output and label columns, filtered)."""
    counters: dict[tuple[str, int], int] = {}
    files = {name: i for i, name in enumerate(layout.source.files)}
    for record_batch in batches:
        if record_batch.num_rows == 0:
            continue
        batch = layout.source.numpy(record_batch, layout.names)
        order = positions(record_batch, counters, files)
        keys = layout.windows(batch, layout.times(batch), order)
        keep: np.ndarray | None = None
        extra: dict[str, Any] = {}
        if join_id is not None:
            extra[ID] = id_strings(batch[join_id])
        elif label is not None and not every_row:
            values = layout.source.numpy(record_batch, [label])[label]
            keep = ~np.isnan(values) if values.dtype.kind == "f" else np.array(
                [v is not None for v in values.tolist()], dtype=bool)
        columns = [*outputs, *([label] if label and join_id is None else [])]
        passed = record_batch.select(columns)
        extra.update({WINDOW: keys, FILE: order[0], BLOCK: order[1], POS: order[2]})
        if keep is not None:
            passed = passed.filter(_pyarrow().array(keep))
            extra = {name: np.asarray(values, dtype=object if name == ID else None)[keep]
                     for name, values in extra.items()}
        yield extra, passed


def label_values(source: Source, batches: Iterable[Any], id_column: str, target: str) -> Iterator[tuple[dict, Any]]:
    """The labels of a labels file with their id text and file-order key (rows whose id or label is empty are
    left out, as ``runner.load_labels`` leaves them). Yields (new columns, the label column, filtered)."""
    counters: dict[tuple[str, int], int] = {}
    files = {name: i for i, name in enumerate(source.files)}
    pa = _pyarrow()
    for record_batch in batches:
        if record_batch.num_rows == 0:
            continue
        batch = source.numpy(record_batch, [id_column, target])
        order = positions(record_batch, counters, files)
        keys = batch[id_column].tolist()
        values = batch[target]
        valid = np.array([k is not None for k in keys], dtype=bool)
        valid &= ~np.isnan(values) if values.dtype.kind == "f" else np.array(
            [v is not None for v in values.tolist()], dtype=bool)
        chosen = np.flatnonzero(valid)
        texts = id_strings(batch[id_column][chosen])
        yield ({ID: texts, FILE: order[0][chosen], BLOCK: order[1][chosen], POS: order[2][chosen]},
               record_batch.column(target).take(pa.array(chosen)))
