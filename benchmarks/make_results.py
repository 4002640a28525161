"""Write docs/results.md from the experiments in benchmarks/experiments/ and their result tables.

    python -m benchmarks.make_results            # rewrite docs/results.md
    python -m benchmarks.make_results --check    # exit 1 if docs/results.md or a stored table is out of date

Each experiment file (JSON) describes one claim: the data, the commands that produce its result files,
and its rows -- one measured setting each (with its own ``data`` where it differs from the experiment's),
with the result files it is read from. Three kinds of result file are read:

- ``evaluate``: the JSON report of ``umedprotect evaluate``; a victim seed is stopped when its ratio at
  ``measure`` -- ``best`` (the default: the oracle's best epoch), ``final`` or ``nnunet`` (the checkpoint
  nnU-Net keeps, from the validation curves) -- is at most ``TARGET_RATIO``; ``defense``: the victims
  trained after that defense (default ``none``).
- ``race``: JSON lines of ``python -m benchmarks.first_epoch_race``; the line(s) of one protected
  dataset (``protected``, plus any keys in ``match``); a seed is stopped when its protected test DSC
  -- after the first epoch, or the best over the line's ``curves`` with ``"measure": "best"`` -- is at
  most ``TARGET_RATIO`` times the seed's clean best (from the ``clean`` evaluate reports, or the best
  of the clean line ``clean_line`` in the same file; seeds without one take the mean clean best).
- ``screen``: JSON lines of ``python -m benchmarks.edge_code_screen``; the lines whose keys equal ``match``
  (protected) and ``clean_match`` (clean; from ``clean_file`` when given), paired by seed; a seed is stopped when
  the protected victim's test DSC at ``measure`` -- ``final`` (last checkpoint), ``selected`` (the checkpoint
  nnU-Net would keep were its own training cases its validation cases: best moving average of the fit, as an
  attacker without clean labels picks it) or ``oracle`` (best on the clean test cases) -- is at most
  ``TARGET_RATIO`` times the clean victim's at the same measure; ``seeds`` (a list) keeps only those seeds (e.g.
  those whose clean victim ends with a DSC to compare against); ``label`` (1, 2, ...) reads that label's test DSC
  instead of the mean over the labels (the selected checkpoint is still chosen on the whole training fit).

``python -m benchmarks.run_experiments NAME`` runs an experiment's commands and stores its table
(``benchmarks/results/tables/NAME.json``); this script only reads those tables.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from umedprotect_eval.evaluation import TARGET_RATIO, ratio
from umedprotect_eval.training import TrainingRun, nnunet_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "benchmarks" / "experiments"
TABLES = ROOT / "benchmarks" / "results" / "tables"
RESULTS_MD = ROOT / "docs" / "results.md"
SECTIONS = {
    "current": "Current: the shipped protector",
    "other": "Other measured settings",
    "negative": "Negative results",
}


@dataclass(frozen=True)
class Row:
    """One measured setting of an experiment, as it appears in docs/results.md."""

    setting: str
    psnr_db_mean: float
    psnr_db_worst_slice: float | None  # None where the result files do not record per-slice PSNR
    stopped: int
    tried: int
    commit: str


def load_experiments() -> list[dict]:
    """Every experiment file, in the order of their ``order`` field."""
    experiments = [json.loads(path.read_text()) for path in EXPERIMENTS.glob("*.json")]
    return sorted(experiments, key=lambda experiment: experiment["order"])


def _evaluate_ratios(report: dict, measure: str = "best", defense: str = "none") -> dict[int, float]:
    """Ratio per seed at checkpoint ``measure`` (final, nnunet, best) of the victims trained after ``defense``;
    ``nnunet`` from the runs' validation curves, so that reports written before the rule followed nnU-Net's moving
    average read as nnU-Net keeps them."""
    entries = [entry for entry in report["summary"] if entry.get("defense", "none") == defense]
    if measure != "nnunet":
        return {entry["seed"]: entry[f"ratio_{measure}"] for entry in entries}

    def kept(data: str, entry: dict, run_defense: str) -> float:
        (run,) = (
            run
            for run in report["runs"]
            if (run["data"], run["seed"], run.get("victim"), run.get("defense", "none"))
            == (data, entry["seed"], entry.get("victim"), run_defense)
        )
        return TrainingRun(run["victim"], run["curve"], 0.0, validation_curve=run["validation_curve"]).dsc("nnunet")

    return {entry["seed"]: ratio(kept("protected", entry, defense), kept("clean", entry, "none")) for entry in entries}


def _evaluate_quality(report: dict) -> tuple[float, float]:
    quality = report["quality"]
    worst = min(float(case["psnr_db"]) for case in quality["cases"].values())  # an unchanged case reads "inf"
    return quality["psnr_db_mean"], worst


def _race_lines(path: Path, protected: str, match: dict) -> list[dict]:
    lines = [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    return [
        line for line in lines if line["protected"] == protected and all(line.get(k) == v for k, v in match.items())
    ]


def _race_dsc(line: dict, measure: str) -> dict[int, float]:
    if measure == "best":
        return {seed: max(curve) for seed, curve in zip(line["seeds"], line["curves"])}
    return dict(zip(line["seeds"], line["first_epoch"]))


def _clean_best(source: dict, path: Path) -> dict[int, float]:
    if "clean_line" in source:
        lines = _race_lines(path, source["clean_line"], source.get("match", {}))
        return {seed: dsc for line in lines for seed, dsc in _race_dsc(line, source.get("measure", "first")).items()}
    return {
        run["seed"]: run["best_dsc"]
        for name in source["clean"]
        for run in json.loads((ROOT / name).read_text())["runs"]
        if run["data"] == "clean"
    }


def _race_ratios(source: dict) -> tuple[dict[int, float], float]:
    path = ROOT / source["file"]
    lines = _race_lines(path, source["protected"], source.get("match", {}))
    if not lines:
        raise ValueError(f"{source['file']}: no line for {source['protected']} {source.get('match', {})}")
    clean = _clean_best(source, path)
    fallback = statistics.mean(clean.values())
    dsc = {seed: value for line in lines for seed, value in _race_dsc(line, source.get("measure", "first")).items()}
    return {seed: value / clean.get(seed, fallback) for seed, value in dsc.items()}, lines[-1]["psnr"]


SCREEN_MEASURES = {
    "final": lambda line: line["curve"][-1],
    "selected": lambda line: line["curve"][nnunet_checkpoint(line["fit"]) - 1],
    "oracle": lambda line: max(line["curve"]),
}


def _one_label(line: dict, label: int) -> dict:
    """A screen line whose test curve is that of one label (1, 2, ...)."""
    return {**line, "curve": [per_label[label - 1] for per_label in line["label_curve"]]}


def _screen_ratios(source: dict) -> tuple[dict[int, float], float, float]:
    def select(file: str, match: dict) -> dict[int, dict]:
        lines = [json.loads(text) for text in (ROOT / file).read_text().splitlines() if text.strip()]
        return {line["seed"]: line for line in lines if all(line.get(k) == v for k, v in match.items())}

    protected = select(source["file"], source["match"])
    if "seeds" in source:
        protected = {seed: line for seed, line in protected.items() if seed in source["seeds"]}
    clean = select(source.get("clean_file", source["file"]), source["clean_match"])
    if not protected or set(protected) - set(clean):
        raise ValueError(f"{source['file']}: no protected line, or a seed without a clean line, for {source['match']}")
    measure = SCREEN_MEASURES[source["measure"]]
    if "label" in source:
        protected, clean = (
            {seed: _one_label(line, source["label"]) for seed, line in lines.items()} for lines in (protected, clean)
        )
    ratios = {seed: measure(line) / measure(clean[seed]) for seed, line in protected.items()}
    quality = next(iter(protected.values()))
    return ratios, quality["psnr_mean"], quality["psnr_worst"]


def _files(source: dict) -> list[str]:
    return [
        source["file"],
        *source.get("clean", []),
        *([source["clean_file"]] if "clean_file" in source else []),
        *([source["quality"]] if "quality" in source else []),
    ]


def last_commit(paths: list[str]) -> str:
    """The latest commit that recorded any of these files (short hash), or "uncommitted"."""
    out = subprocess.run(["git", "log", "--format=%h", "-1", "--", *paths], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "uncommitted"


def tabulate(experiment: dict) -> list[Row]:
    """The rows of one experiment, computed from its result files."""
    rows = []
    for spec in experiment["rows"]:
        ratios: dict[int, float] = {}
        psnr_mean, psnr_worst = math.nan, None
        for source in spec["sources"]:
            if source["kind"] == "evaluate":
                report = json.loads((ROOT / source["file"]).read_text())
                ratios.update(_evaluate_ratios(report, source.get("measure", "best"), source.get("defense", "none")))
                psnr_mean, psnr_worst = _evaluate_quality(report)
            elif source["kind"] == "screen":
                screen_ratios, psnr_mean, psnr_worst = _screen_ratios(source)
                ratios.update(screen_ratios)
            else:
                race_ratios, psnr_mean = _race_ratios(source)
                ratios.update(race_ratios)
                if "quality" in source:  # the evaluate report of the same protected dataset records per-slice PSNR
                    report = json.loads((ROOT / source["quality"]).read_text())
                    if report["protected_dir"] != source["protected"]:
                        raise ValueError(
                            f"{source['quality']} evaluated {report['protected_dir']}, not {source['protected']}"
                        )
                    psnr_mean, psnr_worst = _evaluate_quality(report)
        files = sorted({path for source in spec["sources"] for path in _files(source)})
        stopped = sum(ratio <= TARGET_RATIO for ratio in ratios.values())
        rows.append(Row(spec["setting"], psnr_mean, psnr_worst, stopped, len(ratios), last_commit(files)))
    return rows


def table_path(name: str) -> Path:
    return TABLES / f"{name}.json"


def write_table(experiment: dict) -> Path:
    """Compute an experiment's rows from its result files and store them as its table."""
    path = table_path(experiment["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(row) for row in tabulate(experiment)], indent=1) + "\n")
    return path


def read_table(name: str) -> list[Row]:
    return [Row(**row) for row in json.loads(table_path(name).read_text())]


def _table_matches(experiment: dict) -> bool:
    """Whether the stored table has the figures its result files give (the commit is not compared)."""

    def figures(rows: list[Row]) -> list[dict]:
        return [{**asdict(row), "commit": None} for row in rows]

    return figures(read_table(experiment["name"])) == figures(tabulate(experiment))


def _db(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} dB"


def _experiment_link(name: str) -> str:
    return f"[`{name}`](../benchmarks/experiments/{name}.json)"


def render(experiments: list[dict]) -> str:
    """docs/results.md: one table per claim, current results first, negative ones a line per row under their claim."""
    out = [
        "# Results",
        "",
        "<!-- Generated by `python -m benchmarks.make_results` from benchmarks/experiments/ and",
        "     benchmarks/results/tables/. Do not edit by hand. -->",
        "",
        "What the protection measurably does, one table per claim. A victim is a segmentation network",
        "trained from scratch on the protected training cases and tested on clean test cases; it counts",
        f"as **stopped** when its test DSC is at most {TARGET_RATIO:.2f} × that of the same victim trained on",
        "the clean cases (the ratio). PSNR is over the protected training slices, each with the case's",
        "own intensity range; *worst slice* is the lowest single slice (— where the result files do not",
        "record it). The checkpoint nnU-Net keeps is its `checkpoint_best`: the epoch with the best moving",
        "average (0.9 × the previous + 0.1 × this epoch's) of the DSC on the protected validation cases, or, in",
        "screens that hold none out (*selected*), on the protected training cases. Each experiment file holds",
        "the commands that wrote its result files; rerun one with",
        "`python -m benchmarks.run_experiments NAME`. How to read these numbers:",
        "[explanation/method.md](explanation/method.md); the chronological record of every experiment:",
        "[archive/research-log.md](archive/research-log.md).",
    ]
    header = "| data | setting | mean PSNR | worst-slice PSNR | victims stopped | command | commit |"
    for section, title in SECTIONS.items():
        members = [e for e in experiments if e["section"] == section]
        if not members:
            continue
        out += ["", f"## {title}"]
        if section == "negative":
            out.append("")
            for e in members:
                out.append(f"- **{e['claim']}** {e['data']} ({_experiment_link(e['name'])}):")
                for spec, row in zip(e["rows"], read_table(e["name"])):
                    data = f"{spec['data']}; " if spec.get("data", e["data"]) != e["data"] else ""
                    out.append(
                        f"  - {data}{row.setting}: {row.stopped} of {row.tried} victims stopped "
                        f"at {_db(row.psnr_db_mean)} mean ({row.commit})."
                    )
            continue
        for e in members:
            out += ["", f"### {e['claim']}", "", header, "|---|---|---|---|---|---|---|"]
            for spec, row in zip(e["rows"], read_table(e["name"])):
                out.append(
                    f"| {spec.get('data', e['data'])} | {row.setting} "
                    f"| {_db(row.psnr_db_mean)} | {_db(row.psnr_db_worst_slice)} "
                    f"| {row.stopped} of {row.tried} | {_experiment_link(e['name'])} | {row.commit} |"
                )
            if e.get("note"):
                out += ["", e["note"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/results.md or a table is out of date (writes nothing)"
    )
    args = parser.parse_args(argv)
    experiments = load_experiments()
    text = render(experiments)
    if args.check:
        stale = [e["name"] for e in experiments if not _table_matches(e)]
        if stale:
            print(
                f"result tables differ from their result files: {stale}; run "
                "python -m benchmarks.run_experiments NAME --table-only",
                file=sys.stderr,
            )
        if RESULTS_MD.read_text() != text:
            print("docs/results.md is out of date: run python -m benchmarks.make_results", file=sys.stderr)
            return 1
        return 1 if stale else 0
    RESULTS_MD.write_text(text)
    print(f"wrote {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
