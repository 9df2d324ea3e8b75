"""The processor's durable state in one SQLite file (WAL): predictions, late labels, sketch points, windows, results.

Every ``add_*`` call is one transaction (``Store.transaction``: rolled back on any exception), committed and its WAL
synced to disk before it returns (``Store._sync``, outside the write lock), so a request can be acknowledged as soon
as its call returned. Rules:
- a prediction is identified by (model, version, id); a replayed id changes nothing (counted ``duplicate``);
- each model's stream has an event-time clock: the latest event time seen (``latest_ns``); a prediction row or a
  sketch point more than ``max_lateness`` older than it is counted ``late_dropped`` and not stored (its window can
  no longer change); everything newer is stored, whatever the arrival order;
- one label per prediction: the first one wins, later ones are counted ``duplicate_labels`` and dropped;
- a label whose prediction has not arrived waits as an orphan, and joins when the prediction comes;
- TTLs count in event time: a prediction takes labels until the model's clock is ``label_ttl_s`` past its event
  time, an orphan waits until the model's clock has moved ``orphan_ttl_s`` past its arrival (or as long in processing
  time); past those, ``expire`` counts them (``expired_predictions``, ``expired_orphans``), never silently;
- bounded: per model, past ``max_pending`` unlabeled predictions or ``max_orphans`` orphans the model's records are
  refused with ``Backpressure`` naming the model (what else the call carried is kept); past ``max_models`` streams or
  ``max_features`` sketched features of a model, new ones are refused per record (counted); ``prune`` deletes the
  rows, sketch points and window bookkeeping that can no longer change, ``retention_s`` after that;
- a failing disk (full, read-only, I/O error) raises ``StoreUnavailable`` (a ``Backpressure``: 503 and Retry-After,
  UNAVAILABLE) and makes ``healthy`` false until a write succeeds again.
Every change that can alter a window's results is recorded in ``touched`` (its kind and event time, to the second)
in the same transaction, so the processor re-evaluates exactly the windows that changed, after a restart too.
Every label that joins (to a stored prediction, or an orphan joining its prediction) goes, in join order, to the
``on_join`` listener (the processor's sequential change detection) inside the join's transaction: the listener's
new state (``sequential``) and the changes it found (``sequential_changes``, drained by the processor) commit with
the join or not at all, so a restart neither feeds a label twice nor loses one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, NamedTuple

import numpy as np

from otel_mlmon.processor.decode import LabelBatch, PredictionBatch, SketchPoint
from otel_mlmon.sketch import category_key

# Predictions, the largest table, name their model by a number (``models.sid``): the keys of its three b-trees stay
# short, which makes an insert 1.45 times and a label join 1.9 times cheaper than with (model, version) strings.
_PREDICTIONS = """
CREATE TABLE IF NOT EXISTS predictions (
    sid INTEGER NOT NULL, id TEXT NOT NULL, time_ns INTEGER NOT NULL, received_ns INTEGER NOT NULL, label TEXT,
    score REAL, value REAL, extra TEXT, truth TEXT, labeled_ns INTEGER, expired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sid, id));
CREATE INDEX IF NOT EXISTS predictions_order ON predictions (sid, time_ns, id);
CREATE INDEX IF NOT EXISTS predictions_pending ON predictions (sid, time_ns) WHERE truth IS NULL AND expired = 0;
"""
# Schema 3 kept (model, version) in every prediction row: opened by this version, it is migrated in one transaction.
_MIGRATE_3 = """
ALTER TABLE predictions RENAME TO predictions_v3;
DROP INDEX IF EXISTS predictions_order;
DROP INDEX IF EXISTS predictions_pending;
INSERT OR IGNORE INTO models (model, version) SELECT DISTINCT model, version FROM predictions_v3;
""" + _PREDICTIONS + """
INSERT INTO predictions (sid, id, time_ns, received_ns, label, score, value, extra, truth, labeled_ns, expired)
    SELECT m.sid, p.id, p.time_ns, p.received_ns, p.label, p.score, p.value, p.extra, p.truth,
    p.labeled_ns, p.expired FROM predictions_v3 AS p JOIN models AS m ON m.model = p.model AND m.version = p.version;
DROP TABLE predictions_v3;
UPDATE meta SET value = '4' WHERE key = 'schema_version';
"""
# Schema 5 (segments and fairness, issue 15): each prediction row's segment (``ml.segment``) and sensitive value
# (``ml.fairness.group``), each sketch point's segment, the stream's sensitive column name, and results keyed by
# segment too ('' for the whole window). Every store, a new one included, reaches it from schema 4 this way.
_MIGRATE_4 = """
ALTER TABLE predictions ADD COLUMN segment TEXT;
ALTER TABLE predictions ADD COLUMN grp TEXT;
ALTER TABLE sketches ADD COLUMN segment TEXT;
ALTER TABLE streams ADD COLUMN sensitive TEXT;
ALTER TABLE results RENAME TO results_v4;
CREATE TABLE results (model TEXT NOT NULL, version TEXT NOT NULL, period TEXT NOT NULL,
    window INTEGER NOT NULL, column_name TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL, row TEXT NOT NULL,
    segment TEXT NOT NULL DEFAULT '', PRIMARY KEY (model, version, period, window, column_name, kind, metric, segment));
INSERT INTO results (model, version, period, window, column_name, kind, metric, row)
    SELECT model, version, period, window, column_name, kind, metric, row FROM results_v4;
