"""protect-dataset --dask: one task per shard on a Dask LocalCluster of worker processes, then verify."""

from __future__ import annotations

import pytest
from scale_data import make_scale_data, outputs

from umedprotect.cli import main
from umedprotect.dataset_protection import Shard

pytest.importorskip("distributed", reason="the dask extra is not installed")


def test_two_dask_worker_processes_write_the_bytes_of_one_run(tmp_path, capsys):
    data = make_scale_data(tmp_path, n_cases=4)
    out = tmp_path / "dask"
    assert main(data.argv(out, "--dask", "local:2")) == 0  # two shards, one per worker process
    assert sorted(p.name for p in out.glob("umedprotect_manifest*")) == [Shard(k, 2).manifest_name for k in range(2)]
    assert outputs(out) == outputs(data.reference)
    printed = capsys.readouterr().out
    assert "4 of 4 case(s) protected" in printed and "discrepanc" not in printed
    assert main(["verify", str(out)]) == 0


def test_dask_takes_no_shard_or_workers(tmp_path, capsys):
    argv = ["protect-dataset", str(tmp_path), "-o", str(tmp_path / "out"), "--dask", "local:2"]
    assert main([*argv, "--shard", "0/2"]) == 2
    assert "--dask runs one shard per Dask task" in capsys.readouterr().err
    assert main([*argv[:-2], "--shards", "2"]) == 2
    assert "--shards applies to --dask only" in capsys.readouterr().err
