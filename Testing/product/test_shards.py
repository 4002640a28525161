"""protect-dataset --shard K/N: a deterministic split, manifest parts merged by verify, shards that never collide."""

from __future__ import annotations

import json

import pytest
from scale_data import N_CASES, make_scale_data, outputs

from umedprotect.cli import main
from umedprotect.dataset_protection import Shard
from umedprotect.nnunet import read_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_scale_data(tmp_path_factory.mktemp("shards"))


def part(out, k: int, n: int) -> dict:
    return json.loads((out / Shard(k, n).manifest_name).read_text())


def test_shards_split_the_cases_once_and_in_a_stable_order(data):
    cases = read_dataset(data.source).training
    shards = [[c.case_id for c in Shard(k, 3).cases(cases)] for k in range(3)]
    assert sorted(sum(shards, [])) == sorted(c.case_id for c in cases)
    assert shards == [[c.case_id for c in Shard(k, 3).cases(cases[::-1])] for k in range(3)]
    assert [c.case_id for c in Shard(0, 1).cases(cases)] == sorted(c.case_id for c in cases)


def test_three_shards_write_the_bytes_of_one_run(tmp_path, data, capsys):
    out = tmp_path / "sharded"
    for k in (2, 0, 1):  # any order, as a job array runs them
        assert main(data.argv(out, "--shard", f"{k}/3")) == 0
    parts = [part(out, k, 3) for k in range(3)]
    assert sorted(cid for p in parts for cid in p["cases"]) == [f"case{k:03d}" for k in range(N_CASES)]
    assert [len(p["test"]) for p in parts] == [1, 0, 0]  # shard 0 alone copies the shared files
    assert outputs(out) == outputs(data.reference)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "no discrepancies" in capsys.readouterr().out


def test_verify_reports_a_missing_shard(tmp_path, data, capsys):
    out = tmp_path / "sharded"
    for k in (0, 2):
        assert main(data.argv(out, "--shard", f"{k}/3")) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 3
    printed = capsys.readouterr().out
    assert "umedprotect_manifest.shard-1-of-3.json: missing (protect shard 1 of 3)" in printed
    assert "case case001: in the source but not in the manifest" in printed
    assert "manifest: the run did not finish (rerun protect-dataset to resume it)" in printed.splitlines()


def test_verify_reports_parts_of_runs_with_different_shard_counts(tmp_path, data, capsys):
    out = tmp_path / "sharded"
    for k in range(2):
        assert main(data.argv(out, "--shard", f"{k}/2")) == 0
    stray = out / Shard(0, 3).manifest_name  # a part of a 3-shard run beside them
    stray.write_text((out / Shard(0, 2).manifest_name).read_text())
    capsys.readouterr()
    assert main(["verify", str(out)]) == 3
    assert f"{out}: manifest parts of runs with different shard counts (2, 3)" in capsys.readouterr().out


def test_a_shard_resumes_and_leaves_the_other_shards_partial_files(tmp_path, data, capsys):
    out = tmp_path / "sharded"
    assert main(data.argv(out, "--shard", "0/2")) == 0
    other = out / "imagesTr" / ".case001_0000.nii.gz.abc123.partial.nii.gz"  # shard 1 writing case001
    other.write_bytes(b"in progress")
    own = out / "imagesTr" / ".case002_0000.nii.gz.abc123.partial.nii.gz"  # left by a killed shard 0
    own.write_bytes(b"left over")
    capsys.readouterr()
    assert main(data.argv(out, "--shard", "0/2")) == 0
    assert "resuming: 3 of 3 case(s)" in capsys.readouterr().err
    assert other.is_file() and not own.exists()


def test_a_shard_refuses_a_folder_of_other_settings_or_of_a_whole_run(tmp_path, data, capsys):
    out = tmp_path / "sharded"
    assert main(data.argv(out, "--shard", "0/2")) == 0
    capsys.readouterr()
    assert main(data.argv(out, "--shard", "1/2", "--epsilon", "2")) == 2
    assert "holds a run with other settings" in capsys.readouterr().err
    assert not (out / Shard(1, 2).manifest_name).exists()
    assert main(data.argv(data.reference, "--shard", "1/2")) == 2
    assert "has no umedprotect_manifest.shard-1-of-2.json" in capsys.readouterr().err


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "-1/2"])
def test_malformed_shards_are_argument_errors(tmp_path, data, shard, capsys):
    assert main(data.argv(tmp_path / "never", "--shard", shard)) == 2
    assert "--shard" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
