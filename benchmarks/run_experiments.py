"""Run one experiment of benchmarks/experiments/ and store its result table.

    python -m benchmarks.run_experiments NAME                # run its commands, then store its table
    python -m benchmarks.run_experiments NAME --table-only   # only recompute the table from the result files
    python -m benchmarks.run_experiments --list

The commands run from the repository root with bash, stopping at the first that fails. The table
(benchmarks/results/tables/NAME.json) is what ``python -m benchmarks.make_results`` puts in
docs/results.md; commit the result files and the table together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.make_results import ROOT, load_experiments, write_table


def main(argv: list[str] | None = None) -> int:
    experiments = {e["name"]: e for e in load_experiments()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=sorted(experiments), metavar="NAME", help="experiment to run")
    parser.add_argument("--table-only", action="store_true", help="do not run the commands; only recompute the table")
    parser.add_argument("--list", action="store_true", help="list the experiments and their claims")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name, experiment in experiments.items():
            print(f"{name}\t{experiment['claim']}")
        return 0
    experiment = experiments[args.name]
    if not args.table_only:
        for command in experiment["commands"]:
            print(f"+ {command}", flush=True)
            subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, check=True)
    print(f"wrote {write_table(experiment).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
