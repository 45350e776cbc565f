"""How many CPU threads an audit computes with, and how its idle OpenMP threads wait.

Two audits at once on one machine (two CI jobs on one runner, a notebook beside a run) each start
as many OpenMP threads as there are cores. PyTorch's CPU kernels are OpenMP parallel regions; by
default an OpenMP thread that finishes its share spins, waiting for the next region, for a while
(GNU libgomp, which the x86 Linux wheels of PyTorch use: 300 000 spins, a few milliseconds, before
it sleeps). Alone, that spinning costs little; two processes oversubscribing the cores spin on the
cores the other one needs: on 2 cores an audit of 88 s alone took ~1 000 s with another beside it,
~6x the two one after the other (issue K). A *passive* wait
policy (``OMP_WAIT_POLICY=PASSIVE``, which libgomp turns into a spin count of 0; LLVM and Intel
OpenMP honour the same variable) puts idle threads to sleep at once.

OpenMP reads its environment once, when the runtime loads, that is when ``torch`` is first
imported. :func:`quiet_openmp_waits` therefore runs at the top of :mod:`audit.cli`, before
anything imports torch; it only *sets defaults*: a user's own ``OMP_WAIT_POLICY`` (or libgomp's
``GOMP_SPINCOUNT``, which takes precedence over the policy in libgomp) wins.

This module imports nothing heavy (no torch at import time) so that the CLI can call it first.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from audit.errors import UserError

#: environment defaults set before torch loads; a value the user set is left alone
OPENMP_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def quiet_openmp_waits(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`OPENMP_DEFAULTS` in ``environ`` (default ``os.environ``) where not set already.

    Returns the variables it set (empty when the user had set them all). Takes effect only when
    called before the OpenMP runtime loads (before ``import torch``); child processes (the pool
    backend's workers) inherit it.
    """
    environ = os.environ if environ is None else environ
    added: dict[str, str] = {}
    for key, value in OPENMP_DEFAULTS.items():
        if key not in environ:
            environ[key] = value
            added[key] = value
    return added


def available_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask where the OS has one,
    e.g. under ``taskset`` or a container's cpuset; else ``os.cpu_count()``), at least 1."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def default_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """The thread budget when ``--threads`` is not given: ``OMP_NUM_THREADS`` when the user set it
    to a positive integer (their explicit choice wins, as PyTorch itself honours it), else the
    cores this process may use: :func:`available_cores`, and no more than PyTorch's own default
    (``torch.get_num_threads()`` before anything set it: the machine's *physical* cores, which
    PyTorch counts without looking at the affinity mask; two threads on the two hardware threads
    of one core gain little for convolutions)."""
    environ = os.environ if environ is None else environ
    try:
        value = int(environ.get("OMP_NUM_THREADS", "").strip())
    except ValueError:  # unset, empty, or a list such as "4,2" (nested levels): not a plain budget
        value = 0
    if value >= 1:
        return value
    import torch

    return max(1, min(available_cores(), torch.get_num_threads()))


def resolve_threads(threads: int | str | None, environ: MutableMapping[str, str] | None = None) -> int:
    """The thread budget: ``threads`` (an int, or the text given to ``--threads``) checked to be a
    whole number ``>= 1``, or :func:`default_threads` when ``None``.

    Raises :class:`UserError` (the CLI prints one line and exits 2) for anything else.
    """
    if threads is None:
        return default_threads(environ)
    value: int | None
    if isinstance(threads, bool):
        value = None
    elif isinstance(threads, int):
        value = threads
    else:
        try:
            value = int(str(threads).strip())
        except ValueError:
            value = None
    if value is None or value < 1:
        raise UserError(f"--threads {threads!r}: give a whole number of CPU threads, at least 1 "
                        f"(this process may use {available_cores()} cores)")
    return value


def use_threads(threads: int) -> None:
    """Make PyTorch's intra-op parallelism (its OpenMP regions) use ``threads`` threads in this
    process. The inter-op pool is left alone: its idle threads block instead of spinning, and
    PyTorch lets a process size it only once, before any parallel work."""
    import torch

    torch.set_num_threads(threads)


def worker_threads(budget: int, workers: int) -> int:
    """Threads per worker process when ``workers`` processes share a budget of ``budget`` threads
    (each gets an equal share, at least 1)."""
    return max(1, budget // max(1, workers))
