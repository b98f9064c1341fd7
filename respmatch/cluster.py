"""Run chunks of a job on a Dask cluster (``distributed``) while the caller alone writes results.

Dask does the scheduling, the shipping and the rerun of a chunk whose worker died; this module
only opens a client (a local cluster of worker processes, or a running scheduler), ships what
every chunk shares once, and hands results back as chunks complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from respmatch.errors import RespmatchError
from respmatch.model import Denoiser, model_checksum
from respmatch.model.checkpoint import model_from_bytes, model_to_bytes


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1):
    """A ``distributed.Client``, or None (run here) when neither option is given.

    ``workers=N`` starts a ``LocalCluster`` of N processes (``threads_per_worker`` threads each;
    Dask's nanny sets OMP_NUM_THREADS=1 in them, so torch runs one thread per task) and closes it
    at the end; ``scheduler="tcp://host:8786"`` joins a running cluster and leaves it running.
    """
    if workers is not None and scheduler is not None:
        raise RespmatchError("give --workers N (a local cluster) or --scheduler ADDRESS (a running one), not both")
    if workers is None and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as error:
            raise RespmatchError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        with client:
            yield client
        return
    if workers < 1:
        raise RespmatchError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        yield client


def chunked(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks of ``size`` items (the last one shorter)."""
    if size <= 0:
        raise RespmatchError(f"chunk size must be positive, got {size}")
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


@dataclass
class ChunkResult:
    """What a chunk sends back: its results and when it ran (worker clock), for overhead figures."""

    results: list
    started: float  # time.time() on the worker when the chunk began
    finished: float
    load_seconds: float = 0.0  # of that, unpacking and checking the shipped model
    worker: str = ""
    submitted: float = 0.0  # time.time() on the client when the chunk was submitted
    received: float = 0.0  # and when its result arrived

    def timings(self) -> dict:
        """Everything but the results."""
        return {k: v for k, v in asdict(self).items() if k != "results"}


def timed_chunk(function: Callable[..., list], *args, **kwargs) -> ChunkResult:
    """Run ``function`` on a worker and time it (``ShippedModel.load`` adds its own share)."""
    from distributed import get_worker

    _load_seconds.value = 0.0
    started = time.time()
    results = function(*args, **kwargs)
    return ChunkResult(results, started, time.time(), _load_seconds.value, get_worker().address)


def run_chunks(client, function: Callable[..., list], chunks: list, *shared, **options) -> Iterator[ChunkResult]:
    """Run ``function(chunk, *shared, **options)`` for every chunk on the cluster; yield each
    chunk's result as it completes (in completion order).

    ``shared`` values (a spec, a shipped model) are scattered to every worker once rather than
    sent with each chunk.  A chunk whose worker dies is rerun by Dask elsewhere.
    """
    from distributed import as_completed

    submitted = time.time()
    shared_futures = [client.scatter(value, broadcast=True) for value in shared]
    futures = [
        client.submit(timed_chunk, function, chunk, *shared_futures, pure=False, **options) for chunk in chunks
    ]
    for future in as_completed(futures):
        result = future.result()
        result.submitted, result.received = submitted, time.time()
        future.release()
        yield result


_load_seconds = threading.local()
_loaded: dict[tuple, Denoiser] = {}
_loading = threading.Lock()


@dataclass(frozen=True)
class ShippedModel:
    """A model on its way to workers: checkpoint bytes and the checksum they must reproduce."""

    data: bytes
    sha256: str

    @classmethod
    def of(cls, model: Denoiser) -> ShippedModel:
        return cls(model_to_bytes(model), model_checksum(model))

    def load(self, device="cpu", dtype=torch.float32) -> Denoiser:
        """The model, unpacked and checked once per worker process and kept for later chunks."""
        key = (self.sha256, str(device), dtype)
        started = time.perf_counter()
        with _loading:
            model = _loaded.get(key)
            if model is None:
                model = model_from_bytes(self.data, device, dtype)
                if model_checksum(model) != self.sha256:
                    raise RespmatchError(f"the model arrived damaged (checksum differs from {self.sha256[:12]})")
                _loaded.clear()  # one model at a time per worker
                _loaded[key] = model
        _load_seconds.value = getattr(_load_seconds, "value", 0.0) + time.perf_counter() - started
        return model
