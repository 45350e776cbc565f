"""Where units of work run: in this process, in a local process pool, or on a Ray cluster.

Every backend runs the same :meth:`Runner.run_unit`, whose records depend only on the unit's
identity, so all backends give identical results. Each unit writes its finished cells to the
cache under their content key, so a retried unit (a lost Ray worker) only rewrites the same
entries: retries are idempotent.

Ray: ``--backend ray --address ray://HOST:10001`` (or ``auto`` inside a cluster) connects to an
existing cluster; without ``--address`` a local one is started. The model and the data set are
put in the object store once; at most ``max_in_flight`` tasks are queued at a time; a task lost
with its worker is retried up to ``max_retries`` times. On a cluster with GPUs give
``--gpus-per-task 0.25`` (Ray's ``num_gpus`` per task, fractions share a GPU) and ``device: auto``
in the suite; the cache folder (``--cache``) should be on storage every node can write.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

from audit.engine.cache import Cache
from audit.engine.runner import Runner, Unit
from audit.engine.threads import worker_threads
from audit.errors import UserError

BACKENDS = ("local", "ray")


def run_local(runner: Runner, units: list[Unit], step: Callable[[], None]) -> list[dict]:
    records: list[dict] = []
    for unit in units:
        records.extend(runner.run_unit(unit))
        step()
    return records


# -- workers (process pool and Ray) ----------------------------------------------------------
# A worker process builds its Runner once, from the driver's already loaded suite, model, data,
# data digest, training set and prepared attack states (no second validation, model load, folder
# scan, hashing or training), and reuses it for every unit it runs.
_WORKER: tuple[str, Runner] | None = None


def _worker_runner(key: str, setup: Callable[[], tuple], cache_root: str | None) -> Runner:
    """This process's Runner for run ``key``; ``setup()`` gives what :func:`_shipped` packs and is
    called only when the runner is built."""
    global _WORKER
    if _WORKER is None or _WORKER[0] != key:
        loaded, model, data, digest, training, prepared = setup()
        cache = Cache(Path(cache_root) if cache_root else None)
        _WORKER = (key, Runner(loaded, cache, model=model, data=data, data_digest=digest, training=training,
                               shipped=prepared))
    return _WORKER[1]


def _run_timed(runner: Runner, unit: Unit) -> tuple[list[dict], dict[str, float]]:
    """The unit's records and the seconds it added to each stage (the driver sums them)."""
    before = dict(runner.timings)
    records = runner.run_unit(unit)
    return records, {k: v - before.get(k, 0.0) for k, v in runner.timings.items()}


def _run_key(runner: Runner) -> str:
    """Identifies a run for a worker's Runner; computed once, in the driver."""
    return f"{runner.model.digest}|{runner.data_digest}|{runner.suite.model_dump_json()}"


def _shipped(runner: Runner) -> tuple:
    return (runner.loaded, runner.model, runner.data, runner.data_digest, runner.training,
            runner.preparation.shipment())


def _cache_root(runner: Runner) -> str | None:
    return str(runner.cache.root) if runner.cache.enabled else None


def _init_pool_worker(threads: int, key: str, shipped: tuple, cache_root: str | None) -> None:
    torch.set_num_threads(threads)
    _worker_runner(key, lambda: shipped, cache_root)


def _run_in_pool(unit: Unit) -> tuple[list[dict], dict[str, float]]:
    assert _WORKER is not None
    return _run_timed(_WORKER[1], unit)


def _add_timings(runner: Runner, spent: dict[str, float]) -> None:
    for stage, seconds in spent.items():
        runner.timings[stage] += seconds


def run_processes(runner: Runner, units: list[Unit], workers: int, step: Callable[[], None], *,
                  threads: int) -> list[dict]:
    """Run ``units`` on ``workers`` spawned processes; ``threads`` is the run's CPU thread budget
    (``--threads``), shared equally: each worker computes with ``threads // workers`` (at least 1)."""
    threads = worker_threads(threads, workers)
    records: list[dict] = []
    initargs = (threads, _run_key(runner), _shipped(runner), _cache_root(runner))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_pool_worker, initargs=initargs) as pool:
        futures = [pool.submit(_run_in_pool, unit) for unit in units]
        for future in as_completed(futures):
            unit_records, spent = future.result()
            records.extend(unit_records)
            _add_timings(runner, spent)
            step()
    return records


# -- Ray ----------------------------------------------------------------------------------------
def _ray_unit(key: str, shipped: list, cache_root: str | None, unit: Unit) -> tuple[list[dict], dict]:
    # ``shipped`` wraps the object-store reference in a list, so Ray does not fetch and unpickle
    # the model and data for every task: only a worker building its runner asks for them
    import ray

    return _run_timed(_worker_runner(key, lambda: ray.get(shipped[0]), cache_root), unit)


def run_ray(runner: Runner, units: list[Unit], step: Callable[[], None], *, address: str | None,
            gpus_per_task: float = 0.0, max_in_flight: int | None = None, max_retries: int = 3) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'explain-audit[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: "
                            f"{str(exc).splitlines()[0][:200]}; check --address") from None
    try:
        remote = ray.remote(_ray_unit).options(num_cpus=1, num_gpus=gpus_per_task, max_retries=max_retries,
                                              retry_exceptions=False)
        key, root, shipped = _run_key(runner), _cache_root(runner), [ray.put(_shipped(runner))]
        cap = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
        queue = list(units)
        in_flight: list = []
        records: list[dict] = []
        while queue or in_flight:
            while queue and len(in_flight) < cap:
                in_flight.append(remote.remote(key, shipped, root, queue.pop(0)))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            for ref in done:
                unit_records, spent = ray.get(ref)
                records.extend(unit_records)
                _add_timings(runner, spent)
                step()
        return records
    finally:
        if started_here:
            ray.shutdown()
