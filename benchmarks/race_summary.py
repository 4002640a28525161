"""How many victims each protected dataset stopped, over every seed that first_epoch_race.py ran.

    python -m benchmarks.race_summary benchmarks/results/liver5/race.jsonl \
        --clean-best benchmarks/results/liver5/default_rings0_e6.3.json

Lines for the same protected dataset and epoch length are merged (a later line wins for a seed run
twice); lines whose victims were initialised with other seeds (``init_seeds``) or normalise otherwise
(``normalisation``, ``ct_statistics``) are other victims, with other clean references, and are left
out. A victim counts as stopped when its first-epoch test DSC is at most the target ratio times its
clean best (`umedprotect evaluate`'s JSON given with --clean-best, for the seeds it ran) or times the
mean clean best of those seeds (for the others). Prints one tab-separated line per dataset: PSNR,
seeds, stopped, mean and median first-epoch DSC, and the seeds not stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from umedprotect_eval.evaluation import TARGET_RATIO

OTHER_VICTIMS = {"init_seeds", "normalisation", "ct_statistics"}  # line keys of victims unlike the clean references


def clean_best_by_seed(evaluation: dict) -> dict[int, float]:
    """Clean victims' best-epoch test DSC per seed from an `umedprotect evaluate` result."""
    return {run["seed"]: run["best_dsc"] for run in evaluation["runs"] if run["data"] == "clean"}


def summarise(lines: list[dict], clean_best: dict[int, float]) -> list[dict]:
    """One summary per protected dataset, in order of first appearance."""
    merged: dict[str, dict] = {}
    for line in (line for line in lines if not OTHER_VICTIMS & line.keys()):
        name = line["protected"] + (f" ({line['iterations']} iterations per epoch)" if "iterations" in line else "")
        entry = merged.setdefault(name, {"psnr": line["psnr"], "dsc": {}})
        entry["dsc"].update(zip(line["seeds"], line["first_epoch"]))
    fallback = statistics.mean(clean_best.values())
    summaries = []
    for name, entry in merged.items():
        dsc = dict(sorted(entry["dsc"].items()))
        resisting = {s: d for s, d in dsc.items() if d > TARGET_RATIO * clean_best.get(s, fallback)}
        summaries.append(
            {
                "protected": name,
                "psnr": entry["psnr"],
                "seeds": len(dsc),
                "stopped": len(dsc) - len(resisting),
                "mean": statistics.mean(dsc.values()),
                "median": statistics.median(dsc.values()),
                "resisting": resisting,
            }
        )
    return summaries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("race", help="JSON lines written by first_epoch_race.py")
    parser.add_argument(
        "--clean-best", required=True, help="an `umedprotect evaluate` JSON: the clean victims' best epochs"
    )
    args = parser.parse_args()
    lines = [json.loads(text) for text in Path(args.race).read_text().splitlines() if text.strip()]
    clean_best = clean_best_by_seed(json.loads(Path(args.clean_best).read_text()))
    for s in summarise(lines, clean_best):
        resisting = " ".join(f"{seed}:{d:.3f}" for seed, d in s["resisting"].items())
        print(
            f"{s['protected']}\t{s['psnr']}\t{s['seeds']}\t{s['stopped']}\t{s['mean']:.3f}\t{s['median']:.3f}\t{resisting}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
