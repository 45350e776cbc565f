"""Two identical audits at once on one machine, against the same two one after the other.

    .venv/bin/python benchmarks/concurrent_runs.py [--n 48] [--repeats 1] [--policies passive,before]
        [--single-only]

The audit: a ``bars``-style suite (explainers rise {n_masks: 500}, smoothgrad, saliency, gradcam;
attacks none, gaussian_noise, blur; metrics spearman, topk_intersection, aopc, deletion, accuracy;
the builtin model and data, default parameters, ``--n`` images), written to a temporary folder
and run as ``python -m audit.cli run SUITE --cache none -q`` child processes, each with its own
environment. ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are removed from the children's
environment, so each uses the default thread budget (the cores it may use; ``--threads`` passes
a value instead), as two CI jobs on one runner would.

Per OpenMP wait policy (``--policies``, interleaved within each repeat):

- ``passive``: the default, what ``explain-audit`` sets before torch loads (``OMP_WAIT_POLICY``
  left unset in the child, so the CLI's default applies);
- ``before``: the old behaviour, no wait policy at all (the child imports torch *before*
  ``audit.cli``, so OpenMP loads with its own default; with GNU libgomp that is spinning
  300 000 times, a few ms, before sleeping);
- ``active``: ``OMP_WAIT_POLICY=ACTIVE`` explicitly (libgomp: spin up to ~5 min). Not the old
  default with libgomp; off unless asked for, it can take very long two at once.
- ``spin:N``: the passive default plus ``GOMP_SPINCOUNT=N`` (GNU libgomp only: spin N times,
  then sleep; ~100 000 spins per ms): a middle ground to try if passive costs a single run
  more than 5 %.

it measures: two runs one after the other (``sequential_s``: their total; ``single_s``: the
median of the two, each ran alone) and two runs started together (``concurrent_s``: until both
finished), plus each child's CPU seconds (spinning shows as CPU ≫ the work). With
``--repeats`` > 1 every figure is the median over repeats. Every run must write the same
results.jsonl (the policy changes timing, never numbers); a mismatch aborts.

Printed: ``concurrent_over_sequential`` (default policy; goal ≤ 1.15),
``single_run_cost_of_default`` (passive single ÷ before single; goal ≤ 1.05), the same ratios
per policy, and last one JSON line. Measure on an otherwise idle machine. ``--single-only`` runs
only the audits alone, the policies interleaved in each repeat, and prints each policy's
``single_run_cost_vs_before`` (median ÷ median): the single-run cost with more repeats in the
time (the file is named ``concurrent_runs.py``, not ``concurrent.py``: run as a script, a
``concurrent.py`` would shadow the standard library's ``concurrent`` package that its imports use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("passive", "before", "active", "spin:N")

SUITE = """\
name: bars
seed: 0
device: cpu
model: {{source: builtin:shapes-resnet}}
data: {{source: builtin:shapes, split: test, n: {n}, batch_size: {batch}}}
explainers:
  - rise: {{n_masks: {masks}}}
  - smoothgrad
  - saliency
  - gradcam
attacks:
  - none
  - gaussian_noise
  - blur
