"""The on-disk result store of a sweep: one SQLite file.

Tables
------
``points(key, result, run)``
    The result of one point (a config, a workload, a board) under its stable hash
    (:func:`lowbit.sweep.spec.point_key`): JSON ``{"status", "error", "metrics"}``.
``resources(key, result, run)``
    The resources of one design (a config on a board, under one resource model), shared by
    every workload of that design.
``runs(run, spec, points, computed)``
    One row per sweep run: how many points it planned and how many it computed.

Every result is committed as soon as it arrives (the parent process is the only writer), so
a sweep killed at any moment keeps everything finished before and a rerun computes only
what is missing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = ["STORE_SCHEMA", "Store"]

STORE_SCHEMA = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY AUTOINCREMENT, spec TEXT NOT NULL,
                                 points INTEGER NOT NULL, computed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS points (key TEXT PRIMARY KEY, result TEXT NOT NULL,
                                   run INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (key TEXT PRIMARY KEY, result TEXT NOT NULL,
                                      run INTEGER NOT NULL);
"""


class Store:
    """A sweep's SQLite store at ``path`` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.executescript(_TABLES)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(STORE_SCHEMA),))
        elif row[0] != str(STORE_SCHEMA):
            raise ValueError(f"sweep store {str(self.path)!r} has schema {row[0]}; this lowbit "
                             f"reads schema {STORE_SCHEMA} (use another --out folder)")
        self.run: int | None = None

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- runs -----------------------------------------------------------------------------

    def begin_run(self, spec: str, points: int) -> int:
        with self._db:
            cur = self._db.execute("INSERT INTO runs (spec, points) VALUES (?, ?)",
                                   (spec, points))
        self.run = int(cur.lastrowid)
        return self.run

    def runs(self) -> list[dict]:
        rows = self._db.execute("SELECT run, spec, points, computed FROM runs ORDER BY run")
        return [dict(run=r, spec=s, points=p, computed=c) for r, s, p, c in rows]

    # -- results --------------------------------------------------------------------------

    def _get(self, table: str, keys: Iterable[str]) -> dict[str, dict]:
        keys = list(keys)
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, result in self._db.execute(
                    f"SELECT key, result FROM {table} WHERE key IN ({marks})", chunk):
                out[key] = json.loads(result)
        return out

    def get_points(self, keys: Iterable[str]) -> dict[str, dict]:
        return self._get("points", keys)

    def get_resources(self, keys: Iterable[str]) -> dict[str, dict]:
        return self._get("resources", keys)

    def put_results(self, points: list[tuple[str, dict]],
                    resources: tuple[str, dict] | None = None) -> None:
        """Store point results (and a design's resources) in one transaction."""
        run = self.run or 0
        with self._db:
            for key, result in points:
                self._db.execute("INSERT OR REPLACE INTO points VALUES (?, ?, ?)",
                                 (key, json.dumps(result, sort_keys=True), run))
            if resources is not None:
                self._db.execute("INSERT OR REPLACE INTO resources VALUES (?, ?, ?)",
                                 (resources[0], json.dumps(resources[1], sort_keys=True), run))
            if points:
                self._db.execute("UPDATE runs SET computed = computed + ? WHERE run = ?",
                                 (len(points), run))

    def count(self, table: str = "points", *, run: int | None = None) -> int:
        if table not in ("points", "resources"):
            raise ValueError(f"table must be points or resources, not {table!r}")
        if run is None:
            return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return self._db.execute(f"SELECT COUNT(*) FROM {table} WHERE run = ?",
                                (run,)).fetchone()[0]

    def point_runs(self) -> dict[str, int]:
        """Which run computed each stored point."""
        return dict(self._db.execute("SELECT key, run FROM points"))
