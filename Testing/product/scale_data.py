"""Shared data of the scaling tests (workers, shards, Dask): a small dataset, a protector, a reference run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from conftest import write_nnunet_dataset

from umedprotect.cli import main
from umedprotect.dataset_protection import SHARD_MANIFEST

N_CASES = 5


@dataclass(frozen=True)
class ScaleData:
    source: Path
    protector: Path
    reference: Path  # the single-process output

    def argv(self, out: Path, *extra: str) -> list[str]:
        return [
            "protect-dataset",
            str(self.source),
            "-o",
            str(out),
            "--protector",
            str(self.protector),
            "--no-progress",
            *extra,
        ]


def make_scale_data(root: Path, n_cases: int = N_CASES, shape: tuple[int, ...] = (8, 48, 48)) -> ScaleData:
    """A dataset of ``n_cases`` training cases and one test case, and its protection in one process."""
    from umedprotect.protector import Protector, save_protector

    torch.manual_seed(0)
    protector = save_protector(Protector().eval(), root / "random.safetensors")
    source = write_nnunet_dataset(root / "Dataset003_Scale", n_train=n_cases, n_test=1, shape=shape)
    data = ScaleData(source, protector, root / "reference")
    assert main(data.argv(data.reference)) == 0
    return data


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file of an output folder but its manifest(s), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "umedprotect_manifest.json" and not SHARD_MANIFEST.fullmatch(p.name)
    }
