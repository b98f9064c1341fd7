"""Stage records: what a stage after the search computed, kept in the run's own database.

A stage (``"distinct"``, ``"physics"``, ``"final"``, …) stores typed records under string keys
(e.g. a formula, or ``FORMULA/GROUP``) in the table ``respmatch_stage_record``, one JSON object
per record, and its settings in ``respmatch_stage``.  A record type is a dataclass whose fields
hold JSON values (numbers, strings, booleans, None, and lists and dicts of those; numpy values
are stored as plain ones); it comes back as the same dataclass.
A stage resumes by reading the keys it already stored and computing only the others; records
are committed as they are written, so a kill loses only those in flight.  ``begin`` refuses to
continue a stage under other settings (``check`` does the same without writing), ``finish``
marks it whole.

Writing needs the run's writer lock (``RunStore`` holds it); reading opens the file read-only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import TypeVar

from respmatch.config import plain
from respmatch.errors import RespmatchError

T = TypeVar("T")

_TABLES = (
    "CREATE TABLE IF NOT EXISTS respmatch_stage (stage TEXT PRIMARY KEY, settings TEXT NOT NULL, finished INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS respmatch_stage_record (stage TEXT NOT NULL, key TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (stage, key))",
)


def _json(value) -> str:
    return json.dumps(plain(value), sort_keys=True)


class Stages:
    """The stage records of one run file (None: a run without a file, nothing stored)."""

    def __init__(self, filename: str | Path | None):
        self.filename = None if filename is None else str(filename)

    # --- reading -----------------------------------------------------------------------------

    def _query(self, sql: str, parameters=()) -> list[tuple]:
        if self.filename is None or not Path(self.filename).is_file():
            return []
        con = sqlite3.connect(Path(self.filename).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return con.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError:  # no stage stored yet: no tables
            return []
        finally:
            con.close()

    def names(self) -> list[str]:
        return [name for (name,) in self._query("SELECT stage FROM respmatch_stage ORDER BY rowid")]

    def settings(self, stage: str) -> dict | None:
        """The settings the stage was begun with; None when it never began."""
        found = self._query("SELECT settings FROM respmatch_stage WHERE stage = ?", (stage,))
        return json.loads(found[0][0]) if found else None

    def finished(self, stage: str) -> bool:
        found = self._query("SELECT finished FROM respmatch_stage WHERE stage = ?", (stage,))
        return bool(found and found[0][0])

    def records(self, stage: str, kind: type[T]) -> dict[str, T]:
        """The stage's records, key -> ``kind`` instance, in the order they were first written."""
        names = {f.name for f in fields(kind)}
        out = {}
        for key, text in self._query(
            "SELECT key, record FROM respmatch_stage_record WHERE stage = ? ORDER BY rowid", (stage,)
        ):
            values = json.loads(text)
            if set(values) != names:
                raise RespmatchError(
                    f"{self.filename}: stage {stage!r} record {key!r} is not a {kind.__name__} "
                    f"(fields {', '.join(sorted(values))})"
                )
            out[key] = kind(**values)
        return out

    # --- writing (the run's writer only) ------------------------------------------------------

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        con = sqlite3.connect(self.filename, timeout=60)
        try:
            with con:  # one transaction
                for sql in _TABLES:
                    con.execute(sql)
                for sql, parameters in statements:
                    con.execute(sql, parameters)
        except sqlite3.OperationalError as error:  # a full or read-only disk
            raise RespmatchError(f"{self.filename}: cannot store stage records: {error}") from error
        finally:
            con.close()

    def check(self, stage: str, settings: Mapping) -> bool:
        """Whether the stage was begun; refused (one line) when it was begun with other settings.
        Reads only: a writer checks before it takes the run's lock, so a refusal leaves the file
        as it was."""
        given = json.loads(_json(dict(settings)))
        stored = self.settings(stage)
        if stored is not None and stored != given:
            changed = ", ".join(sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k)))
            raise RespmatchError(f"{self.filename}: stage {stage!r} was run with other settings ({changed}); use another --out")
        return stored is not None

    def begin(self, stage: str, settings: Mapping) -> None:
        """Start the stage, or continue it: refused when it was begun with other settings."""
        if not self.check(stage, settings):
            self._write([("INSERT INTO respmatch_stage VALUES (?, ?, 0)", (stage, _json(dict(settings))))])

    def write(self, stage: str, records: Mapping[str, object]) -> None:
        """Store (or replace) records of a begun stage, in one transaction."""
        if self.settings(stage) is None:
            raise ValueError(f"stage {stage!r} was not begun")
        self._write([
            ("INSERT INTO respmatch_stage_record VALUES (?, ?, ?) ON CONFLICT (stage, key) DO UPDATE SET record = excluded.record",
             (stage, str(key), _json(asdict(record))))
            for key, record in records.items()
        ])

    def finish(self, stage: str) -> None:
        self._write([("UPDATE respmatch_stage SET finished = 1 WHERE stage = ?", (stage,))])
