"""Run chunks of a job on a Dask cluster (``distributed``) while the caller alone writes results.

Dask does the scheduling, the shipping and the rerun of a chunk whose worker died; this module
only opens a client (a local cluster of worker processes, or a running scheduler), puts what every
chunk shares into the task graph once, feeds chunks lazily and hands results back as they complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import islice

import torch

from respmatch.errors import RespmatchError
from respmatch.model import Denoiser, model_checksum
from respmatch.model.checkpoint import model_from_bytes, model_to_bytes

MIN_IN_FLIGHT = 4  # chunks submitted at least, whatever the cluster's size at the moment


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
        with _closing(client):
            yield client
        return
    if workers < 1:
        raise RespmatchError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None,
        # no dashboard; the scheduler's health endpoint on a free loopback port, not on 8787
        # (another cluster there would make Dask warn in a normal run)
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    with cluster, _closing(Client(cluster)) as client:
        yield client


@contextmanager
def _closing(client):
    """Close the client at the end.  After a cluster fault (a RespmatchError from run_chunks),
    with Dask's client logging muted: closing ends its attempt to reconnect to a lost scheduler,
    which Dask would log as a traceback under the run's one-line error."""
    logger = logging.getLogger("distributed.client")
    level = logger.level
    try:
        yield client
    except RespmatchError:
        logger.setLevel(logging.CRITICAL + 1)
        raise
    finally:
        try:
            client.close()
        finally:
            logger.setLevel(level)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive chunks of ``size`` items (the last one shorter), made as they are asked for:
    a run of 10¹² structures never holds more than the chunks in flight."""
    if size <= 0:
        raise RespmatchError(f"chunk size must be positive, got {size}")
    iterator = iter(items)
    return iter(lambda: list(islice(iterator, size)), [])


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


def shared_value(value):
    """A task that returns what every chunk shares (a spec, a shipped model).

    Submitted as an ordinary task rather than scattered: the scheduler keeps the value in the
    task graph, so when every worker holding the result dies it is recomputed on a new worker;
    scattered data would be lost with its last holder, and every chunk with it."""
    return value


def run_chunks(client, function: Callable[..., list], chunks: Iterable, *shared, **options) -> Iterator[ChunkResult]:
    """Run ``function(chunk, *shared, **options)`` for every chunk on the cluster; yield each
    chunk's result as it completes (in completion order).

    Chunks are taken from ``chunks`` only as earlier ones finish (twice the cluster's threads in
    flight, at least ``MIN_IN_FLIGHT``), so memory stays bounded whatever the number of chunks.
    The ``shared`` values travel once to each worker that needs them (``shared_value``).  Dask
    reruns a chunk whose worker died, and recomputes a shared value whose holders all died, so
    a run outlives any worker and waits while the pool is empty.  A fault it cannot outlive (the
    scheduler lost, a chunk that killed ``allowed-failures`` workers) raises a RespmatchError
    naming the scheduler.
    """
    from distributed import as_completed

    address = client.scheduler.address
    chunks = iter(chunks)
    try:
        shared_futures = [client.submit(shared_value, value, pure=False) for value in shared]
        running = as_completed(loop=client.loop)
        submitted = {}

        def refill() -> None:
            limit = max(MIN_IN_FLIGHT, 2 * cluster_threads(client))
            while running.count() < limit:
                chunk = next(chunks, None)
                if chunk is None:
                    return
                future = client.submit(timed_chunk, function, chunk, *shared_futures, pure=False, **options)
                submitted[future.key] = time.time()
                running.add(future)

        refill()
        for future in running:
            result = future.result()
            result.submitted, result.received = submitted.pop(future.key), time.time()
            future.release()
            yield result
            refill()
    except _cluster_faults() as error:
        raise RespmatchError(
            f"Dask cluster at {address}: {_what_failed(error)}; what was stored is kept, "
            "the same command with --resume continues"
        ) from error


def cluster_threads(client) -> int:
    """Threads of the cluster's workers now; a lost scheduler leaves the last figure."""
    info = client.scheduler_info(n_workers=0)  # distributed >= 2025.4: totals only, no worker list
    return info.get("total_threads", sum(worker["nthreads"] for worker in info.get("workers", {}).values()))


def _cluster_faults() -> tuple[type[BaseException], ...]:
    """Faults of the cluster itself (not of a chunk's own code, whose errors pass unchanged)."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker
    from distributed.comm import CommClosedError
    from distributed.scheduler import NoWorkerError

    return CancelledError, KilledWorker, NoWorkerError, CommClosedError


def _what_failed(error: BaseException) -> str:
    """A few words for the one-line message (Dask's own messages run to several sentences)."""
    from distributed import KilledWorker
    from distributed.scheduler import NoWorkerError

    if isinstance(error, KilledWorker):
        died = error.allowed_failures + 1
        return f"{died} worker{'s' if died > 1 else ''} died running the same chunk (see the worker logs)"
    if isinstance(error, NoWorkerError):
        return f"no worker for {error.timeout:g} s (the scheduler's no-workers-timeout)"
    reason = getattr(error, "reason", None)  # a FutureCancelledError's
    if reason == "scheduler-connection-lost":
        return "lost the connection to the scheduler"
    text = f"a chunk was cancelled ({reason})" if reason else str(error).split("\n")[0] or type(error).__name__
    return text if len(text) <= 80 else text[:77] + "..."


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
