"""Protect a dataset across machines with Dask distributed: one task per shard, then one verify.

Every task runs :func:`protect_shard` for one :class:`~umedprotect.dataset_protection.Shard` on a
Dask worker, which builds the method itself (the protector is read where the task runs) and writes
into the shared output folder. Outputs are byte-identical to a single-process run. Needs the
``dask`` extra (``pip install umedprotect[dask]``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .dataset_protection import WHOLE_DATASET, Shard, protect_dataset, verify
from .errors import InputError
from .records import DatasetManifest
from .settings import ProtectionSettings

LOCAL_PREFIX = "local:"  # ``local:N``: a LocalCluster of N worker processes on this machine


def protect_shard(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str,
    settings: ProtectionSettings,
    *,
    shard: Shard = WHOLE_DATASET,
    workers: int = 1,
    allow_empty: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    threads: int | None = None,
) -> DatasetManifest:
    """Build ``method`` with ``settings`` here and protect ``shard`` of ``in_dir`` into ``out_dir``.

    ``threads`` caps this process's torch threads (a worker's share of its machine).
    """
    from .methods import DEFAULT_METHOD, setup_method
    from .nnunet import read_dataset

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    dataset = None if method == DEFAULT_METHOD else read_dataset(in_dir)  # what baselines train surrogates on
    setup = setup_method(method, settings, dataset)
    return protect_dataset(
        in_dir,
        out_dir,
        setup.case_protector,
        method,
        setup.parameters,
        protector_info=setup.protector_info,
        device=setup.device,
        allow_empty=allow_empty,
        overwrite=overwrite,
        progress=progress,
        workers=workers,
        shard=shard,
    )


def protect_on_dask(
    scheduler: str,
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str,
    settings: ProtectionSettings,
    *,
    shards: int | None = None,
    allow_empty: bool = False,
    overwrite: bool = False,
) -> tuple[list[DatasetManifest], list[str]]:
    """Protect ``in_dir`` in ``shards`` tasks (default: one per Dask worker) on ``scheduler``; verify the result.

    ``scheduler`` is a Dask scheduler address (``tcp://host:8786``) or ``local:N``. The output folder
    must be reachable from every worker under the same path. Returns the shards' manifests and
    :func:`verify`'s discrepancies (empty: all good).
    """
    if shards is not None and shards < 1:
        raise InputError(f"{shards} must be at least 1", option="shards")
    in_dir, out_dir = Path(in_dir).resolve(), Path(out_dir).resolve()  # the workers' working folders may differ
    with _client(scheduler) as (client, threads):
        count = shards or len(client.scheduler_info()["workers"])
        futures = [
            client.submit(
                protect_shard,
                in_dir,
                out_dir,
                method,
                settings,
                shard=Shard(k, count),
                allow_empty=allow_empty,
                overwrite=overwrite,
                threads=threads,
                pure=False,
            )
            for k in range(count)
        ]
        manifests = client.gather(futures)
    return manifests, verify(out_dir)


@contextlib.contextmanager
def _client(scheduler: str) -> Iterator[tuple[object, int | None]]:
    """A Dask client of ``scheduler`` and the torch threads each task should take (None: the worker's own)."""
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        raise InputError("needs Dask distributed: pip install 'umedprotect[dask]'", option="dask") from None
    if not scheduler.startswith(LOCAL_PREFIX):
        with Client(scheduler) as client:
            yield client, None
        return
    try:
        n_workers = int(scheduler[len(LOCAL_PREFIX) :])
    except ValueError:
        n_workers = 0
    if n_workers < 1:
        raise InputError(f"{scheduler!r}: write local:N with N >= 1 worker processes", option="dask")
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client, threads
