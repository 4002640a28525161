"""The results page's reading of screen lines: ratios paired by seed, measured at each checkpoint."""

import json

import pytest

from benchmarks import make_results
from benchmarks.make_results import _screen_ratios


@pytest.fixture
def source(tmp_path):
    """A screen source over two seeds; seed 1's clean victim ends at 0."""

    def line(candidate, seed, curve, fit):
        return dict(candidate=candidate, seed=seed, curve=curve, fit=fit, psnr_mean=51.0, psnr_worst=50.0)

    lines = [
        line("clean", 0, [0.5, 0.8], [0.6, 0.9]),
        line("clean", 1, [0.4, 0.0], [0.9, 0.5]),
        line("default", 0, [0.4, 0.08], [0.5, 0.9]),
        line("default", 1, [0.2, 0.1], [0.9, 0.5]),
    ]
    path = tmp_path / "screen.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    return dict(file=str(path), match={"candidate": "default"}, clean_match={"candidate": "clean"})


def test_screen_ratios_pair_seeds_at_each_checkpoint(source):
    final, _, _ = _screen_ratios({**source, "measure": "final", "seeds": [0]})
    selected, _, _ = _screen_ratios({**source, "measure": "selected"})
    oracle, psnr_mean, psnr_worst = _screen_ratios({**source, "measure": "oracle"})
    assert final == pytest.approx({0: 0.1})
    assert selected == pytest.approx({0: 0.1, 1: 0.5})
    assert oracle == pytest.approx({0: 0.5, 1: 0.5})
    assert (psnr_mean, psnr_worst) == (51.0, 50.0)


def test_screen_ratios_leave_out_seeds_not_listed(source):
    with pytest.raises(ZeroDivisionError):  # seed 1's clean victim ends at 0: no final ratio
        _screen_ratios({**source, "measure": "final"})
    assert set(_screen_ratios({**source, "measure": "final", "seeds": [0]})[0]) == {0}


def test_a_row_names_its_own_data_where_it_differs(monkeypatch):
    experiment = dict(
        name="two-datasets", section="current", claim="claim", data="CT liver", note="", rows=[{}, {"data": "CT ribs"}]
    )
    rows = [make_results.Row(f"setting {k}", 51.0, 50.0, 1, 1, "abc1234") for k in range(2)]
    monkeypatch.setattr(make_results, "read_table", lambda name: rows)
    page = make_results.render([experiment])
    assert "| CT liver | setting 0 |" in page
    assert "| CT ribs | setting 1 |" in page


def test_a_negative_claim_is_written_once_above_its_rows(monkeypatch):
    experiment = dict(
        name="no-luck", section="negative", claim="It fails.", data="CT liver", rows=[{}, {"data": "CT ribs"}]
    )
    rows = [make_results.Row(f"setting {k}", 51.0, 50.0, 0, 2, "abc1234") for k in range(2)]
    monkeypatch.setattr(make_results, "read_table", lambda name: rows)
    page = make_results.render([experiment])
    assert page.count("It fails.") == 1
    assert "  - setting 0: 0 of 2 victims stopped at 51.0 dB mean (abc1234)." in page
    assert "  - CT ribs; setting 1: 0 of 2" in page


def test_screen_ratios_of_one_label_keep_the_checkpoint_chosen_on_the_whole_fit(tmp_path):
    def line(candidate, label_curve):
        curve = [sum(dsc) / 2 for dsc in label_curve]
        fit = [0.9, 0.5, 0.8]
        return dict(
            candidate=candidate, seed=0, curve=curve, label_curve=label_curve, fit=fit, psnr_mean=51.0, psnr_worst=50.0
        )

    path = tmp_path / "screen.jsonl"
    lines = [line("clean", [[0.8, 0.5], [0.9, 0.6], [0.9, 0.8]]), line("default", [[0.0, 0.4], [0.0, 0.6], [0.1, 0.2]])]
    path.write_text("".join(json.dumps(entry) + "\n" for entry in lines), encoding="utf-8")
    source = dict(file=str(path), match={"candidate": "default"}, clean_match={"candidate": "clean"}, label=2)
    assert _screen_ratios({**source, "measure": "final"})[0] == pytest.approx({0: 0.25})
    assert _screen_ratios({**source, "measure": "selected"})[0] == pytest.approx({0: 0.8})  # epoch 0, the best fit
    assert _screen_ratios({**source, "measure": "oracle"})[0] == pytest.approx({0: 0.75})
    assert _screen_ratios({**source, "measure": "final", "label": 1})[0] == pytest.approx({0: 0.1 / 0.9})


def test_the_nnunet_checkpoint_of_a_report_is_read_from_its_validation_curves():
    def run(data, curve, validation):
        return dict(data=data, seed=0, victim="unet", defense="none", curve=curve, validation_curve=validation)

    report = dict(
        summary=[dict(seed=0, victim="unet", defense="none", ratio_nnunet=0.5)],  # as the former rule wrote it
        runs=[run("clean", [0.8, 0.9, 0.9], [0.7, 0.8, 0.8]), run("protected", [0.8, 0.4, 0.0], [0.6, 0.9, 0.8])],
    )
    # moving averages: protected 0.6, 0.63, 0.647 (epoch 3, not the one-epoch best 2); clean: epoch 3
    assert make_results._evaluate_ratios(report, "nnunet") == {0: 0.0}
