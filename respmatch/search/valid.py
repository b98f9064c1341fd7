"""Valid on demand: basin hopping on the learned Ẽ with the molecule judge as the acceptance test.

Every finished try is judged (``respmatch.chem.judge``, strict).  An invalid one is
kicked by U(-kick, kick) Å per coordinate and relaxed again with the protocol's last stage, up to
``max_kicks`` times; then it is dropped and a fresh start takes its place in the batch.  The
search stops once ``n`` valid molecules have been found.  The judge, not Ẽ, decides which basin
to keep: Ẽ does not tell valid from invalid minima (docs/results.md, QM7).

Try i starts as plain generation's structure i (``spec.job(i)``), and its kicks draw from the
same per-try random stream, so a run is reproducible whatever the batch size or the order tries
finish in.  It runs in one process: which try comes next depends on the judge's verdicts so far.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from rdkit.rdBase import BlockLogs

from respmatch.errors import RespmatchError
from respmatch.chem import judge
from respmatch.search.relax import BatchRelaxer, Job, Relaxed, Stage
from respmatch.search.spec import SearchSpec


@dataclass
class ValidSearchCounts:
    """Work done so far: tries relaxed through all stages, kick-relaxations, molecules found."""

    tries: int = 0
    kicks: int = 0
    valid: int = 0
    dropped: int = 0  # tries given up after max_kicks invalid kicks


class _Feed:
    """The relaxer's job stream: kicked tries first, otherwise fresh starts (up to ``max_tries``).

    An iterator that may run dry and later yield again: the relaxer asks it for jobs only while
    it fills free batch slots, and the search adds kicked tries between those requests.
    """

    def __init__(self, spec: SearchSpec, first_index: int, max_tries: int | None):
        self.spec, self.next_index, self.max_tries = spec, first_index, max_tries
        self.started = 0
        self.kicked: deque[Job] = deque()
        self.rngs: dict[int, np.random.Generator] = {}

    def __iter__(self):
        return self

    def __next__(self) -> Job:
        if self.kicked:
            return self.kicked.popleft()
        if self.max_tries is not None and self.started >= self.max_tries:
            raise StopIteration
        job = self.spec.job(self.next_index, key=(self.next_index, 0))
        self.rngs[self.next_index] = job.rng
        self.next_index += 1
        self.started += 1
        return job

    def kick(self, result: Relaxed, stage: Stage, kicks: int) -> None:
        index = result.key[0]
        atoms = result.atoms.copy()
        atoms.positions += self.rngs[index].uniform(-stage.kick, stage.kick, size=atoms.positions.shape)
        self.kicked.append(Job(key=(index, kicks), atoms=atoms, stages=(stage,), rng=self.rngs[index]))


def valid_molecules(
    relaxer: BatchRelaxer,
    spec: SearchSpec,
    n: int,
    *,
    max_kicks: int = 3,
    first_index: int = 0,
    max_tries: int | None = None,
    counts: ValidSearchCounts | None = None,
) -> Iterator[tuple[Relaxed, int, str]]:
    """Yield (result keyed by its try's index, kicks it took, SMILES) for each strictly valid
    molecule, ``n`` at most.

    Tries are ``spec.job(i)`` from i = ``first_index`` on; a kicked try is relaxed with the spec's
    last stage, whose ``kick`` is the kick size.  Fewer than ``n`` come out only when
    ``max_tries`` fresh starts run out.  ``counts``, if given, is updated as the search goes.
    """
    if spec.settings.start != "molecule":
        raise RespmatchError(f"valid-only generation judges molecules; preset {spec.preset!r} makes crystals")
    kick_stage = spec.settings.stages[-1]
    if max_kicks < 0 or kick_stage.kick <= 0:
        raise RespmatchError("valid-only generation needs max_kicks >= 0 and a last stage with a kick > 0")
    if n <= 0:
        raise RespmatchError(f"n must be a positive number of molecules, got {n}")
    counts = counts if counts is not None else ValidSearchCounts()
    feed = _Feed(spec, first_index, max_tries)
    _quiet = BlockLogs()  # RDKit logs every failed perception
    for result in relaxer.run(feed):
        index, kicks = result.key
        if kicks:
            counts.kicks += 1
        else:
            counts.tries += 1
        verdict = judge(result.atoms)
        if verdict["strict"]:
            counts.valid += 1
            feed.rngs.pop(index)
            yield replace(result, key=index), kicks, verdict["smiles"]
            if counts.valid == n:
                return
        elif kicks < max_kicks:
            feed.kick(result, kick_stage, kicks + 1)
        else:
            counts.dropped += 1
            feed.rngs.pop(index)
