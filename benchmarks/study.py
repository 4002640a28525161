"""The comparison study: UMed vs baselines, several victims, defenses, on real data.

    python -m benchmarks.study --setting small [--device auto] [--resume]
    bash benchmarks/gpu_study.sh          # the gpu setting as parallel processes on one GPU machine, then
    python -m benchmarks.study --setting gpu --merge DIR [DIR ...] --out benchmarks/results/gpu
    python -m benchmarks.study --setting smoke            # < 4 min on 2 CPU cores, proves the pipeline
    python -m benchmarks.study --setting smoke --datasets 001 --out /tmp/smoke001   # the same on real data

For every dataset of the setting (built by benchmarks/prepare_data.py if missing), the training
cases are protected with every method at the same budget (epsilon = 4/255 of each case's window):
UMed with the bundled default protector, UMed with a protector fitted on that dataset
(``umedprotect.fitting``), the baselines EM, TAP, LSP, AR, SEP and uniform random noise in the ROI.
Then every victim is trained from scratch on the clean training cases and on each protected
version (same seed and schedule) and tested on the clean test cases after every epoch
(``umedprotect_eval.evaluation``); the headline is the best epoch. The defenses are applied to the
UMed-protected training set before training. Protection time includes the surrogate training of
EM/TAP/SEP; the fitting time of "UMed fitted" is reported separately.

Writes benchmarks/results/<setting>/: tables.md (results table, defense table, settings),
results.json (every number, per-epoch DSC curves included), perturbations_<dataset>.png (each
method's |perturbation| on one case, side by side) and curves_<dataset>.png (test DSC over the
epochs, clean vs protected). Protected datasets go to benchmarks/data/study/<setting>/ (git-ignored).
With --resume, runs already in results.json and finished protections are reused.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.devices import resolve_device
from umedprotect.fitting import FitSettings, fit_on_datasets
from umedprotect.io import write_json
from umedprotect.methods import setup_method
from umedprotect.nnunet import read_dataset
from umedprotect.protector import ProtectorConfig, save_protector
from umedprotect.settings import ProtectionSettings
from umedprotect_eval.baselines import BaselineSettings
from umedprotect_eval.defenses import defend
from umedprotect_eval.evaluation import load_evaluation_data, ratio
from umedprotect_eval.training import TrainSettings, train_victim
from umedprotect_eval.victims import build_victim

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("umed-default", "umed-fitted", "em", "tap", "lsp", "ar", "sep", "random")
METHOD_LABELS = {
    "umed-default": "UMed (default protector)",
    "umed-fitted": "UMed (fitted on this dataset)",
    "em": "EM",
    "tap": "TAP",
    "lsp": "LSP",
    "ar": "AR",
    "sep": "SEP",
    "random": "random noise in ROI",
    "clean": "clean (no protection)",
}
EPSILON = 4.0
DATA_DIR = ROOT / "benchmarks" / "data" / "nnUNet_raw"
WORK_DIR = ROOT / "benchmarks" / "data" / "study"
RESULTS_DIR = ROOT / "benchmarks" / "results"

SETTINGS = {
    "smoke": dict(
        datasets=["900"],
        victims=["unet"],
        defenses=["blur", "mix-clean"],
        defense_victims=["unet"],
        defense_methods=["umed-default"],
        train=TrainSettings(epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=32),
        baseline=BaselineSettings(
            surrogate_steps=4,
            batch_size=2,
            patch_size=32,
            em_rounds=1,
            em_train_steps=2,
            em_pgd_steps=1,
            pgd_steps=1,
            sep_checkpoints=2,
        ),
        fit=FitSettings(steps=4, min_steps=1, batch_size=2, patch_size=32),
        threads=2,
    ),
    "small": dict(  # estimated 1.5-2 h on a 2-core CPU (not measured end to end)
        datasets=["001", "002"],
        victims=["unet", "plainconvunet", "segresnet"],
        defenses=["blur", "bitdepth", "jpeg", "downup", "strong-aug", "mix-clean"],
        defense_victims=["unet"],
        defense_methods=["umed-fitted"],
        train=TrainSettings(epochs=8, iterations_per_epoch=20, batch_size=8, patch_size=64),
        baseline=BaselineSettings(surrogate_steps=100, em_rounds=4, em_pgd_steps=2, pgd_steps=6, sep_checkpoints=3),
        fit=FitSettings(steps=300, min_steps=300, batch_size=8, patch_size=64),
        threads=2,
    ),
    "gpu": dict(  # sized for benchmarks/gpu_study.sh: one process per dataset and victim on one GPU, < 10 min
        datasets=["001", "002", "003"],
        victims=["unet", "plainconvunet", "segresnet"],
        defenses=["blur", "bitdepth", "jpeg", "downup", "strong-aug", "mix-clean"],
        defense_victims=["unet"],
        defense_methods=["umed-fitted"],
        train=TrainSettings(epochs=12, iterations_per_epoch=25, batch_size=16, patch_size=128),
        baseline=BaselineSettings(
            surrogate_steps=200,
            batch_size=16,
            patch_size=128,
            em_rounds=4,
            em_train_steps=10,
            em_pgd_steps=5,
            pgd_steps=20,
            sep_checkpoints=4,
        ),
        fit=FitSettings(steps=500, min_steps=500, batch_size=32, patch_size=128),
        threads=2,
    ),
}


def dataset_dir(data_dir: Path, dataset_id: str) -> Path:
    """The ``Dataset<id>_*`` folder, built by prepare_data.py when missing."""
    found = sorted(data_dir.glob(f"Dataset{dataset_id}_*"))
    if not found:
        from benchmarks import prepare_data

        prepare_data.main(["--data-dir", str(data_dir.parent), "--only", dataset_id])
        found = sorted(data_dir.glob(f"Dataset{dataset_id}_*"))
    return found[0]


def protect_with(method: str, source: Path, out: Path, config: dict, device: str, seed: int) -> dict:
    """Protect the training cases of ``source`` into ``out`` with ``method``; times and provenance."""
    info: dict = {"method": method}
    if (out / MANIFEST_NAME).is_file() and (out / "study_protection.json").is_file():  # finished earlier (--resume)
        return json.loads((out / "study_protection.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    settings = ProtectionSettings(epsilon=EPSILON, seed=seed, device=device)
    if method == "umed-default":
        setup = setup_method("umed", settings)
    elif method == "umed-fitted":
        fit_started = time.perf_counter()
        fit_settings = replace(config["fit"], seed=seed, device=device)
        protector, history = fit_on_datasets([str(source)], ProtectorConfig(epsilon=EPSILON), fit_settings)
        info["fit_seconds"] = round(time.perf_counter() - fit_started, 1)
        info["fit_steps"] = len(history)
        info["protector_file"] = str(save_protector(protector, out.parent / f"{out.name}.safetensors"))
        started = time.perf_counter()
        setup = setup_method("umed", settings, protector=protector)
    else:
        setup = setup_method(method, settings, read_dataset(source), method_settings=config["baseline"])
    manifest = protect_dataset(
        source,
        out,
        setup.case_protector,
        method,
        setup.parameters,
        protector_info=setup.protector_info,
        device=setup.device,
        overwrite=True,
        progress=False,
    )
    info["protection_seconds"] = round(time.perf_counter() - started, 1)
    info["psnr_db_min"] = min(image.psnr_db for case in manifest.cases.values() for image in case.images or [])
    (out / "study_protection.json").write_text(json.dumps(info, indent=2))
    return info


def run_study(
    setting: str, device: str, seed: int, resume: bool, data_dir: Path, out_dir: Path, overrides: dict | None = None
) -> dict:
    config = {**SETTINGS[setting], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    for victim in config["victims"]:
        build_victim(victim, 2)  # fail now, not after an hour, when a victim's library is missing
    torch.set_num_threads(config["threads"])
    device = str(resolve_device(device))
    train_settings = replace(config["train"], seed=seed, device=device)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if resume and results_path.is_file() else {}
    results.update(
        setting=setting,
        device=device,
        seed=seed,
        epsilon=EPSILON,
        train=train_settings.summary(),
        baseline={k: v for k, v in asdict(config["baseline"]).items() if k != "augment"},
        fit={k: v for k, v in asdict(config["fit"]).items() if k != "augment"},
    )
    results.setdefault("datasets", {})
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json(results, results_path)

    for dataset_id in config["datasets"]:
        source = dataset_dir(data_dir, dataset_id)
        entry = results["datasets"].setdefault(
            source.name, {"split": json.loads((source / "dataset.json").read_text(encoding="utf-8")).get("split")}
        )
        protections = entry.setdefault("protection", {})
        runs = entry.setdefault("runs", {})
        work = WORK_DIR / setting / source.name
        if not resume and work.exists():
            shutil.rmtree(work)
        for method in METHODS:
            print(f"[{source.name}] protecting with {method}", flush=True)
            protections[method] = protect_with(method, source, work / method, config, device, seed)
            save()
        data = {m: load_evaluation_data(source, work / m) for m in METHODS}
        for method in METHODS:
            protections[method]["quality"] = {k: v for k, v in data[method].quality.items() if k != "cases"}
        for victim in config["victims"]:
            jobs = [("clean", "none", data[METHODS[0]].clean, train_settings)]
            jobs += [(m, "none", data[m].protected, train_settings) for m in METHODS]
            if victim in config["defense_victims"]:
                for m in config["defense_methods"]:
                    for d in config["defenses"]:
                        jobs.append((m, d, *defend(d, data[m].protected, data[m].clean, train_settings)))
            for method, defense, train, settings in jobs:
                key = f"{victim}|{method}|{defense}"
                if key in runs:
                    continue
                print(
                    f"[{source.name}] training {victim} on {method}" + ("" if defense == "none" else f" + {defense}"),
                    flush=True,
                )
                reference = data[METHODS[0]]
                run = train_victim(
                    train,
                    reference.test,
                    victim,
                    reference.n_classes,
                    settings,
                    progress=_print_epoch,
                    run_name=key,
                    normalisation=reference.normalisation,
                    clean_train=reference.clean,
                )
                runs[key] = run.to_dict()
                save()
        entry["test_source"] = _relative(data[METHODS[0]].test_source)
        figure_perturbations(source, work, out_dir / f"perturbations_{source.name}.png")
        if config["victims"]:
            figure_curves(entry, config["victims"][0], source.name, out_dir / f"curves_{source.name}.png")
    (out_dir / "tables.md").write_text(tables(results, config), encoding="utf-8")
    save()
    return results


def merge_results(parts: list[Path], setting: str, out_dir: Path) -> dict:
    """Combine the results.json of several partial runs (e.g. one per dataset and victim) into ``out_dir``."""
    merged: dict = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        results = json.loads((part / "results.json").read_text(encoding="utf-8"))
        datasets = merged.setdefault("datasets", {})
        merged.update({k: v for k, v in results.items() if k != "datasets"})
        for name, entry in results.get("datasets", {}).items():
            target = datasets.setdefault(name, {})
            for key, value in entry.items():
                target[key] = {**target.get(key, {}), **value} if isinstance(value, dict) else value
        for figure in part.glob("perturbations_*.png"):
            shutil.copy2(figure, out_dir / figure.name)
    for name, entry in merged.get("datasets", {}).items():
        figure_curves(entry, SETTINGS[setting]["victims"][0], name, out_dir / f"curves_{name}.png")
    (out_dir / "tables.md").write_text(tables(merged, SETTINGS[setting]), encoding="utf-8")
    write_json(merged, out_dir / "results.json")
    return merged


def _relative(path: str) -> str:
    """``path`` relative to the repository when inside it (portable tables)."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path


