"""Alert state: one firing per alert until it resolves, persisted, so a restart re-fires nothing.

An alert is identified by (model, version, kind, column, metric), and its segment for a segment's rows. Its state
follows the newest window evaluated for it: a window result with ``alert`` true fires it (if it was not firing), one
with ``alert`` false resolves it (if it was firing); revisions of older windows do not move it; ``alert`` empty (not
enough data) leaves it as is. Transitions go to the sinks (OTLP ``ml.alert`` events and ``ml.alerts``,
Alertmanager, a webhook).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FIRING, RESOLVED = "firing", "resolved"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (key TEXT PRIMARY KEY, state TEXT NOT NULL, window INTEGER NOT NULL,
    since_ns INTEGER NOT NULL, result TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Transition:
    state: str
    since_ns: int
    result: dict[str, Any]  # the window result that moved the alert

    @property
    def labels(self) -> dict[str, str]:
        r = self.result
        labels = {"model": r["model"], "version": r["model_version"], "kind": r["kind"], "column": r["column"],
                  "metric": r["metric"]}
        if r.get("segment") is not None:
            labels["segment"] = r["segment"]
        return labels


class AlertBook:
    """Alert states in the processor's SQLite file (its own connection)."""

    def __init__(self, path: str) -> None:
        # Its own connection to the store's file: under a heavy load the store's write transactions hold the file,
        # so wait for them (SQLite's default of 5 s made alert updates fail with "database is locked").
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=120)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Its commits never checkpoint: the store's checkpointer thread does (``store._checkpoints``). With SQLite's
        # automatic checkpoint, an alert update after each window's evaluation copied the WAL (thousands of frames)
        # and synced the database while holding the file's write lock: every request's write waited 1.6-2.3 s.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        # Nor do they sync the WAL (held the file's write lock through an fsync that waited behind the
        # checkpointer's sync of the database: requests waited ~2 s at every window's alert update). They reach the
        # disk with the next sync of the store's (every request syncs the same WAL) or checkpoint; a power loss in
        # between can lose the last updates, which the next evaluation of those alerts' columns makes again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def key(result: dict[str, Any]) -> str:
        key = [result["model"], result["model_version"], result["kind"], result["column"], result["metric"]]
        if result.get("segment") is not None:  # the whole window's alerts keep the keys they had
            key.append(result["segment"])
        return json.dumps(key)

    def update(self, results: Iterable[dict[str, Any]], now_ns: int) -> list[Transition]:
        """Apply a window's results; the transitions they cause, recorded before they are returned."""
        transitions = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for result in results:
                    if result.get("period") != "analysis" or result.get("alert") is None:
                        continue
                    key = self.key(result)
                    found = self._db.execute("SELECT state, window FROM alerts WHERE key = ?", (key,)).fetchone()
                    if found is not None and result["window"] < found[1]:
                        continue  # a revision of an older window
                    state = FIRING if result["alert"] else RESOLVED
                    previous = found[0] if found else RESOLVED
                    self._db.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                                     "state = excluded.state, window = excluded.window, since_ns = CASE WHEN "
                                     "alerts.state = excluded.state THEN alerts.since_ns ELSE excluded.since_ns END, "
                                     "result = excluded.result",
                                     (key, state, result["window"], now_ns, json.dumps(result)))
                    if state != previous:
                        transitions.append(Transition(state, now_ns, result))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return transitions

    def firing(self) -> list[Transition]:
        with self._lock:
            found = self._db.execute("SELECT since_ns, result FROM alerts WHERE state = ?", (FIRING,)).fetchall()
        return [Transition(FIRING, since, json.loads(result)) for since, result in found]
