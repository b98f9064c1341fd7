"""Stage results of a predict run, kept in the run database itself (one SQLite file).

A stage's result is stored, committed, under (stage, key) the moment it is known (a formula's
distinct groups, one candidate's relaxation, a formula's final ranking), so a resumed run reads
it back instead of recomputing, and the report reads the same rows.  The table sits beside
ASE's tables in the file; the run's writer lock (``respmatch.store.RunStore``) is held by the
process that writes here.  Values are JSON.

Written here because the run database has no place for results that are not one row per
structure; a generic store of stage results in the run layer would replace this module.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

_TABLE = "CREATE TABLE IF NOT EXISTS respmatch_stages (stage TEXT, key TEXT, value TEXT, PRIMARY KEY (stage, key))"
TIME_STAGE = "time"  # key: a stage name; value: {"wall_s": ..., "cpu_s": ...} summed over runs


def has_stages(path: str | Path) -> bool:
    """Whether the database holds stage results (a predict run); reads only."""
    if not Path(path).is_file():
        return False
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'respmatch_stages'").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


class StageStore:
    """(stage, key) → JSON value in the run database; ``read_only`` never creates the table."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = str(path)
        uri = f"file:{self.path}?mode=ro" if read_only else f"file:{self.path}"
        self.con = sqlite3.connect(uri, uri=True, timeout=60)
        if not read_only:
            with self.con:
                self.con.execute(_TABLE)

    def close(self) -> None:
        self.con.close()

    def get(self, stage: str, key: str):
        row = self.con.execute("SELECT value FROM respmatch_stages WHERE stage = ? AND key = ?", (stage, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def stage(self, stage: str) -> dict:
        """Every stored result of one stage, by key."""
        rows = self.con.execute("SELECT key, value FROM respmatch_stages WHERE stage = ?", (stage,))
        return {key: json.loads(value) for key, value in rows}

    def put_many(self, stage: str, items: dict) -> None:
        """Store results of one stage in one transaction."""
        with self.con:
            self.con.executemany(
                "INSERT OR REPLACE INTO respmatch_stages VALUES (?, ?, ?)",
                [(stage, str(key), json.dumps(value)) for key, value in items.items()],
            )

    def add_time(self, stage: str, wall_s: float, cpu_s: float) -> None:
        """Add one pass's seconds to a stage's total (a resumed run adds its own)."""
        spent = self.get(TIME_STAGE, stage) or {"wall_s": 0.0, "cpu_s": 0.0}
        self.put_many(TIME_STAGE, {stage: {"wall_s": spent["wall_s"] + wall_s, "cpu_s": spent["cpu_s"] + cpu_s}})