def _print_epoch(name: str, epoch: int, epochs: int, dsc: float) -> None:
    print(f"  {name}: epoch {epoch}/{epochs} test DSC {dsc:.4f}", flush=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def tables(results: dict, config: dict) -> str:
    """The results table (one per dataset), the defense table and the settings, as markdown."""
    victims = config["victims"]
    lines = [
        f"# Study results: setting `{results['setting']}`",
        "",
        f"Device {results['device']}, seed {results['seed']}, budget epsilon = {EPSILON:g}/255 of each case's "
        "intensity window. DSC = best-epoch test DSC on the clean test cases (mean over test cases of the "
        "mean Dice over the foreground labels present); ratio = DSC(protected) / DSC(clean), same victim. "
        "PSNR/SSIM: protected vs clean training images (mean over cases). Protection time includes the "
        "surrogate training of EM/TAP/SEP; fitting time of UMed fitted in brackets. Fit check "
        f"({victims[0]}, last epoch, on the training cases): DSC on the training images as trained on / "
        "on their clean versions; a victim that relies on the perturbation has the first high and the "
        "second low.",
        "",
    ]
    for name, entry in results["datasets"].items():
        runs = entry.get("runs", {})
        lines += [f"## {name}", "", f"Split: {entry.get('split')}. Test cases: {entry.get('test_source')}.", ""]
        header = [
            "method",
            *[f"DSC {v}" for v in victims],
            *[f"ratio {v}" for v in victims],
            f"fit check {victims[0]}",
            "PSNR dB",
            "SSIM",
            "time s",
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in ("clean", *METHODS):
            dsc = [runs.get(f"{v}|{method}|none", {}).get("best_dsc") for v in victims]
            clean = [runs.get(f"{v}|clean|none", {}).get("best_dsc") for v in victims]
            ratios = [ratio(d, c) if d is not None and c is not None else None for d, c in zip(dsc, clean)]
            info = entry["protection"].get(method, {})
            quality = info.get("quality", {})
            seconds = _fmt(info.get("protection_seconds"), 1) if method != "clean" else "—"
            if "fit_seconds" in info:
                seconds += f" (+{info['fit_seconds']:.0f} fit)"
            first = runs.get(f"{victims[0]}|{method}|none", {})
            fit = f"{_fmt(first.get('train_dsc_final'))} / {_fmt(first.get('clean_train_dsc_final'))}"
            row = [
                METHOD_LABELS[method],
                *[_fmt(d) for d in dsc],
                *[_fmt(r) for r in ratios],
                fit,
                _fmt(quality.get("psnr_db_mean"), 2) if method != "clean" else "—",
                _fmt(quality.get("ssim_mean"), 4) if method != "clean" else "—",
                seconds,
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "## Defenses against UMed",
        "",
        "The attacker applies the defense to the protected training set, then trains; ratio = best DSC "
        "(protected + defense) / best DSC (clean, no defense), same victim.",
        "",
    ]
    header = ["dataset", "protector", "victim", "none", *config["defenses"]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in results["datasets"].items():
        runs = entry.get("runs", {})
        for method in config["defense_methods"]:
            for victim in config["defense_victims"]:
                clean = runs.get(f"{victim}|clean|none", {}).get("best_dsc")
                cells = []
                for d in ("none", *config["defenses"]):
                    run = runs.get(f"{victim}|{method}|{d}")
                    cells.append(
                        "n/a"
                        if run is None or clean is None
                        else f"{_fmt(ratio(run['best_dsc'], clean))} ({_fmt(run['best_dsc'])})"
                    )
                lines.append("| " + " | ".join([name, METHOD_LABELS[method], victim, *cells]) + " |")
    lines += [
        "",
        "Cells: ratio (best-epoch DSC).",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps({k: results[k] for k in ("train", "baseline", "fit")}, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _case_slice(source: Path, work: Path):
    """First training case: its slice with the largest ROI, clean and per method."""
    from umedprotect import io

    dataset = read_dataset(source)
    case = dataset.training[0]
    image = io.read_image(case.images[0])
    array, spacing = io.to_array(image)
    labels, _ = io.to_array(io.read_label(case.label, image))

    def pick(a):
        if a.ndim == 2:
            return a.astype(np.float64)
        axis = int(np.argmax(spacing))
        k = int(np.argmax(np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).sum(axis=1)))
        return np.take(a, k, axis=axis).astype(np.float64)

    protected = {}
    for method in METHODS:
        path = work / method / dataset.relative(case.images[0])
        protected[method] = pick(io.to_array(io.read_image(path))[0])
    return case.case_id, pick(array), pick(labels), protected


def figure_perturbations(source: Path, work: Path, path: Path) -> None:
    """Original slice, then |protected - original| of each method on a shared colour scale (native units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case_id, clean, labels, protected = _case_slice(source, work)
    diffs = {m: np.abs(p - clean) for m, p in protected.items()}
    vmax = max(float(d.max()) for d in diffs.values()) or 1.0
    fig, axes = plt.subplots(1, len(METHODS) + 1, figsize=(2.6 * (len(METHODS) + 1), 3.0))
    axes[0].imshow(clean, cmap="gray")
    axes[0].contour(labels > 0, levels=[0.5], colors="lime", linewidths=0.6)
    axes[0].set_title(f"{case_id}\n(ROI in green)", fontsize=8)
    for ax, method in zip(axes[1:], METHODS):
        im = ax.imshow(diffs[method], cmap="hot", vmin=0, vmax=vmax)
        ax.set_title(f"{METHOD_LABELS[method]}\nmax |change| {diffs[method].max():.3g}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(im, ax=axes, fraction=0.015, label="|perturbation| (native units)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def figure_curves(entry: dict, victim: str, name: str, path: Path) -> None:
    """Test DSC after every epoch of ``victim`` trained on clean data and on each protected version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method in ("clean", *METHODS):
        run = entry["runs"].get(f"{victim}|{method}|none")
        if run:
            epochs = range(1, len(run["curve"]) + 1)
            style = dict(color="black", linewidth=2.5) if method == "clean" else {}
            ax.plot(epochs, run["curve"], marker="o", markersize=3, label=METHOD_LABELS[method], **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test DSC (clean test cases)")
    ax.set_title(f"{name}: {victim} trained on clean vs protected data", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=tuple(SETTINGS), default="small")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="reuse finished protections and runs of results.json")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder of the nnU-Net raw datasets")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<setting>)")
    parser.add_argument(
        "--datasets", nargs="+", metavar="ID", help="dataset ids instead of the setting's (e.g. 001 002)"
    )
    parser.add_argument("--victims", nargs="+", metavar="NAME", help="victims instead of the setting's")
    parser.add_argument("--defenses", nargs="*", metavar="NAME", help="defenses instead of the setting's (none: skip)")
    parser.add_argument("--protect-only", action="store_true", help="protect with every method, train no victim")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="only combine the results of these partial runs into --out (tables included)",
    )
    args = parser.parse_args(argv)
    started = time.time()
    out = args.out or RESULTS_DIR / args.setting
    if args.merge:
        merge_results(args.merge, args.setting, out)
        print(f"merged {len(args.merge)} result folder(s) into {out}")
        return 0
    overrides = {
        "datasets": args.datasets,
        "victims": [] if args.protect_only else args.victims,
        "defenses": args.defenses,
    }
    if args.victims:
        overrides["defense_victims"] = [
            v for v in SETTINGS[args.setting]["defense_victims"] if v in args.victims
        ] or args.victims[:1]
    run_study(args.setting, args.device, args.seed, args.resume, args.data_dir, out, overrides)
    print(f"study '{args.setting}' finished in {time.time() - started:.0f} s; see {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
