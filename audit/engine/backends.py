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

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import torch

from audit.engine.cache import Cache
from audit.engine.runner import Runner, Unit
from audit.errors import UserError

BACKENDS = ("local", "ray")


def run_local(runner: Runner, units: list[Unit], step: Callable[[], None]) -> list[dict]:
    records: list[dict] = []
    for unit in units:
        records.extend(runner.run_unit(unit))
        step()
    return records


# -- local process pool -------------------------------------------------------------------------
_WORKER: Runner | None = None


def _init_worker(suite_path: str, cache_root: str | None, threads: int) -> None:
    global _WORKER
    from audit.engine.suite import load_suite

    torch.set_num_threads(threads)
    _WORKER = Runner(load_suite(suite_path), Cache(Path(cache_root) if cache_root else None))


def _run_in_worker(unit: Unit) -> tuple[list[dict], dict[str, float]]:
    assert _WORKER is not None
    before = dict(_WORKER.timings)
    records = _WORKER.run_unit(unit)
    spent = {k: v - before.get(k, 0.0) for k, v in _WORKER.timings.items()}
    return records, spent


def run_processes(runner: Runner, units: list[Unit], workers: int, step: Callable[[], None]) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    root = str(runner.cache.root) if runner.cache.enabled else None
    records: list[dict] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(str(runner.loaded.path), root, threads)) as pool:
        futures = [pool.submit(_run_in_worker, unit) for unit in units]
        for future in as_completed(futures):
            unit_records, spent = future.result()
            records.extend(unit_records)
            for stage, seconds in spent.items():
                runner.timings[stage] += seconds
            step()
    return records


# -- Ray ----------------------------------------------------------------------------------------
_RAY_RUNNERS: dict[str, Runner] = {}


def _ray_unit(loaded, model, data, unit: Unit, cache_root: str | None) -> list[dict]:
    key = f"{model.digest}|{data.digest()}|{loaded.suite.model_dump_json()}"
    runner = _RAY_RUNNERS.get(key)
    if runner is None:
        runner = Runner(loaded, Cache(Path(cache_root) if cache_root else None), model=model, data=data)
        _RAY_RUNNERS.clear()
        _RAY_RUNNERS[key] = runner
    return runner.run_unit(unit)


def run_ray(runner: Runner, units: list[Unit], step: Callable[[], None], *, address: str | None,
            gpus_per_task: float = 0.0, max_in_flight: int | None = None, max_retries: int = 3) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'explain-audit[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                         p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH"))
                         if p)}})
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: "
                            f"{str(exc).splitlines()[0][:200]}; check --address") from None
    try:
        remote = ray.remote(_ray_unit).options(num_cpus=1, num_gpus=gpus_per_task, max_retries=max_retries,
                                              retry_exceptions=False)
        loaded_ref = ray.put(runner.loaded)
        model_ref = ray.put(runner.model)
        data_ref = ray.put(runner.data)
        root = str(runner.cache.root) if runner.cache.enabled else None
        cap = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)
        queue = list(units)
        in_flight: list = []
        records: list[dict] = []
        while queue or in_flight:
            while queue and len(in_flight) < cap:
                in_flight.append(remote.remote(loaded_ref, model_ref, data_ref, queue.pop(0), root))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            for ref in done:
                records.extend(ray.get(ref))
                step()
        return records
    finally:
        if started_here:
            ray.shutdown()
