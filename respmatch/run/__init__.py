"""The typed run: the hub every stage after the search reads and writes (docs/design.md §3).

One SQLite file (an ASE database) holds a run:

- one row per structure the search stored: its atoms and its ``Record`` as the row's columns
  (respmatch.record), the run parameters (model checksum included: ``Run.checkpoint``) as the
  database metadata;
- a ``RecheckRecord`` in the same row once ``respmatch recheck`` judged the structure with a
  physical potential (the relaxed structure in the row's data);
- stage records: what a stage after the search computed (distinct groups, physical energies, a
  final ranking), typed, under string keys, in tables of their own.

Reading: ``open_run(path)`` is the one reader.  It refuses what is not a run (one line naming
the file) and returns a ``Run``: ``parameters``, ``entries`` (one ``Entry`` per structure,
sorted by index: ``record``, ``recheck``, ``composition``, numbers and cell, no positions),
``structures(positions)`` for ``Atoms`` in full, and ``stages``.  ``read_run`` and
``load_generated`` give the structures as ``Atoms`` with their records in ``atoms.info``.

Writing: ``RunStore(path, parameters, resume=...)`` opens the file through the same reader
(another program's database is refused before ASE touches it), takes the run's ``WriterLock``
and writes structures as they finish.  Any other writer (the re-check, the funnel's stages) holds
the same lock while it writes.

Stage records (respmatch.run.stages), for a stage that wants its results kept and resumable (the
funnel's records: respmatch.predict.records)::

    @dataclass
    class Group:                      # a dataclass of JSON values
        formula: str
        members: list[int]
        energy: float

    store = RunStore(path, parameters, resume=True, stages={"distinct": {"energy_window": 0.02}})
    # begun once the lock is held; a resume under other settings is refused before any write
    # (or later: store.begin_stage("distinct", {...}), refused the same way)
    done = store.stages.records("distinct", Group)             # resume: what is already stored
    store.write_stage("distinct", {"SrTiO3/0": Group("SrTiO3", [3, 7], -1.2)})  # committed
    store.finish_stage("distinct")
    open_run(path).stages.records("distinct", Group)           # the report reads them back

A refused command leaves the file byte-identical: every check reads, and writing starts after.
"""

from respmatch.run.database import RunInUseError, WriterLock
from respmatch.run.reader import Checkpoint, Entry, Run, load_generated, open_run, read_run
from respmatch.run.stages import Stages
from respmatch.run.store import EXPORT_FORMATS, RESUME_MAY_CHANGE, RunStore, export

__all__ = [
    "EXPORT_FORMATS", "RESUME_MAY_CHANGE", "Checkpoint", "Entry", "Run", "RunInUseError", "RunStore", "Stages",
    "WriterLock", "export", "load_generated", "open_run", "read_run",
]
