"""The processor's durable state in one SQLite file (WAL): predictions, their late labels, orphan labels.

Every ``add_*`` call is one transaction, committed before it returns, so a request can be acknowledged as soon as
its call returned. Rules:
- a prediction is identified by (model, version, id); a replayed id changes nothing (counted ``duplicate``);
- one label per prediction: the first one wins, later ones are counted ``duplicate_labels`` and dropped;
- a label whose prediction has not arrived waits as an orphan, and joins when the prediction comes;
- a prediction takes labels for ``label_ttl_s`` after its event time, an orphan waits ``orphan_ttl_s``: past
  those, ``expire`` removes them and counts them (``expired_predictions``, ``expired_orphans``), never silently;
- bounded: past ``max_pending`` unlabeled predictions or ``max_orphans`` orphans, ``add_*`` raise
  ``Backpressure`` and record nothing (the receiver answers 503 / UNAVAILABLE with Retry-After).
Prediction rows get a per-model sequence number in arrival order: row windows are ranges of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from otel_mlmon.processor.decode import LabelBatch, PredictionBatch, SketchPoint
from otel_mlmon.sketch import category_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, version TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
    time_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, label TEXT, score REAL, value REAL, extra TEXT,
    truth TEXT, labeled_ns INTEGER, expired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, version, id));
CREATE INDEX IF NOT EXISTS predictions_seq ON predictions (model, version, seq);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (model, version, time_ns);
CREATE INDEX IF NOT EXISTS predictions_pending ON predictions (time_ns) WHERE truth IS NULL AND expired = 0;
CREATE TABLE IF NOT EXISTS orphans (
    model TEXT NOT NULL, version TEXT NOT NULL, id TEXT NOT NULL, truth TEXT NOT NULL, received_ns INTEGER NOT NULL,
    PRIMARY KEY (model, version, id));
CREATE INDEX IF NOT EXISTS orphans_received ON orphans (received_ns);
CREATE TABLE IF NOT EXISTS sequences (model TEXT NOT NULL, version TEXT NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sketches (model TEXT NOT NULL, version TEXT NOT NULL, column_name TEXT NOT NULL,
    time_ns INTEGER NOT NULL, sketch TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sketches_time ON sketches (model, version, time_ns);
CREATE TABLE IF NOT EXISTS results (model TEXT NOT NULL, version TEXT NOT NULL, period TEXT NOT NULL,
    window INTEGER NOT NULL, column_name TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (model, version, period, window, column_name, kind, metric));
CREATE TABLE IF NOT EXISTS profiles (model TEXT NOT NULL, version TEXT NOT NULL, profile TEXT NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS windows (model TEXT NOT NULL, version TEXT NOT NULL, window INTEGER NOT NULL,
    evaluated_ns INTEGER NOT NULL, PRIMARY KEY (model, version, window));
"""
SCHEMA_VERSION = "2"
_CHUNK = 8000  # ids per IN (...) query (SQLite allows 32766 variables since 3.32)


class Backpressure(Exception):
    """The store is at a cap: nothing was recorded; the client should retry later."""


@dataclass(frozen=True)
class Added:
    accepted: int = 0
    duplicate: int = 0
    joined: int = 0  # predictions: orphan labels joined; labels: joined to their prediction
    orphaned: int = 0


@dataclass(frozen=True)
class Joined:
    """A prediction row as stored: outputs (label, scores, value, features) and its label, if any."""

    id: str
    seq: int
    time_ns: int
    outputs: dict[str, Any]
    truth: Any
    labeled_ns: int | None