metrics: [spearman, topk_intersection, aopc, deletion, accuracy]
"""

# the old behaviour: torch (and so OpenMP) loads before audit.cli can set a wait policy
BEFORE = ("import sys, torch; from audit.cli import app; sys.argv[0] = 'explain-audit'; sys.exit(app())")


def child_env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("EXPLAIN_AUDIT_FAULT", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    if policy == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    elif policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.split(":", 1)[1]
    return env


def known(policy: str) -> bool:
    if policy.startswith("spin:"):
        return policy[5:].isdigit()
    return policy in POLICIES


def child_argv(policy: str, suite: Path, out: Path, threads: int | None) -> list[str]:
    prefix = [sys.executable, "-c", BEFORE] if policy == "before" else [sys.executable, "-m", "audit.cli"]
    argv = [*prefix, "run", str(suite), "--out", str(out), "-q", "--cache", "none"]
    return argv + (["--threads", str(threads)] if threads else [])


class Child:
    """One audit as a child process; :meth:`wait` gives its wall and CPU seconds."""

    def __init__(self, policy: str, suite: Path, out: Path, threads: int | None):
        self.out = out
        self.log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 - closed in wait()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(child_argv(policy, suite, out, threads), env=child_env(policy), cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def poll(self, timeout: float) -> tuple[float, float] | None:
        """(wall s, CPU s) once the child has ended (killed after ``timeout`` s), else None."""
        # os.wait4: the child's own rusage (CPU seconds), which Popen does not give
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            if time.perf_counter() - self.started < timeout:
                return None
            self.proc.kill()
            _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.started
        self.proc.returncode = code = os.waitstatus_to_exitcode(status)
        self.log.close()
        if code not in (0, 1):  # 1: a gate failed, still a complete run (this suite has no gates)
            text = self.out.with_suffix(".log").read_text()[-3000:]
            raise SystemExit(f"audit exited {code} after {wall:.0f} s ({self.out}):\n{text}")
        return wall, usage.ru_utime + usage.ru_stime


def wait_all(children: list[Child], timeout: float) -> list[tuple[float, float]]:
    """Each child's (wall s, CPU s), polled together so each wall ends when that child ends."""
    done: dict[int, tuple[float, float]] = {}
    try:
        while len(done) < len(children):
            for i, child in enumerate(children):
                if i not in done and (result := child.poll(timeout)) is not None:
                    done[i] = result
            time.sleep(0.05)
    finally:  # a failed child: stop the others too
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
    return [done[i] for i in range(len(children))]


def measure(policy: str, suite: Path, work: Path, tag: str, threads: int | None, timeout: float) -> dict:
    name = f"{tag}-{policy.replace(':', '-')}"
    walls, cpus = [], []
    started = time.perf_counter()
    for i in range(2):  # one after the other
        ((wall, cpu),) = wait_all([Child(policy, suite, work / f"{name}-seq{i}", threads)], timeout)
        walls.append(wall)
        cpus.append(cpu)
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    each = wait_all([Child(policy, suite, work / f"{name}-con{i}", threads) for i in range(2)], timeout)
    concurrent = time.perf_counter() - started
    return {"single_s": statistics.median(walls), "sequential_s": sequential, "concurrent_s": concurrent,
            "concurrent_each_s": [w for w, _ in each], "cpu_single_s": statistics.median(cpus),
            "cpu_concurrent_each_s": [c for _, c in each]}


def check_same_results(work: Path) -> int:
    """Every run's results.jsonl must be identical (same suite, same thread count)."""
    files = sorted(work.glob("*/results.jsonl"))
    reference = files[0].read_text()
    for path in files[1:]:
        if path.read_text() != reference:
            raise SystemExit(f"{path.parent.name} wrote different results than {files[0].parent.name}")
    return len(files)