DROP TABLE results_v4;
UPDATE meta SET value = '5' WHERE key = 'schema_version';
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (model TEXT NOT NULL, version TEXT NOT NULL, latest_ns INTEGER NOT NULL,
    arrived_ns INTEGER NOT NULL, captured INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS models (sid INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
    UNIQUE (model, version));
CREATE TABLE IF NOT EXISTS orphans (
    model TEXT NOT NULL, version TEXT NOT NULL, id TEXT NOT NULL, truth TEXT NOT NULL, received_ns INTEGER NOT NULL,
    clock_ns INTEGER, PRIMARY KEY (model, version, id));
CREATE INDEX IF NOT EXISTS orphans_age ON orphans (model, version, clock_ns);
CREATE TABLE IF NOT EXISTS sketches (model TEXT NOT NULL, version TEXT NOT NULL, column_name TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, sketch TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sketches_time ON sketches (model, version, start_ns);
CREATE TABLE IF NOT EXISTS features (model TEXT NOT NULL, version TEXT NOT NULL, column_name TEXT NOT NULL,
    PRIMARY KEY (model, version, column_name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS touched (model TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL,
    time_s INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (model, version, kind, time_s)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (model TEXT NOT NULL, version TEXT NOT NULL, scheme TEXT NOT NULL,
    key INTEGER NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, state TEXT NOT NULL,
    evaluated_ns INTEGER NOT NULL, PRIMARY KEY (model, version, scheme, key));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (model TEXT NOT NULL, version TEXT NOT NULL, period TEXT NOT NULL,
    window INTEGER NOT NULL, column_name TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (model, version, period, window, column_name, kind, metric));
CREATE TABLE IF NOT EXISTS profiles (model TEXT NOT NULL, version TEXT NOT NULL, profile TEXT NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS sequential (sid INTEGER PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sequential_changes (seq INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
    change TEXT NOT NULL);
"""
# The two sequential tables came after schema 4 without a version bump: a schema-4 store gets them (empty) on open,
# its monitors start with the next label joined, and nothing else of the store changes meaning.
SCHEMA_VERSION = "5"
_CHUNK = 8000  # ids per IN (...) query (SQLite allows 32766 variables since 3.32)
READ_CHUNK = 16384  # rows a window's evaluation reads back at a time (``row_chunks``)
# The WAL is copied into the database by a thread of each store's (``_checkpoints``), not by the committing request:
# SQLite's automatic checkpoint ran inside a request's commit, under the write lock, with the database file's fsync.
CHECKPOINT_S = 0.5
WAL_RESTART_FRAMES = 4096  # past this many WAL frames a checkpoint completes under the write lock: the WAL restarts
WAL_LIMIT_BYTES = 32 * 2**20
ROW, LABEL, SKETCH = "row", "label", "sketch"  # kinds of change recorded in ``touched``
PERFORMANCE_CHANGE = "performance_change"  # results of sequential detection: kept when their window is re-evaluated
MAX_NS = 2**63 - 1
LATE_EVENT = "prediction event older than its model's lateness bound (max_lateness_s behind its latest event)"
LATE_POINT = "sketch point older than its model's lateness bound (max_lateness_s behind its latest event)"


class Backpressure(Exception):
    """The store is at a cap (or unavailable): the refused records were not recorded; retry later."""


class StoreUnavailable(Backpressure):
    """The store cannot write (disk full, read-only, I/O error): nothing of the call was recorded."""


@dataclass(frozen=True)
class Added:
    accepted: int = 0
    duplicate: int = 0
    joined: int = 0  # predictions: orphan labels joined; labels: joined to their prediction
    orphaned: int = 0
    late: int = 0  # rows or points too late to change their window (counted ``late_dropped``)
    refused: dict[str, int] = field(default_factory=dict)  # reason -> records refused per record (partial success)


@dataclass(frozen=True)
class Joined:
    """A prediction row as stored: outputs (label, scores, value, features) and its label, if any."""

    id: str
    time_ns: int
    outputs: dict[str, Any]
    truth: Any
    labeled_ns: int | None


class LabelJoin(NamedTuple):
    """A label that just joined its prediction: the prediction's id, event time and outputs (``label`` as its
    category key, ``value``), and the label as sent. (A named tuple: one is made per label joined, and a tuple is
    made 3 times faster than a frozen dataclass.)"""

    id: str
    time_ns: int
    truth: Any
    label: str | None
    value: float | None


# (model, version), the labels that joined in join order, the listener's stored state (None: none yet) ->
# (its new state, None: keep the stored one; the changes found, as JSON-able dicts)
JoinListener = Callable[[tuple[str, str], list[LabelJoin], str | None], tuple[str | None, list[dict[str, Any]]]]


@dataclass
class StoredRows:
    """Prediction rows as stored, a list per column (the evaluation reads a window's rows this way; ``joined()``
    gives them row by row)."""

    ids: list[str]
    times: list[int]
    labels: list[str | None]
    scores: list[float | None]
    values: list[float | None]
    extras: list[str | None]  # JSON of multiclass scores and captured features, None for most rows
    truths: list[Any]  # the labels joined (decoded), None where none has arrived
    labeled_ns: list[int | None]
    segments: list[str | None] = field(default_factory=list)  # each row's segment (empty: no row has one)
    groups: list[str | None] = field(default_factory=list)  # each row's sensitive value (empty: no row has one)

    def __len__(self) -> int:
        return len(self.times)

    def take(self, rows: Sequence[int]) -> StoredRows:
        """These rows only (in this order)."""
        def pick(column: list[Any]) -> list[Any]:
            return [column[i] for i in rows] if column else []

        return StoredRows(*(pick(column) for column in (
            self.ids, self.times, self.labels, self.scores, self.values, self.extras, self.truths, self.labeled_ns,
            self.segments, self.groups)))

    @staticmethod
    def empty() -> StoredRows:
        return StoredRows([], [], [], [], [], [], [], [])

    @property
    def plain(self) -> bool:
        """No row carries multiclass scores or captured features."""
        return self.extras.count(None) == len(self.extras)

    def joined(self) -> list[Joined]:
        return [Joined(pid, time_ns, _outputs(label, score, value, extra), truth, labeled_ns)
                for pid, time_ns, label, score, value, extra, truth, labeled_ns in zip(
                    self.ids, self.times, self.labels, self.scores, self.values, self.extras, self.truths,
                    self.labeled_ns)]


@dataclass(frozen=True)
class Stream:
    """A model's event-time clock: the latest event time seen, when data last arrived, whether features are
    captured in its events."""

    latest_ns: int
    arrived_ns: int
    captured: bool
    sensitive: str | None = None  # the name of the sensitive column its events carry values of (fairness)


@dataclass(frozen=True)
class StoredPoint:
    column: str
    start_ns: int
    end_ns: int
    sketch: dict[str, Any]
    segment: str | None = None


class Store:
    def __init__(self, path: str, *, label_ttl_s: float = 7 * 86400, orphan_ttl_s: float = 86400,
                 max_pending: int = 10_000_000, max_orphans: int = 1_000_000, max_lateness_s: float = 3600.0,
                 max_models: int = 10_000, max_features: int = 10_000, retention_s: float = 3600.0) -> None:
        if not (label_ttl_s > 0 and orphan_ttl_s > 0 and max_lateness_s > 0 and retention_s >= 0):
            raise ValueError("label_ttl_s, orphan_ttl_s and max_lateness_s must be positive, retention_s not negative")
        if min(max_pending, max_orphans, max_models, max_features) < 1:
            raise ValueError("max_pending, max_orphans, max_models and max_features must be positive")
        self.path = path
        self.label_ttl_ns = int(label_ttl_s * 1e9)
        self.orphan_ttl_ns = int(orphan_ttl_s * 1e9)
        self.max_lateness_ns = int(max_lateness_s * 1e9)
        self.retention_ns = int(retention_s * 1e9)
        self.max_pending = max_pending
        self.max_orphans = max_orphans
        self.max_models = max_models
        self.max_features = max_features
        self.healthy = True
        self.on_join: JoinListener | None = None  # told of every label that joins, inside the join's transaction
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Commits write the WAL without syncing it; the calls that acknowledge records (``add_*``) sync it
            # after the commit, outside the write lock (``_sync``): a request is answered only once its records are
            # on disk, as with synchronous=FULL, but the next request's transaction runs during the sync, and the
            # syncs of concurrent requests share the disk's flush (a group commit).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # the store's checkpointer thread does it
            # A WAL that grew while a long read kept it from starting over (a window's evaluation) is cut back to
            # this when it does.
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if found is None:  # a new store: schema 4's tables, then the migrations
                self._db.execute("INSERT INTO meta VALUES ('schema_version', '4')")
                found = ("4",)
            if found[0] == "3":
                self._db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_3} COMMIT;")
                found = ("4",)
            self._db.executescript(_PREDICTIONS)
            if found[0] == "4":
                self._db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_4} COMMIT;")
                found = (SCHEMA_VERSION,)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"store {path!r} is not a usable SQLite database: {exc}") from None
        if found[0] != SCHEMA_VERSION:
            raise ValueError(f"store {path!r} has schema version {found[0]}; this otel-mlmon uses {SCHEMA_VERSION}: "
                             "start with a new --store file")
        self._sids: dict[tuple[str, str], int] = {
            (m, v): sid for sid, m, v in self._db.execute("SELECT sid, model, version FROM models")}
        self._sid_staged: dict[tuple[str, str], int] = {}
        self._streams: dict[tuple[str, str], Stream] = {
            (m, v): Stream(latest, arrived, bool(captured), sensitive) for m, v, latest, arrived, captured, sensitive
            in self._db.execute("SELECT model, version, latest_ns, arrived_ns, captured, sensitive FROM streams")}
        self._pending: dict[tuple[str, str], int] = {
            (m, v): n for m, v, n in self._db.execute(
                "SELECT model, version, count(*) FROM predictions JOIN models USING (sid) WHERE truth IS NULL AND "
                "expired = 0 GROUP BY sid")}
        self._orphans: dict[tuple[str, str], int] = {
            (m, v): n for m, v, n in self._db.execute("SELECT model, version, count(*) FROM orphans GROUP BY model, "
                                                     "version")}
        self._features: dict[tuple[str, str], set[str]] = {}
        for m, v, column in self._db.execute("SELECT model, version, column_name FROM features"):
            self._features.setdefault((m, v), set()).add(column)

        # Reads the HTTP API answers on the event loop (counters, results) use their own connection: in WAL mode a
        # reader never waits for a writer, so /healthz answers while a 500k-row request is written.
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._read_lock = threading.Lock()
        self._totals = (sum(self._pending.values()), sum(self._orphans.values()), len(self._streams))
        self.checkpoint_failures = 0  # checkpoints that raised (disk full, I/O errors): retried, the WAL keeps it all
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=_checkpoints, args=(weakref.ref(self), path, self._closing),
                                              name="store-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        with self._lock, self._read_lock:
            self._db.close()  # the last connection to close checkpoints the whole WAL
            self._reader.close()

    # --- transactions --------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed at the end, rolled back on any exception. A store that
        cannot write raises ``StoreUnavailable`` and reads unhealthy until a transaction commits again."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self.healthy = False
                raise StoreUnavailable(f"the store cannot start a transaction: {exc}") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back by itself (disk full does)
                if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and \
                        not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                    self.healthy = False
                    raise StoreUnavailable(f"the store cannot write: {exc}") from None
                raise
            self.healthy = True

    def _sync(self) -> None:
        """Make every transaction committed so far durable: sync the WAL file (``fdatasync``), outside the write
        lock. SQLite with synchronous=NORMAL keeps the store consistent on power loss by itself (it syncs the WAL
        before each checkpoint, and a reused WAL's header); this sync makes the acknowledged commits survive it too.
        A failing sync raises ``StoreUnavailable``: the client retries, and the retried predictions and labels are
        deduplicated (a retried sketch point would count twice: a sync failure is a failing disk, rare and loud)."""
        try:
            descriptor = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: every commit is in the database file, synced by the checkpoint that emptied it
        except OSError as exc:
            self.healthy = False
            raise StoreUnavailable(f"the store cannot open its WAL to sync it: {exc}") from None
        try:
            (getattr(os, "fdatasync", None) or os.fsync)(descriptor)
        except OSError as exc:
            self.healthy = False
            raise StoreUnavailable(f"the store cannot sync its WAL: {exc}") from None
        finally:
            os.close(descriptor)

    def probe(self) -> bool:
        """Try a small write (after a failure): ``healthy`` again once it commits."""
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO meta VALUES ('probe', '1') ON CONFLICT(key) DO UPDATE SET value = "
                           "CAST(value AS INTEGER) + 1")
        except StoreUnavailable:
            return False
        return True

    def _scalar(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        return int(self._db.execute(sql, parameters).fetchone()[0])

    def _count(self, name: str, n: int) -> None:
        if n:
            self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                             (name, n, n))

    def counters(self) -> dict[str, int]:
        """What the store counted, as committed (never waits for a write in progress)."""
        with self._read_lock:
            found = dict(self._reader.execute("SELECT name, value FROM counters").fetchall())
        found["pending_predictions"], found["orphan_labels"], found["streams"] = self._totals
        found["checkpoint_failures"] = self.checkpoint_failures
        return found

    # --- streams -------------------------------------------------------------------------------------------
    def streams(self) -> dict[tuple[str, str], Stream]:
        with self._lock:
            return dict(self._streams)

    def stream(self, model: str, version: str) -> Stream | None:
        return self._streams.get((model, version))

    def _admit(self, key: tuple[str, str], refused: dict[str, int], records: int) -> bool:
        """Whether a model may have a stream (the ``max_models`` cap); refusals are counted per record."""
        if key in self._streams or key in self._staged:
            return True
        if len(self._streams) + sum(1 for k in self._staged if k not in self._streams) >= self.max_models:
            reason = f"records of a new model past the cap of {self.max_models} models"
            refused[reason] = refused.get(reason, 0) + records
            self._count("models_over_cap", records)
            return False
        return True

    def _advance(self, key: tuple[str, str], latest_ns: int, arrived_ns: int, captured: bool,
                 sensitive: str | None = None) -> None:
        old = self._staged.get(key) or self._streams.get(key)
        stream = Stream(max(latest_ns, old.latest_ns) if old else latest_ns, max(arrived_ns, old.arrived_ns if old
                                                                                    else 0),
                        captured or (old.captured if old else False), sensitive or (old.sensitive if old else None))
        if stream.latest_ns > 0 and not (old and old.latest_ns > 0) and \
                self._orphans.get(key, 0) + self._orphan_delta.get(key, 0):
            self._db.execute("UPDATE orphans SET clock_ns = ? WHERE model = ? AND version = ? AND clock_ns IS NULL",
                             (stream.latest_ns, *key))
        self._db.execute("INSERT INTO streams (model, version, latest_ns, arrived_ns, captured, sensitive) VALUES "
                         "(?, ?, ?, ?, ?, ?) ON CONFLICT(model, version) DO UPDATE SET latest_ns = excluded.latest_ns, "
                         "arrived_ns = excluded.arrived_ns, captured = excluded.captured, sensitive = "
                         "excluded.sensitive", (*key, stream.latest_ns, stream.arrived_ns, int(stream.captured),
                                                stream.sensitive))
        self._staged[key] = stream

    def late_before(self, key: tuple[str, str]) -> int:
        """Event times before this are too late to change the model's windows."""
        stream = self._streams.get(key)
        return stream.latest_ns - self.max_lateness_ns if stream else -MAX_NS

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose in-memory mirrors (streams, quotas, features) change only if it commits."""
        self._staged: dict[tuple[str, str], Stream] = {}
        self._pending_delta: dict[tuple[str, str], int] = {}
        self._orphan_delta: dict[tuple[str, str], int] = {}
        self._feature_delta: dict[tuple[str, str], set[str]] = {}
        self._sid_staged = {}
        with self.transaction() as db:
            yield db
        self._sids.update(self._sid_staged)
        self._streams.update(self._staged)
        for mirror, delta in ((self._pending, self._pending_delta), (self._orphans, self._orphan_delta)):
            for key, n in delta.items():
                mirror[key] = mirror.get(key, 0) + n
        for key, names in self._feature_delta.items():
            self._features.setdefault(key, set()).update(names)
        self._totals = (sum(self._pending.values()), sum(self._orphans.values()), len(self._streams))

    def _sid(self, key: tuple[str, str]) -> int:
        """The number of a model's prediction rows (made in the write transaction when it is new)."""
        sid = self._sids.get(key) or self._sid_staged.get(key)
        if sid is None:
            self._db.execute("INSERT OR IGNORE INTO models (model, version) VALUES (?, ?)", key)
            sid = int(self._db.execute("SELECT sid FROM models WHERE model = ? AND version = ?", key).fetchone()[0])
            self._sid_staged[key] = sid
        return sid

    def _known_sid(self, model: str, version: str) -> int:
        """A model's number for reads: -1 (no rows) when it has none."""
        return self._sids.get((model, version), -1)

    def _touch(self, key: tuple[str, str], kind: str, time_ns: int, n: int = 1) -> None:
        self._db.execute("INSERT INTO touched VALUES (?, ?, ?, ?, ?) ON CONFLICT(model, version, kind, time_s) DO "
                         "UPDATE SET n = n + excluded.n", (*key, kind, time_ns // 1_000_000_000, n))

    def _bump(self, delta: dict[tuple[str, str], int], key: tuple[str, str], n: int) -> None:
        if n:
            delta[key] = delta.get(key, 0) + n

    # --- predictions ---------------------------------------------------------------------------------------
    def add_predictions(self, batches: Iterable[PredictionBatch], received_ns: int) -> Added:
        """Store prediction rows (deduplicated, late rows counted), join waiting orphan labels. A model at its
        pending quota has its rows refused (``Backpressure`` after the rest is committed)."""
        batches = list(batches)
        accepted = duplicate = joined = late = 0
        refused: dict[str, int] = {}
        quota: list[str] = []
        with self._lock, self._writing() as db:
            for batch in batches:
                key = (batch.model, batch.version)
                if not self._admit(key, refused, len(batch)):
                    continue
                pending = self._pending.get(key, 0) + self._pending_delta.get(key, 0)
                if pending + len(batch) > self.max_pending:
                    quota.append(f"model {batch.model!r} version {batch.version!r} has {pending} predictions "
                                 f"waiting for labels (cap {self.max_pending} per model)")
                    self._count("backpressure_predictions", len(batch))
                    continue
                times = batch.row_times()
                before = self.late_before(key)
                on_time = [i for i, t in enumerate(times) if t >= before]
                late += len(batch) - len(on_time)
                if not on_time:
                    refused[LATE_EVENT] = refused.get(LATE_EVENT, 0) + 1
                    continue
                fresh = self._insert_fresh(db, self._sid(key), batch, on_time, times, received_ns)
                duplicate += len(on_time) - len(fresh)
                accepted += len(fresh)
                if fresh:
                    fresh_times = np.asarray(times if len(fresh) == len(times) else [times[i] for i in fresh],
                                             dtype=np.int64)
                    for second in np.unique(fresh_times // 1_000_000_000).tolist():
                        self._touch(key, ROW, second * 1_000_000_000)
                    now_joined = self._join_orphans(batch, fresh, times)
                    joined += now_joined
                    self._bump(self._pending_delta, key, len(fresh) - now_joined)
                    self._bump(self._orphan_delta, key, -now_joined)
                    # a retried duplicate moves nothing (its time could be anything)
                    self._advance(key, int(fresh_times.max()), received_ns, bool(batch.features),
                                  batch.group_column)
            self._count("predictions", accepted)
            self._count("duplicate_predictions", duplicate)
            self._count("labels_joined", joined)
            self._count("late_dropped", late)
        self._sync()
        if quota:
            raise Backpressure("; ".join(quota))
        return Added(accepted, duplicate, joined, 0, late, refused)

    def _insert_fresh(self, db: sqlite3.Connection, sid: int, batch: PredictionBatch, positions: list[int],
                      times: list[int], received_ns: int) -> list[int]:
        """Insert the rows at ``positions`` whose ids the store does not hold yet (the first of ids repeated in the
        batch); those positions. Most batches are all new: inserted at once (``INSERT OR IGNORE`` inserting every
        row proves it), else rolled back and inserted after looking the ids up (``_fresh``)."""
        insert = ("INSERT {} INTO predictions (sid, id, time_ns, received_ns, label, score, value, extra) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        rows = _rows
        if batch.segments is not None or batch.groups is not None:  # segmented, or with sensitive values
            insert = ("INSERT {} INTO predictions (sid, id, time_ns, received_ns, label, score, value, extra, "
                      "segment, grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            rows = _grouped_rows
        db.execute("SAVEPOINT fresh")  # (an exception rolls the whole transaction back: ``transaction``)
        if db.executemany(insert.format("OR IGNORE"), rows(sid, batch, positions, times, received_ns)
                          ).rowcount == len(positions):
            db.execute("RELEASE fresh")
            return positions
        db.execute("ROLLBACK TO fresh")  # a repeated id (or a row SQLite refuses: raised below, as before)
        db.execute("RELEASE fresh")
        fresh = self._fresh(batch, positions)
        db.executemany(insert.format(""), rows(sid, batch, fresh, times, received_ns))
        return fresh

    def _fresh(self, batch: PredictionBatch, positions: list[int]) -> list[int]:
        """Those ``positions`` of the batch whose ids the store does not hold yet (the first of repeated ids)."""
        known: set[str] = set()
        wanted = [batch.ids[i] for i in positions]
        for begin in range(0, len(wanted), _CHUNK):
            ids = wanted[begin: begin + _CHUNK]
            marks = ",".join("?" * len(ids))
            known.update(row[0] for row in self._db.execute(
                f"SELECT id FROM predictions WHERE sid = ? AND id IN ({marks})",
                (self._known_sid(batch.model, batch.version), *ids)))
        fresh = []
        for i in positions:
            pid = batch.ids[i]
            if pid not in known:
                known.add(pid)
                fresh.append(i)
        return fresh

    def _join_orphans(self, batch: PredictionBatch, fresh: list[int], times: list[int]) -> int:
        """Join the orphan labels waiting for these new rows of the batch (in the batch's row order)."""
        key = (batch.model, batch.version)
        if not self._orphans.get(key, 0) + self._orphan_delta.get(key, 0):
            return 0
        joined = 0
        joins: list[LabelJoin] = []
        position = {batch.ids[i]: i for i in fresh}
        ids = [batch.ids[i] for i in fresh]
        for begin in range(0, len(ids), _CHUNK):
            chunk = ids[begin: begin + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found = self._db.execute(f"SELECT id, truth, received_ns FROM orphans WHERE model = ? AND version = ? "
                                     f"AND id IN ({marks})", (*key, *chunk)).fetchall()
            found.sort(key=lambda row: position[row[0]])
            for pid, truth, labeled_ns in found:
                done = self._db.execute("UPDATE predictions SET truth = ?, labeled_ns = ? WHERE sid = ? AND id = ? "
                                        "AND truth IS NULL AND expired = 0",
                                        (truth, labeled_ns, self._sid(key), pid)).rowcount
                joined += done
                if done and self.on_join is not None:
                    i = position[pid]  # the prediction's outputs as stored (``_rows``)
                    label = category_key(batch.labels[i]) if batch.labels is not None else None
                    value = batch.values[i] if batch.values is not None else None
                    joins.append(LabelJoin(pid, times[i], json.loads(truth), label, value))
            if found:
                self._db.execute(f"DELETE FROM orphans WHERE model = ? AND version = ? AND id IN ({marks})",
                                 (*key, *chunk))
        self._joined(key, joins)
        return joined

    def _joined(self, key: tuple[str, str], joins: list[LabelJoin]) -> None:
        """Tell ``on_join`` of labels that joined, in this transaction; store its new state and the changes it
        found with the join."""
        if self.on_join is None or not joins:
            return
        sid = self._sid(key)
        found = self._db.execute("SELECT state FROM sequential WHERE sid = ?", (sid,)).fetchone()
        state, changes = self.on_join(key, joins, None if found is None else found[0])
        if state is not None:
            self._db.execute("INSERT INTO sequential VALUES (?, ?) ON CONFLICT(sid) DO UPDATE SET state = "
                             "excluded.state", (sid, state))
        if changes:
            self._db.executemany("INSERT INTO sequential_changes (model, version, change) VALUES (?, ?, ?)",
                                 [(*key, json.dumps(change)) for change in changes])

    # --- labels --------------------------------------------------------------------------------------------
    def add_labels(self, batches: Iterable[LabelBatch], received_ns: int) -> Added:
        """Join labels to their predictions; the others wait as orphans. A model at its orphan quota has its
        unjoinable labels refused (``Backpressure`` naming it, after the joinable ones are committed)."""
        batches = list(batches)
        joined = orphaned = duplicate = 0
        refused: dict[str, int] = {}
        quota: dict[tuple[str, str], int] = {}
        with self._lock, self._writing() as db:
            for batch in batches:
                key = (batch.model, batch.version)
                if not self._admit(key, refused, len(batch)):
                    continue
                stream = self._staged.get(key) or self._streams.get(key)
                clock = stream.latest_ns if stream and stream.latest_ns > 0 else None  # None: the model's event
                # clock is not known yet (no prediction seen): its first prediction starts the orphan's TTL
                sid = self._known_sid(*key)
                seen: set[str] = set()  # the first label of an id in the batch wins, as against the store
                joins: list[LabelJoin] = []
                for begin in range(0, len(batch.ids), _CHUNK):
                    ids, labels = batch.ids[begin: begin + _CHUNK], batch.labels[begin: begin + _CHUNK]
                    marks = ",".join("?" * len(ids))
                    # id -> (event time, still waiting for its label, predicted label, predicted value, rowid: the
                    # update finds the row by it, ~1 us a label cheaper than through the (sid, id) index)
                    stored = {pid: (time_ns, waiting, label, value, rowid) for pid, time_ns, waiting, label, value,
                              rowid in db.execute(f"SELECT id, time_ns, truth IS NULL AND expired = 0, label, value, "
                                                  f"rowid FROM predictions WHERE sid = ? AND id IN ({marks})",
                                                  (sid, *ids))}
                    updates: list[tuple[Any, ...]] = []
                    seconds: dict[int, int] = {}
                    orphans: list[tuple[Any, ...]] = []
                    for pid, label in zip(ids, labels):
                        if pid in seen:
                            duplicate += 1
                            continue
                        found = stored.get(pid)
                        if found is not None:
                            seen.add(pid)
                            if found[1]:
                                updates.append((_json(label), received_ns, found[4]))
                                if self.on_join is not None:
                                    joins.append(LabelJoin(pid, found[0], label, found[2], found[3]))
                                second = found[0] // 1_000_000_000
                                seconds[second] = seconds.get(second, 0) + 1
                            else:
                                duplicate += 1  # labeled already (the first label wins), or past its label TTL
                            continue
                        room = self.max_orphans - self._orphans.get(key, 0) - self._orphan_delta.get(key, 0) - \
                            len(orphans)
                        if room <= 0:
                            quota[key] = quota.get(key, 0) + 1
                            continue
                        seen.add(pid)
                        orphans.append((*key, pid, _json(label), received_ns, clock))
                    if updates:
                        db.executemany("UPDATE predictions SET truth = ?, labeled_ns = ? WHERE rowid = ?", updates)
                        joined += len(updates)
                        self._bump(self._pending_delta, key, -len(updates))
                        for second, n in seconds.items():
                            self._touch(key, LABEL, second * 1_000_000_000, n)
                    if orphans:
                        inserted = db.executemany("INSERT OR IGNORE INTO orphans VALUES (?, ?, ?, ?, ?, ?)",
                                                  orphans).rowcount
                        orphaned += inserted
                        duplicate += len(orphans) - inserted  # waiting already (a retried label)
                        self._bump(self._orphan_delta, key, inserted)
                self._joined(key, joins)
                if key not in self._streams and key not in self._staged:
                    self._advance(key, 0, received_ns, False)
            self._count("labels_joined", joined)
            self._count("labels_orphaned", orphaned)
            self._count("duplicate_labels", duplicate)
            self._count("backpressure_labels", sum(quota.values()))
        self._sync()
        if quota:
            raise Backpressure("; ".join(f"model {m!r} version {v!r} has {self.max_orphans} labels waiting for their "
                                         f"predictions (cap per model): {n} refused" for (m, v), n in quota.items()))
        return Added(joined + orphaned, duplicate, joined, orphaned, 0, refused)

    # --- sketches ------------------------------------------------------------------------------------------
    def add_sketches(self, points: Iterable[SketchPoint], received_ns: int = 0) -> Added:
        """Store sketch points (late ones counted, features past the per-model cap refused per point)."""
        accepted = late = 0
        refused: dict[str, int] = {}
        with self._lock, self._writing() as db:
            for point in points:
                key = (point.model, point.version)
                if not self._admit(key, refused, 1):
                    continue
                known = self._features.get(key, set()) | self._feature_delta.get(key, set())
                if point.column not in known:
                    if len(known) >= self.max_features:
                        reason = f"sketch points of features past the cap of {self.max_features} per model"
                        refused[reason] = refused.get(reason, 0) + 1
                        self._count("features_over_cap", 1)
                        continue
                    db.execute("INSERT OR IGNORE INTO features VALUES (?, ?, ?)", (*key, point.column))
                    self._feature_delta.setdefault(key, set()).add(point.column)
                if point.time_unix_nano < self.late_before(key):
                    late += 1
                    refused[LATE_POINT] = refused.get(LATE_POINT, 0) + 1
                    continue
                db.execute("INSERT INTO sketches (model, version, column_name, start_ns, end_ns, sketch, segment) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (*key, point.column, point.start_unix_nano, point.time_unix_nano,
                            json.dumps(point.sketch.to_dict()), point.segment))
                self._touch(key, SKETCH, point.start_unix_nano)
                accepted += 1
                if key not in self._streams and key not in self._staged:
                    self._advance(key, 0, received_ns, False)
            self._count("sketch_points", accepted)
            self._count("late_dropped", late)
        self._sync()
        return Added(accepted, 0, 0, 0, late, refused)

    def sketch_points(self, model: str, version: str, start_ns: int, end_ns: int) -> list[StoredPoint]:
        """Sketch points that started in ``[start_ns, end_ns)``."""
        with self._lock:
            found = self._db.execute("SELECT column_name, start_ns, end_ns, sketch, segment FROM sketches WHERE "
                                     "model = ? AND version = ? AND start_ns >= ? AND start_ns < ?",
                                     (model, version, start_ns, end_ns)).fetchall()
        return [StoredPoint(column, start, end, json.loads(sketch), segment)
                for column, start, end, sketch, segment in found]

    def sketch_starts(self, model: str, version: str, first_ns: int, end_ns: int) -> list[int]:
        """Start times of the sketch points that started in ``[first_ns, end_ns)``, ascending, distinct."""
        with self._lock:
            return [row[0] for row in self._db.execute(
                "SELECT DISTINCT start_ns FROM sketches WHERE model = ? AND version = ? AND start_ns >= ? AND "
                "start_ns < ? ORDER BY start_ns", (model, version, first_ns, end_ns))]

    # --- changes and windows -------------------------------------------------------------------------------
    def touched(self, model: str, version: str) -> list[tuple[str, int, int]]:
        """(kind, second of event time, change count) of the changes recorded and not yet ``untouch``-ed."""
        with self._lock:
            return [(kind, t, n) for kind, t, n in self._db.execute(
                "SELECT kind, time_s, n FROM touched WHERE model = ? AND version = ?", (model, version))]

    def untouch(self, model: str, version: str, changes: Sequence[tuple[str, int, int]]) -> None:
        """Forget changes that were handled (one recorded again since then is kept: its count moved)."""
        if changes:
            with self.transaction() as db:
                db.executemany("DELETE FROM touched WHERE model = ? AND version = ? AND kind = ? AND time_s = ? AND "
                               "n = ?", [(model, version, kind, t, n) for kind, t, n in changes])

    def windows(self, model: str, version: str, scheme: str, *, keys: Iterable[int] | None = None,
                overlapping: tuple[int, int] | None = None, last_before: int | None = None,
                after: int | None = None) -> dict[int, tuple[int, int, str]]:
        """Evaluated windows of a scheme, key -> (first event time, last event time, state): those with the given
        keys, those overlapping ``[start, end)``, the one with the highest key ending before ``last_before``, or
        those with a key above ``after``."""
        base = "SELECT key, first_ns, last_ns, state FROM windows WHERE model = ? AND version = ? AND scheme = ?"
        parameters: list[Any] = [model, version, scheme]
        with self._lock:
            if keys is not None:
                found = self._by_keys(base, parameters, keys)
            elif overlapping is not None:
                found = self._db.execute(f"{base} AND last_ns >= ? AND first_ns < ?",
                                         (*parameters, *overlapping)).fetchall()
            elif last_before is not None:
                found = self._db.execute(f"{base} AND last_ns < ? ORDER BY key DESC LIMIT 1",
                                         (*parameters, last_before)).fetchall()
            else:
                found = self._db.execute(f"{base} AND key > ?", (*parameters, -MAX_NS if after is None else after)
                                         ).fetchall()
        return {k: (first, last, state) for k, first, last, state in found}

    def evaluated_at(self, model: str, version: str, scheme: str, keys: Iterable[int]) -> dict[int, int]:
        """When each of these windows was last evaluated (processing time, ns): key -> evaluated_ns, for those
        evaluated."""
        with self._lock:
            return dict(self._by_keys("SELECT key, evaluated_ns FROM windows WHERE model = ? AND version = ? AND "
                                      "scheme = ?", [model, version, scheme], keys))

    def _by_keys(self, base: str, parameters: list[Any], keys: Iterable[int]) -> list[Any]:
        """Rows of ``base`` (a query of the windows table) ``AND key IN (...)`` the keys, ``_CHUNK`` keys a query."""
        found: list[Any] = []
        wanted = list(keys)
        for begin in range(0, len(wanted), _CHUNK):
            chunk = wanted[begin: begin + _CHUNK]
            found += self._db.execute(f"{base} AND key IN ({','.join('?' * len(chunk))})",
                                      (*parameters, *chunk)).fetchall()
        return found

    def earliest_window(self, model: str, version: str, scheme: str) -> tuple[int, tuple[int, int, str]] | None:
        """(key, (first event time, last event time, state)) of the oldest window of a scheme the store keeps."""
        with self._lock:
            found = self._db.execute("SELECT key, first_ns, last_ns, state FROM windows WHERE model = ? AND "
                                     "version = ? AND scheme = ? ORDER BY key LIMIT 1",
                                     (model, version, scheme)).fetchone()
        return None if found is None else (found[0], (found[1], found[2], found[3]))

    def count_windows(self, model: str, version: str, scheme: str, before_key: int) -> int:
        with self._lock:
            return self._scalar("SELECT count(*) FROM windows WHERE model = ? AND version = ? AND scheme = ? AND "
                                "key < ?", (model, version, scheme, before_key))

    def keys(self, model: str, version: str, after: tuple[int, str] | None, until_ns: int,
             limit: int | None = None, first: tuple[int, str] | None = None) -> list[tuple[int, str, bool]]:
        """(event time, id, labeled) of predictions after the key ``after`` (or from the key ``first``) with event
        time <= ``until_ns``, in (event time, id) order: the order of row windows."""
        where = "sid = ? AND time_ns <= ?"
        parameters: list[Any] = [self._known_sid(model, version), until_ns]
        if after is not None:
            where += " AND (time_ns, id) > (?, ?)"
            parameters += list(after)
        if first is not None:
            where += " AND (time_ns, id) >= (?, ?)"
            parameters += list(first)
        with self._lock:
            return [(t, pid, bool(labeled)) for t, pid, labeled in self._db.execute(
                f"SELECT time_ns, id, truth IS NOT NULL FROM predictions WHERE {where} ORDER BY time_ns, id"
                f"{' LIMIT ?' if limit else ''}", (*parameters, *([limit] if limit else [])))]

    def count_between(self, model: str, version: str, first: tuple[int, str], last: tuple[int, str]
                      ) -> tuple[int, int]:
        """(rows, labeled rows) with keys from ``first`` to ``last``, both included."""
        with self._lock:
            rows, labeled = self._db.execute(
                "SELECT count(*), count(truth) FROM predictions WHERE sid = ? AND (time_ns, id) >= (?, ?) AND "
                "(time_ns, id) <= (?, ?)", (self._known_sid(model, version), *first, *last)).fetchone()
        return int(rows), int(labeled)

    def time_buckets(self, model: str, version: str, width_ns: int, first_ns: int, end_ns: int
                     ) -> dict[int, tuple[int, int]]:
        """Time windows of ``width_ns`` with predictions in ``[first_ns, end_ns)``: bucket -> (rows, labeled)."""
        with self._lock:
            found = self._db.execute("SELECT time_ns / ?, count(*), count(truth) FROM predictions WHERE sid = ? "
                                     "AND time_ns >= ? AND time_ns < ? GROUP BY time_ns / ?",
                                     (width_ns, self._known_sid(model, version), first_ns, end_ns,
                                      width_ns)).fetchall()
        return {int(bucket): (int(rows), int(labeled)) for bucket, rows, labeled in found}

    def time_bucket_keys(self, model: str, version: str, width_ns: int, first_ns: int, end_ns: int) -> list[int]:
        """The time windows of ``width_ns`` with predictions in ``[first_ns, end_ns)`` (the keys of ``time_buckets``):
        found by seeking the (sid, time_ns) index from one window to the next, one lookup a window, where
        ``time_buckets`` reads every row (150 ms for a 250k-row window)."""
        sid = self._known_sid(model, version)
        found: list[int] = []
        at = first_ns
        with self._lock:
            while at < end_ns:
                time_ns = self._db.execute("SELECT min(time_ns) FROM predictions WHERE sid = ? AND time_ns >= ? AND "
                                           "time_ns < ?", (sid, at, end_ns)).fetchone()[0]
                if time_ns is None:
                    break
                found.append(int(time_ns) // width_ns)
                at = (found[-1] + 1) * width_ns
        return found

    def rows(self, model: str, version: str, first: tuple[int, str] | None = None,
             last: tuple[int, str] | None = None, *, start_ns: int | None = None,
             end_ns: int | None = None) -> list[Joined]:
        """Predictions of a model in (event time, id) order: between the keys ``first`` and ``last`` (inclusive),
        and/or with ``start_ns <= time_ns < end_ns``."""
        return self.stored_rows(model, version, first, last, start_ns=start_ns, end_ns=end_ns).joined()

    def stored_rows(self, model: str, version: str, first: tuple[int, str] | None = None,
                    last: tuple[int, str] | None = None, *, start_ns: int | None = None,
                    end_ns: int | None = None) -> StoredRows:
        """``rows``, a list per column."""
        where, parameters = self._row_filter(model, version, first, last, start_ns, end_ns)
        with self._lock:
            found = self._db.execute(
                "SELECT id, time_ns, label, score, value, extra, truth, labeled_ns, segment, grp FROM predictions "
                f"WHERE {where} ORDER BY time_ns, id", parameters).fetchall()
        if not found:
            return StoredRows.empty()
        ids, times, labels, scores, values, extras, truths, labeled_ns, segments, groups = (
            list(c) for c in zip(*found))
        return StoredRows(ids, times, labels, scores, values, extras, _decoded(truths), labeled_ns,
                          segments if any(v is not None for v in segments) else [],
                          groups if any(v is not None for v in groups) else [])

    def row_chunks(self, model: str, version: str, first: tuple[int, str] | None = None,
                   last: tuple[int, str] | None = None, *, start_ns: int | None = None,
                   end_ns: int | None = None, size: int = READ_CHUNK) -> Generator[StoredRows, None, None]:
        """``stored_rows`` in chunks of at most ``size`` rows, in the same order, without the ids (``ids`` is
        empty: a window's evaluation of rows without multiclass scores or captured features needs none).

        Read on a connection of its own (a WAL snapshot of what was committed when the read began): the store's
        writes go on while a window of 250k rows is read, and only a chunk of Python objects is alive at once."""
        where, parameters = self._row_filter(model, version, first, last, start_ns, end_ns)
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            cursor = reader.execute(
                "SELECT time_ns, label, score, value, extra, truth, labeled_ns FROM predictions WHERE "
                f"{where} ORDER BY time_ns, id", parameters)
            while True:
                found = cursor.fetchmany(size)
                if not found:
                    return
                times, labels, scores, values, extras, truths, labeled_ns = (list(c) for c in zip(*found))
                del found
                yield StoredRows([], times, labels, scores, values, extras, _decoded(truths), labeled_ns)
        finally:
            reader.close()

    def _row_filter(self, model: str, version: str, first: tuple[int, str] | None, last: tuple[int, str] | None,
                    start_ns: int | None, end_ns: int | None) -> tuple[str, list[Any]]:
        where: list[str] = ["sid = ?"]
        parameters: list[Any] = [self._known_sid(model, version)]
        if first is not None:
            where.append("(time_ns, id) >= (?, ?)")
            parameters += list(first)
        if last is not None:
            where.append("(time_ns, id) <= (?, ?)")
            parameters += list(last)
        if start_ns is not None:
            where.append("time_ns >= ?")
            parameters.append(start_ns)
        if end_ns is not None:
            where.append("time_ns < ?")
            parameters.append(end_ns)
        return " AND ".join(where), parameters

    def row_position(self, model: str, version: str, key: tuple[int, str]
                     ) -> tuple[int, int, tuple[int, int, int] | None]:
        """Where the prediction with this key is in the row windows: (k, n, evaluated) — it is the n-th row (from
        0) in (event time, id) order after the first row of row window k, the newest evaluated row window that
        starts at or before it (windows before it may have been pruned; their number is kept), or k = 0 counting
        from the first row when there is none; ``evaluated`` = (first event time, last event time, rows) of window
        k as evaluated, or None."""
        sid = self._known_sid(model, version)
        with self._lock:
            found = self._db.execute("SELECT key, first_ns, last_ns, state FROM windows WHERE model = ? AND version = "
                                     "? AND scheme = 'rows' AND first_ns <= ? ORDER BY key DESC LIMIT 2",
                                     (model, version, key[0])).fetchall()
            for number, first_ns, last_ns, state in found:
                rows, _, first, _ = json.loads(state.removeprefix("failed "))  # windows.row_state
                if (int(first[0]), str(first[1])) <= key:
                    n = self._scalar("SELECT count(*) FROM predictions WHERE sid = ? AND (time_ns, id) >= (?, ?) AND "
                                     "(time_ns, id) < (?, ?)", (sid, int(first[0]), str(first[1]), *key))
                    return int(number), n, (int(first_ns), int(last_ns), int(rows))
            return 0, self._scalar("SELECT count(*) FROM predictions WHERE sid = ? AND (time_ns, id) < (?, ?)",
                                   (sid, *key)), None

    # --- sequential detection ------------------------------------------------------------------------------
    def sequential_changes(self, limit: int = 1000) -> list[tuple[int, str, str, dict[str, Any]]]:
        """(sequence number, model, version, change) of the changes sequential detection found and the processor
        has not reported yet, oldest first."""
        with self._lock:
            return [(seq, model, version, json.loads(change)) for seq, model, version, change in self._db.execute(
                "SELECT seq, model, version, change FROM sequential_changes ORDER BY seq LIMIT ?", (limit,))]

    def forget_sequential_changes(self, seqs: Sequence[int]) -> None:
        """The processor reported these changes (results and alerts)."""
        if seqs:
            with self.transaction() as db:
                db.executemany("DELETE FROM sequential_changes WHERE seq = ?", [(s,) for s in seqs])

    def sequential_state(self, model: str, version: str) -> str | None:
        """The stored state of the model's sequential detection (JSON), if any."""
        with self._lock:
            found = self._db.execute("SELECT state FROM sequential WHERE sid = ?",
                                     (self._known_sid(model, version),)).fetchone()
        return None if found is None else str(found[0])

    # --- time ----------------------------------------------------------------------------------------------
    def expire(self, model: str, version: str, clock_ns: int, now_ns: int) -> tuple[int, int]:
        """Stop waiting for labels of the model's predictions ``label_ttl`` behind its event-time clock, and drop
        orphans the clock (or processing time) has moved ``orphan_ttl`` past (both counted)."""
        key = (model, version)
        with self._lock, self._writing() as db:
            expired = db.execute("UPDATE predictions SET expired = 1 WHERE sid = ? AND truth IS NULL AND expired = 0 "
                                 "AND time_ns < ?", (self._known_sid(*key), clock_ns - self.label_ttl_ns)).rowcount
            dropped = 0
            if self._orphans.get(key):
                dropped = db.execute("DELETE FROM orphans WHERE model = ? AND version = ? AND (clock_ns < ? OR "
                                     "received_ns < ?)", (*key, clock_ns - self.orphan_ttl_ns,
                                                          now_ns - self.orphan_ttl_ns)).rowcount
            self._count("expired_predictions", expired)
            self._count("expired_orphans", dropped)
            self._bump(self._pending_delta, key, -expired)
            self._bump(self._orphan_delta, key, -dropped)
        return expired, dropped

    def prune(self, model: str, version: str, before_ns: int, limit: int | None = None) -> tuple[int, bool]:
        """Delete the model's predictions, sketch points and window bookkeeping with event times before ``before_ns``
        (the caller passes a time whose windows can no longer change: past the label TTL and the lateness bound,
        plus the retention); (predictions deleted, counted ``pruned_predictions``; whether all of them are gone).
        Window results stay. With ``limit``, one transaction deletes about the oldest ``limit`` predictions (the rows
        of one event time go together), so that the writes of requests go on between the calls: one transaction
        deleting the 750k rows of a 30-second sweep at 25k rows/s held the store for 2-3 s."""
        key = (model, version)
        with self._lock, self._writing() as db:
            sid = self._known_sid(*key)
            cut = before_ns
            if limit is not None:
                found = db.execute("SELECT time_ns FROM predictions WHERE sid = ? AND time_ns < ? ORDER BY time_ns "
                                   "LIMIT 1 OFFSET ?", (sid, before_ns, limit)).fetchone()
                if found is not None:
                    oldest = db.execute("SELECT min(time_ns) FROM predictions WHERE sid = ? AND time_ns < ?",
                                        (sid, before_ns)).fetchone()[0]
                    cut = max(int(found[0]), int(oldest) + 1)
            pending = db.execute("SELECT count(*) FROM predictions WHERE sid = ? AND time_ns < ? AND truth IS NULL "
                                 "AND expired = 0", (sid, cut)).fetchone()[0]
            deleted = db.execute("DELETE FROM predictions WHERE sid = ? AND time_ns < ?", (sid, cut)).rowcount
            if cut == before_ns:
                db.execute("DELETE FROM sketches WHERE model = ? AND version = ? AND start_ns < ?",
                           (*key, before_ns))
                # The bookkeeping of row windows that ended before the cut, but the newest (row windows count on
                # from it; their key is their number). Time windows keep theirs, one a window: their number is
                # their rank.
                db.execute("DELETE FROM windows WHERE model = ? AND version = ? AND scheme = 'rows' AND last_ns < ? "
                           "AND key < (SELECT max(key) FROM windows AS newest WHERE newest.model = windows.model AND "
                           "newest.version = windows.version AND newest.scheme = 'rows')", (*key, before_ns))
            self._count("pruned_predictions", deleted)
            self._bump(self._pending_delta, key, -pending)
        return deleted, cut == before_ns

    def forget_windows(self, model: str, version: str, scheme: str, keys: Iterable[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM windows WHERE model = ? AND version = ? AND scheme = ? AND key = ?",
                           [(model, version, scheme, k) for k in keys])

    # --- profiles and results ------------------------------------------------------------------------------
    def put_profile(self, model: str, version: str, profile: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO profiles VALUES (?, ?, ?) ON CONFLICT(model, version) DO UPDATE SET "
                       "profile = excluded.profile", (model, version, json.dumps(profile)))

    def profiles(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(row[0]) for row in self._db.execute("SELECT profile FROM profiles").fetchall()]

    def put_results(self, model: str, version: str, rows: Sequence[dict[str, Any]], *,
                    window: tuple[str, int, int, int, str] | None = None, evaluated_ns: int = 0,
                    replace: tuple[str, Sequence[str]] | None = None) -> None:
        """Store window results in one transaction: ``rows`` replace the rows of the same window, column, kind and
        metric; ``replace`` = (period, columns) first deletes that window's earlier rows of those columns (a
        revision drops what no longer applies; the changes sequential detection found in it stay); ``window`` =
        (scheme, key, first event time, last event time, state) records what was evaluated."""
        with self.transaction() as db:
            if replace is not None and rows:
                period, columns = replace
                db.executemany("DELETE FROM results WHERE model = ? AND version = ? AND period = ? AND window = ? "
                               "AND column_name = ? AND kind != ?", [(model, version, period, rows[0]["window"], c,
                                                                      PERFORMANCE_CHANGE) for c in columns])
            db.executemany(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model, version, period, window, "
                "column_name, kind, metric, segment) DO UPDATE SET row = excluded.row",
                [(model, version, r["period"], r["window"], r["column"], r["kind"], r["metric"], json.dumps(r),
                  r.get("segment") or "") for r in rows])
            if window is not None:
                db.execute("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model, version, scheme, "
                           "key) DO UPDATE SET first_ns = excluded.first_ns, last_ns = excluded.last_ns, state = "
                           "excluded.state, evaluated_ns = excluded.evaluated_ns",
                           (model, version, *window, evaluated_ns))

    def delete_results(self, model: str, version: str, period: str, first_window: int,
                       columns: Sequence[str]) -> None:
        """Drop the results of windows from ``first_window`` on for these columns (their numbering moved); the
        changes sequential detection found stay (they were found once, in the window they were in then)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM results WHERE model = ? AND version = ? AND period = ? AND window >= ? AND "
                           "column_name = ? AND kind != ?", [(model, version, period, first_window, c,
                                                              PERFORMANCE_CHANGE) for c in columns])

    def results(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored window results, filtered on model, version, period, kind, window, column, metric, segment ('' for
        the whole windows' rows alone)."""
        columns = {"model": "model", "version": "version", "period": "period", "kind": "kind", "window": "window",
                   "column": "column_name", "metric": "metric", "segment": "segment"}
        where = " AND ".join(f"{columns[k]} = ?" for k, v in filters.items() if v is not None and k in columns)
        values = [v for k, v in filters.items() if v is not None and k in columns]
        with self._read_lock:
            found = self._reader.execute(f"SELECT row FROM results {'WHERE ' + where if where else ''} ORDER BY "
                                         "model, version, period DESC, window, segment, column_name, kind, metric",
                                         values).fetchall()
        return [json.loads(row[0]) for row in found]


def _checkpoints(store: weakref.ref[Store], path: str, closing: threading.Event) -> None:
    """A store's checkpointer: copy committed WAL frames into the database every ``CHECKPOINT_S`` on a connection of
    its own, outside the write lock. Requests' commits then append to the WAL and sync it, nothing more (SQLite's
    automatic checkpoint, run by whichever commit crossed 1000 frames, copied ~4 MiB and synced the database file
    under the lock). A passive checkpoint never waits for readers or writers, but while writes go on it never finds
    the WAL fully copied, and only a fully copied WAL starts over from its beginning: past ``WAL_RESTART_FRAMES``
    one is completed under the write lock (the few frames left to copy), which bounds the WAL file. Ends when the
    store closes or is collected (it holds the store weakly)."""
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=FULL")
        while not closing.wait(CHECKPOINT_S):
            found = store()
            if found is None:
                return
            try:
                _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames >= WAL_RESTART_FRAMES:
                    with found._lock:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:  # disk full, I/O errors: the WAL keeps every commit; tried again
                found.checkpoint_failures += 1
            del found
    finally:
        connection.close()


def _json(value: Any) -> str:
    """``json.dumps(value)``; a string (most labels) by the encoder's C function, as ``json.dumps`` does, without
    making an encoder each time."""
    return encode_basestring_ascii(value) if type(value) is str else json.dumps(value)


def _decoded(truths: list[Any]) -> list[Any]:
    """Stored labels (each a JSON document, None where none arrived) decoded: each distinct document once when
    they are few and decode to plain values (a classifier's labels: rows then share their label objects), else in
    one ``json.loads`` call."""
    distinct = set(truths)
    if len(distinct) <= 1024:
        lookup = {t: None if t is None else json.loads(t) for t in distinct}
        if all(v is None or type(v) in (str, int, float, bool) for v in lookup.values()):
            return list(map(lookup.__getitem__, truths))
    if all(t is None for t in truths):
        return truths
    decoded = iter(json.loads("[" + ",".join(t for t in truths if t is not None) + "]"))
    return [None if t is None else next(decoded) for t in truths]


def _rows(sid: int, batch: PredictionBatch, positions: list[int], times: list[int],
          received_ns: int) -> list[tuple[Any, ...]]:
    """The ``predictions`` rows of those positions of a batch, built a column at a time (the typed columns of a
    binary or regression stream need no per-row work but the labels' category keys)."""
    if (batch.scores and "" not in batch.scores) or batch.features:  # multiclass scores or captured features: JSON
        return [(sid, batch.ids[i], times[i], received_ns, *_columns(batch, i)) for i in positions]
    n = len(positions)
    labels: Any = [None] * n
    if batch.labels is not None:
        labels = [batch.labels[i] for i in positions]
        if not all(type(v) is str for v in labels):  # a string is its own category key
            labels = [category_key(v) for v in labels]
    score = batch.scores.get("")
    scores: Any = [score[i] for i in positions] if score is not None else [None] * n
    values: Any = [batch.values[i] for i in positions] if batch.values is not None else [None] * n
    ids = [batch.ids[i] for i in positions]
    at = [times[i] for i in positions]
    return [(sid, pid, t, received_ns, label, p, v, None)
            for pid, t, label, p, v in zip(ids, at, labels, scores, values)]


def _grouped_rows(sid: int, batch: PredictionBatch, positions: list[int], times: list[int],
                  received_ns: int) -> list[tuple[Any, ...]]:
    """``_rows`` with each row's segment and sensitive value (None where the batch has none)."""
    segments, groups = batch.segments, batch.groups
    return [(*row, segments[i] if segments is not None else None, groups[i] if groups is not None else None)
            for row, i in zip(_rows(sid, batch, positions, times, received_ns), positions)]


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
