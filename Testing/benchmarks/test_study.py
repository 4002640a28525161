"""Building blocks of benchmarks/study.py (the study itself is not run in the test suite)."""

from __future__ import annotations

from benchmarks import study


def _results() -> dict:
    runs = {
        "unet|clean|none": {"best_dsc": 0.8, "curve": [0.5, 0.8]},
        "unet|umed-default|none": {
            "best_dsc": 0.08,
            "curve": [0.05, 0.08],
            "train_dsc_final": 0.9,
            "clean_train_dsc_final": 0.1,
        },
        "unet|umed-default|blur": {"best_dsc": 0.4, "curve": [0.4, 0.2]},
    }
    protection = {
        "umed-default": {"protection_seconds": 1.5, "quality": {"psnr_db_mean": 50.1, "ssim_mean": 0.999}},
        "umed-fitted": {"protection_seconds": 2.0, "fit_seconds": 30.0, "quality": {}},
    }
    return {
        "setting": "test",
        "device": "cpu",
        "seed": 0,
        "train": {},
        "baseline": {},
        "fit": {},
        "datasets": {
            "DatasetX": {"split": "by case", "test_source": "x/imagesTs", "runs": runs, "protection": protection}
        },
    }


def test_tables_show_every_method_with_measured_ratios_and_missing_runs_as_na():
    config = {
        "victims": ["unet"],
        "defenses": ["blur", "jpeg"],
        "defense_methods": ["umed-default"],
        "defense_victims": ["unet"],
    }
    text = study.tables(_results(), config)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for method in ("clean", *study.METHODS):
        assert study.METHOD_LABELS[method] in rows
    assert "| 0.080 | 0.100 | 0.900 / 0.100 | 50.10 | 0.9990 | 1.5 |" in rows["UMed (default protector)"]
    assert "| 0.800 | 1.000 | n/a / n/a |" in rows["clean (no protection)"]  # results without the check
    assert "2.0 (+30 fit)" in rows["UMed (fitted on this dataset)"]
    assert rows["EM"].count("n/a") >= 2  # not run: shown, not hidden
    assert "| DatasetX | UMed (default protector) | unet | 0.100 (0.080) | 0.500 (0.400) | n/a |" in text


def test_curves_figure_is_written(tmp_path):
    path = tmp_path / "curves.png"
    study.figure_curves(_results()["datasets"]["DatasetX"], "unet", "DatasetX", path)
    assert path.stat().st_size > 1000


def test_merge_combines_partial_runs_of_several_processes(tmp_path):
    import json

    first, second = _results(), _results()
    second["datasets"]["DatasetX"]["runs"] = {
        "segresnet|clean|none": {"best_dsc": 0.5, "curve": [0.5]},
        "segresnet|umed-default|none": {"best_dsc": 0.25, "curve": [0.25]},
    }
    for name, results in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    (tmp_path / "a" / "perturbations_DatasetX.png").write_bytes(b"png")
    merged = study.merge_results([tmp_path / "a", tmp_path / "b"], "smoke", tmp_path / "out")
    assert set(merged["datasets"]["DatasetX"]["runs"]) == {
        *first["datasets"]["DatasetX"]["runs"],
        "segresnet|clean|none",
        "segresnet|umed-default|none",
    }
    assert merged["datasets"]["DatasetX"]["protection"]["umed-fitted"]["fit_seconds"] == 30.0
    assert (tmp_path / "out" / "perturbations_DatasetX.png").read_bytes() == b"png"
    assert (tmp_path / "out" / "curves_DatasetX.png").is_file()
    assert "| UMed (default protector) | 0.080 | 0.100 |" in (tmp_path / "out" / "tables.md").read_text(
        encoding="utf-8"
    )