def single_only(policies: list[str], suite: Path, work: Path, args) -> None:
    """``--single-only``: one run alone per policy per repeat, interleaved (the order reversed
    every other repeat); medians and ratios."""
    walls: dict[str, list[float]] = {p: [] for p in policies}
    cpus: dict[str, list[float]] = {p: [] for p in policies}
    for r in range(args.repeats):
        # the order reversed every other repeat, so a drift (caches, clocks) favours no policy
        for policy in (policies if r % 2 == 0 else policies[::-1]):
            ((wall, cpu),) = wait_all([Child(policy, suite, work / f"r{r}-{policy.replace(':', '-')}",
                                             args.threads)], args.timeout)
            walls[policy].append(wall)
            cpus[policy].append(cpu)
            print(f"repeat {r} {policy:12} single {wall:7.1f} s (cpu {cpu:.0f} s)", flush=True)
    compared = check_same_results(work)
    result: dict = {"n": args.n, "masks": args.masks, "repeats": args.repeats, "single_only": True,
                    "threads": args.threads, "identical_results_runs": compared,
                    "cpu_single_s": {p: round(statistics.median(c), 2) for p, c in cpus.items()},
                    "single_s": {p: {"median": round(statistics.median(w), 2), "all": [round(v, 2) for v in w]}
                                 for p, w in walls.items()}}
    if "before" in walls:
        before = statistics.median(walls["before"])
        result["single_run_cost_vs_before"] = {p: round(statistics.median(w) / before, 3)
                                               for p, w in walls.items() if p != "before"}
        print("single-run cost against 'before' (median ratio): " + ", ".join(
            f"{p} {v:.3f}" for p, v in result["single_run_cost_vs_before"].items()) + " (goal <= 1.05)")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images in the audit")
    parser.add_argument("--masks", type=int, default=500, help="RISE masks")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--policies", default="passive,before",
                        help=f"comma-separated, from {', '.join(POLICIES)}; the first is the default's row")
    parser.add_argument("--threads", type=int, default=None, help="--threads for every child (default: theirs)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a child is killed")
    parser.add_argument("--single-only", action="store_true",
                        help="only single runs, the policies interleaved in each repeat: the single-run "
                             "cost of each policy against 'before', with more repeats for the same time")
    args = parser.parse_args()
    policies = list(dict.fromkeys(p.strip() for p in args.policies.split(",") if p.strip()))  # no repeats
    if not policies or not all(known(p) for p in policies) or args.n < 1 or args.repeats < 1:
        parser.error(f"--policies takes names from {', '.join(POLICIES)}; --n and --repeats at least 1")

    with tempfile.TemporaryDirectory(prefix="concurrent-") as tmp:
        work = Path(tmp)
        suite = work / "bars.yaml"
        suite.write_text(SUITE.format(n=args.n, batch=min(args.n, 32), masks=args.masks))
        if args.single_only:
            single_only(policies, suite, work, args)
            return
        runs: dict[str, list[dict]] = {p: [] for p in policies}
        for r in range(args.repeats):
            for policy in policies:
                row = measure(policy, suite, work, f"r{r}", args.threads, args.timeout)
                runs[policy].append(row)
                print(f"repeat {r} {policy:8} single {row['single_s']:7.1f} s  sequential {row['sequential_s']:7.1f} s"
                      f"  concurrent {row['concurrent_s']:7.1f} s  (cpu single {row['cpu_single_s']:.0f} s, "
                      f"concurrent each {', '.join(f'{c:.0f}' for c in row['cpu_concurrent_each_s'])} s)",
                      flush=True)
        compared = check_same_results(work)

    result: dict = {"n": args.n, "masks": args.masks, "repeats": args.repeats, "threads": args.threads,
                    "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "identical_results_runs": compared}
    for policy, rows in runs.items():
        med = {k: statistics.median(row[k] for row in rows)
               for k in ("single_s", "sequential_s", "concurrent_s", "cpu_single_s")}
        med["cpu_concurrent_s"] = statistics.median(statistics.mean(row["cpu_concurrent_each_s"]) for row in rows)
        med["concurrent_over_sequential"] = med["concurrent_s"] / med["sequential_s"]
        result[policy] = {k: round(v, 3) for k, v in med.items()}
    default = policies[0]
    result["concurrent_over_sequential"] = result[default]["concurrent_over_sequential"]
    for other in ("before", "active"):
        if other in runs and other != default:
            key = "single_run_cost_of_default" if other == "before" else "single_run_cost_vs_active"
            result[key] = round(result[default]["single_s"] / result[other]["single_s"], 3)
    print()
    for policy in policies:
        row = result[policy]
        print(f"{policy:8} single {row['single_s']:.1f} s, two one after the other {row['sequential_s']:.1f} s, "
              f"two at once {row['concurrent_s']:.1f} s: concurrent_over_sequential "
              f"{row['concurrent_over_sequential']:.3f}")
    print(f"concurrent_over_sequential ({default}) {result['concurrent_over_sequential']:.3f} (goal <= 1.15)")
    if "single_run_cost_of_default" in result:
        print(f"single_run_cost_of_default ({default} ÷ before, one run alone) "
              f"{result['single_run_cost_of_default']:.3f} (goal <= 1.05)")
    if "single_run_cost_vs_active" in result:
        print(f"single_run_cost_vs_active ({default} ÷ active) {result['single_run_cost_vs_active']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
