"""Mutation testing on a seeded random sample of mutants (mutmut), with the kill rate.

    python tools/mutation.py [--sample N] [--seed S] [--all]

Generates every mutant of the paths ``[tool.mutmut] only_mutate`` names (pyproject.toml),
draws ``--sample`` of them with ``random.Random(seed)`` from the sorted list of names (the same
draw for the same source), runs ``mutmut run`` on the draw — each mutant against only the
tests that executed its function — and prints the kill rate: killed / (killed + survived +
timeouts counted as killed, see below). ``no tests`` mutants (no selected test runs their
function) count as survivors: an untested function is a gap, not an excuse. Timeouts count as
killed (the mutant changed behaviour enough to hang). Writes mutants/sample.json with every
drawn name and its status, so survivors can be read with ``mutmut show NAME``.

A full run (``--all``) on two CPU cores takes hours; the sample keeps it to tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests"}


def generate() -> list[str]:
    """Every mutant name (mutmut's own generation), sorted."""
    from mutmut.__main__ import collect_source_file_mutation_data, create_mutants
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(1)
    mutants, _ = collect_source_file_mutation_data(mutant_names=())
    return sorted(name for _, name, _ in mutants)


def statuses(names: list[str]) -> dict[str, str]:
    from mutmut.__main__ import collect_source_file_mutation_data
    from mutmut.stats import status_by_exit_code

    mutants, _ = collect_source_file_mutation_data(mutant_names=names)
    return {name: status_by_exit_code[m.exit_code_by_key[name]] for m, name, _ in mutants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=150, help="mutants drawn (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--all", action="store_true", help="run every mutant instead of a sample")
    args = parser.parse_args()

    names = generate()
    drawn = names if args.all else sorted(random.Random(args.seed).sample(names, min(args.sample, len(names))))
    print(f"{len(names)} mutants; running {len(drawn)} (seed {args.seed})", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1", *drawn], env=env, check=False)

    status = statuses(drawn)
    killed = sum(s in KILLED for s in status.values())
    counted = sum(s in KILLED | SURVIVED for s in status.values())
    Path("mutants/sample.json").write_text(json.dumps({"seed": args.seed, "total": len(names),
                                                       "status": status}, indent=1))
    for name, s in sorted(status.items()):
        if s not in KILLED:
            print(f"{s:>10}  {name}")
    rate = killed / counted if counted else float("nan")
    print(f"kill rate {killed}/{counted} = {rate:.1%} of a seeded sample of {len(drawn)} "
          f"(seed {args.seed}) from {len(names)} mutants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