class Store:
    def __init__(self, path: str, *, label_ttl_s: float = 7 * 86400, orphan_ttl_s: float = 86400,
                 max_pending: int = 10_000_000, max_orphans: int = 1_000_000) -> None:
        if label_ttl_s <= 0 or orphan_ttl_s <= 0 or max_pending < 1 or max_orphans < 1:
            raise ValueError("label_ttl_s, orphan_ttl_s, max_pending and max_orphans must be positive")
        self.path = path
        self.label_ttl_ns = int(label_ttl_s * 1e9)
        self.orphan_ttl_ns = int(orphan_ttl_s * 1e9)
        self.max_pending = max_pending
        self.max_orphans = max_orphans
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed transaction survives power loss too
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"store {path!r} is not a usable SQLite database: {exc}") from None
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif found[0] != SCHEMA_VERSION:
            raise ValueError(f"store {path!r} has schema version {found[0]}; this otel-mlmon uses {SCHEMA_VERSION}")
        self._pending = self._scalar("SELECT count(*) FROM predictions WHERE truth IS NULL AND expired = 0")
        self._orphans = self._scalar("SELECT count(*) FROM orphans")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _scalar(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        return int(self._db.execute(sql, parameters).fetchone()[0])

    def _count(self, name: str, n: int) -> None:
        if n:
            self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                             (name, n, n))

    def counters(self) -> dict[str, int]:
        with self._lock:
            found = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            found["pending_predictions"] = self._pending
            found["orphan_labels"] = self._orphans
            return found

    # --- predictions ---------------------------------------------------------------------------------------
    def add_predictions(self, batches: Iterable[PredictionBatch], received_ns: int) -> Added:
        batches = list(batches)
        rows = sum(len(b) for b in batches)
        with self._lock:
            if self._pending + rows > self.max_pending:
                self._count("backpressure_predictions", rows)
                raise Backpressure(f"{self._pending} predictions wait for labels (cap {self.max_pending})")
            accepted = joined = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    fresh = self._fresh(batch)  # sequence numbers go to new rows only: windows count real rows
                    start = self._reserve(batch.model, batch.version, len(fresh))
                    self._db.executemany(
                        "INSERT INTO predictions (model, version, id, seq, time_ns, received_ns, label, score, value, "
                        "extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(batch.model, batch.version, batch.ids[i], start + n, batch.time_unix_nano, received_ns,
                          *_columns(batch, i)) for n, i in enumerate(fresh)])
                    accepted += len(fresh)
                    joined += self._join_orphans(batch, received_ns)
                duplicate = rows - accepted
                self._count("predictions", accepted)
                self._count("duplicate_predictions", duplicate)
                self._count("labels_joined", joined)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending += accepted - joined
            self._orphans -= joined
            return Added(accepted, duplicate, joined)

    def _fresh(self, batch: PredictionBatch) -> list[int]:
        """Positions of the batch's ids that the store does not hold yet (the first of repeated ids)."""
        known: set[str] = set()
        for begin in range(0, len(batch.ids), _CHUNK):
            ids = batch.ids[begin: begin + _CHUNK]
            marks = ",".join("?" * len(ids))
            known.update(row[0] for row in self._db.execute(
                f"SELECT id FROM predictions WHERE model = ? AND version = ? AND id IN ({marks})",
                (batch.model, batch.version, *ids)))
        fresh = []
        for i, pid in enumerate(batch.ids):
            if pid not in known:
                known.add(pid)
                fresh.append(i)
        return fresh

    def _reserve(self, model: str, version: str, n: int) -> int:
        row = self._db.execute("SELECT next FROM sequences WHERE model = ? AND version = ?",
                               (model, version)).fetchone()
        start = row[0] if row else 0
        self._db.execute("INSERT INTO sequences VALUES (?, ?, ?) ON CONFLICT(model, version) DO UPDATE SET next = ?",
                         (model, version, start + n, start + n))
        return int(start)

    def _join_orphans(self, batch: PredictionBatch, received_ns: int) -> int:
        if not self._orphans:
            return 0
        joined = 0
        for begin in range(0, len(batch.ids), _CHUNK):
            ids = batch.ids[begin: begin + _CHUNK]
            marks = ",".join("?" * len(ids))
            found = self._db.execute(f"SELECT id, truth, received_ns FROM orphans WHERE model = ? AND version = ? "
                                     f"AND id IN ({marks})", (batch.model, batch.version, *ids)).fetchall()
            for pid, truth, labeled_ns in found:
                changed = self._db.execute("UPDATE predictions SET truth = ?, labeled_ns = ? WHERE model = ? AND "
                                           "version = ? AND id = ? AND truth IS NULL AND expired = 0",
                                           (truth, labeled_ns, batch.model, batch.version, pid)).rowcount
                joined += changed
            if found:
                self._db.execute(f"DELETE FROM orphans WHERE model = ? AND version = ? AND id IN ({marks})",
                                 (batch.model, batch.version, *ids))
        return joined

    # --- labels --------------------------------------------------------------------------------------------
    def add_labels(self, batches: Iterable[LabelBatch], received_ns: int) -> Added:
        batches = list(batches)
        with self._lock:
            joined = orphaned = duplicate = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    for pid, label in zip(batch.ids, batch.labels):
                        truth = json.dumps(label)
                        changed = self._db.execute(
                            "UPDATE predictions SET truth = ?, labeled_ns = ? WHERE model = ? AND version = ? AND "
                            "id = ? AND truth IS NULL AND expired = 0",
                            (truth, received_ns, batch.model, batch.version, pid)).rowcount
                        if changed:
                            joined += 1
                            continue
                        known = self._db.execute("SELECT 1 FROM predictions WHERE model = ? AND version = ? AND id = ?",
                                                 (batch.model, batch.version, pid)).fetchone()
                        if known:  # labeled already (the first label wins), or past its label TTL
                            duplicate += 1
                            continue
                        if self._orphans + orphaned >= self.max_orphans:
                            raise Backpressure(f"{self._orphans} labels wait for their predictions "
                                               f"(cap {self.max_orphans})")
                        inserted = self._db.execute("INSERT OR IGNORE INTO orphans VALUES (?, ?, ?, ?, ?)",
                                                    (batch.model, batch.version, pid, truth, received_ns)).rowcount
                        orphaned += inserted
                        duplicate += 1 - inserted
                self._count("labels_joined", joined)
                self._count("labels_orphaned", orphaned)
                self._count("duplicate_labels", duplicate)
                self._db.execute("COMMIT")
            except Backpressure:
                self._db.execute("ROLLBACK")
                self._count("backpressure_labels", sum(len(b) for b in batches))
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pending -= joined
            self._orphans += orphaned
            return Added(joined + orphaned, duplicate, joined, orphaned)

    # --- time ----------------------------------------------------------------------------------------------
    def expire(self, now_ns: int) -> tuple[int, int]:
        """Stop waiting for labels of predictions past the label TTL, and drop orphans past theirs (counted)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            expired = self._db.execute("UPDATE predictions SET expired = 1 WHERE truth IS NULL AND expired = 0 "
                                       "AND time_ns < ?", (now_ns - self.label_ttl_ns,)).rowcount
            dropped = self._db.execute("DELETE FROM orphans WHERE received_ns < ?",
                                       (now_ns - self.orphan_ttl_ns,)).rowcount
            self._count("expired_predictions", expired)
            self._count("expired_orphans", dropped)
            self._db.execute("COMMIT")
            self._pending -= expired
            self._orphans -= dropped
            return expired, dropped

    def rows(self, model: str, version: str, first: int, end: int, by: str = "seq") -> list[Joined]:
        """Predictions of a model with ``first <= seq < end`` (or ``time_ns``, with ``by``), in sequence order."""
        if by not in ("seq", "time_ns"):
            raise ValueError(f"select rows by seq or time_ns, not {by!r}")
        with self._lock:
            found = self._db.execute(
                "SELECT id, seq, time_ns, label, score, value, extra, truth, labeled_ns FROM predictions "
                f"WHERE model = ? AND version = ? AND {by} >= ? AND {by} < ? ORDER BY seq",
                (model, version, first, end)).fetchall()
        return [Joined(pid, seq, time_ns, _outputs(label, score, value, extra),
                       None if truth is None else json.loads(truth), labeled_ns)
                for pid, seq, time_ns, label, score, value, extra, truth, labeled_ns in found]

    # --- sketches from metrics, window bookkeeping, results --------------------------------------------------
    def add_sketches(self, points: Iterable[SketchPoint]) -> int:
        records = [(p.model, p.version, p.column, p.time_unix_nano, json.dumps(p.sketch.to_dict())) for p in points]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO sketches VALUES (?, ?, ?, ?, ?)", records)
            self._count("sketch_points", len(records))
            self._db.execute("COMMIT")
        return len(records)

    def sketches(self, model: str, version: str, first_ns: int, last_ns: int) -> list[tuple[str, dict[str, Any]]]:
        """(column, sketch as dict) of the sketch points that ended in ``[first_ns, last_ns]``."""
        with self._lock:
            found = self._db.execute("SELECT column_name, sketch FROM sketches WHERE model = ? AND version = ? AND "
                                     "time_ns >= ? AND time_ns <= ?", (model, version, first_ns, last_ns)).fetchall()
        return [(column, json.loads(sketch)) for column, sketch in found]

    def next_seq(self, model: str, version: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT next FROM sequences WHERE model = ? AND version = ?",
                                   (model, version)).fetchone()
        return int(row[0]) if row else 0

    def models(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(m, v) for m, v in self._db.execute("SELECT model, version FROM sequences").fetchall()]

    def put_profile(self, model: str, version: str, profile: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO profiles VALUES (?, ?, ?) ON CONFLICT(model, version) DO UPDATE SET "
                             "profile = excluded.profile", (model, version, json.dumps(profile)))

    def profiles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(row[0]) for row in self._db.execute("SELECT profile FROM profiles").fetchall()]

    def evaluated(self, model: str, version: str) -> dict[int, int]:
        """Window -> when it was last evaluated."""
        with self._lock:
            return dict(self._db.execute("SELECT window, evaluated_ns FROM windows WHERE model = ? AND version = ?",
                                         (model, version)).fetchall())

    def buckets(self, model: str, version: str, by: str, width: int) -> dict[int, tuple[int, int]]:
        """Windows of a model's predictions: bucket -> (rows, latest label time); ``by`` is ``seq`` (row windows
        of ``width`` rows) or ``time_ns`` (time windows of ``width`` nanoseconds)."""
        if by not in ("seq", "time_ns"):
            raise ValueError(f"bucket by seq or time_ns, not {by!r}")
        with self._lock:
            found = self._db.execute(f"SELECT {by} / ?, count(*), max(coalesce(labeled_ns, 0)) FROM predictions "
                                     f"WHERE model = ? AND version = ? GROUP BY {by} / ?",
                                     (width, model, version, width)).fetchall()
        return {int(bucket): (int(rows), int(labeled)) for bucket, rows, labeled in found}

    def latest_time(self, model: str, version: str) -> int | None:
        with self._lock:
            found = self._db.execute("SELECT max(time_ns) FROM predictions WHERE model = ? AND version = ?",
                                     (model, version)).fetchone()
        return None if found[0] is None else int(found[0])

    def put_results(self, model: str, version: str, window: int | None, rows: Sequence[dict[str, Any]],
                    evaluated_ns: int) -> None:
        """Replace the results of a window (revisions as labels arrive), in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model, version, period, window, "
                "column_name, kind, metric) DO UPDATE SET row = excluded.row",
                [(model, version, r["period"], r["window"], r["column"], r["kind"], r["metric"], json.dumps(r))
                 for r in rows])
            if window is not None:
                self._db.execute("INSERT INTO windows VALUES (?, ?, ?, ?) ON CONFLICT(model, version, window) "
                                 "DO UPDATE SET evaluated_ns = excluded.evaluated_ns",
                                 (model, version, window, evaluated_ns))
            self._db.execute("COMMIT")

    def results(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored window results, filtered on model, version, period, kind, window, column, metric."""
        columns = {"model": "model", "version": "version", "period": "period", "kind": "kind", "window": "window",
                   "column": "column_name", "metric": "metric"}
        where = " AND ".join(f"{columns[k]} = ?" for k, v in filters.items() if v is not None and k in columns)
        values = [v for k, v in filters.items() if v is not None and k in columns]
        with self._lock:
            found = self._db.execute(f"SELECT row FROM results {'WHERE ' + where if where else ''} ORDER BY model, "
                                     "version, period DESC, window, column_name, kind, metric", values).fetchall()
        return [json.loads(row[0]) for row in found]


def _columns(batch: PredictionBatch, i: int) -> tuple[Any, Any, Any, Any]:
    """(label, binary score, value, extra JSON) of one row: typed columns, JSON only for what needs it (multiclass
    scores, captured features), which a default binary or regression stream never does."""
    label = category_key(batch.labels[i]) if batch.labels is not None else None
    score = batch.scores[""][i] if "" in batch.scores else None
    value = batch.values[i] if batch.values is not None else None
    extra: dict[str, Any] = {}
    if batch.scores and "" not in batch.scores:
        extra["scores"] = {c: s[i] for c, s in batch.scores.items()}
    if batch.features:
        extra["features"] = {name: values[i] for name, values in batch.features.items()}
    return label, score, value, json.dumps(extra) if extra else None


def _outputs(label: str | None, score: float | None, value: float | None, extra: str | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(extra) if extra else {}
    if label is not None:
        out["label"] = label
    if score is not None:
        out["scores"] = {"": score}
    if value is not None:
        out["value"] = value
    return out
