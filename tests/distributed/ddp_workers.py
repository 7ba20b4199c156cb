"""Tiny CTR data, configs, and the functions each spawned rank runs (importable by children).

The data has a ``row_id`` column so tests can check which rows each rank trained on, and row
groups of a fixed size: with ``row_group_rows == batch_size`` and file order (no shuffle), rank
``r`` of ``N`` trains on row groups ``r, r + N, ...``, so global step ``s`` sees exactly the rows
of a one-process run with batch size ``N * batch_size``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

SCHEMA = {
    "label": "label",
    "group": "user_id",
    "embedding_dim": 8,
    "features": [
        {"name": "user_id", "kind": "categorical"},
        {"name": "item_id", "kind": "categorical"},
        {"name": "cat_a", "kind": "categorical"},
        {"name": "num_0", "kind": "numeric"},
    ],
}


def write_ctr(path: Path, *, rows: int, row_group_rows: int, seed: int) -> Path:
    """``rows`` rows with a planted logit (user, item and cat_a effects, one numeric)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 50, rows)
    item = rng.integers(0, 80, rows)
    cat_a = rng.integers(0, 10, rows)
    num_0 = rng.normal(size=rows).astype(np.float32)
    effects = np.random.default_rng(1234)  # the same planted model for every split
    user_bias, item_bias, cat_bias = effects.normal(size=50), effects.normal(size=80), effects.normal(size=10)
    logit = user_bias[user] + item_bias[item] + cat_bias[cat_a] + 0.8 * num_0 - 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    table = pa.table(
        {
            "row_id": np.arange(rows, dtype=np.int64),
            "user_id": user,
            "item_id": item,
            "cat_a": cat_a,
            "num_0": num_0,
            "label": label,
        }
    )
    pq.write_table(table, path, row_group_size=row_group_rows)
    return path


def write_config(folder: Path, *, train_rows: int = 2000, valid_rows: int = 600, row_group_rows: int = 100, **sections: Any) -> Path:
    """A DeepFM run config over fresh train/valid files in ``folder``; ``sections`` override keys."""
    folder.mkdir(parents=True, exist_ok=True)
    train = write_ctr(folder / "train.parquet", rows=train_rows, row_group_rows=row_group_rows, seed=0)
    valid = write_ctr(folder / "valid.parquet", rows=valid_rows, row_group_rows=row_group_rows, seed=1)
    config = {
        "name": "ddp_test",
        "data": {"train": str(train), "valid": str(valid)},
        "schema": SCHEMA,
        "task": {"type": "binary"},
        "model": {"name": "deepfm", "params": {"hidden_dims": [16, 8]}},
        "loader": {"batch_size": row_group_rows, "shuffle_buffer": 0},
        "trainer": {"epochs": 2, "lr": 0.01, "monitor": "auc", "device": "cpu", "progress": False},
        "output": str(folder / "run"),
        "threads": 1,
        "seed": 0,
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_multitask_config(folder: Path, data: Path, *, weighting: str, epochs: int = 2, **sections: Any) -> Path:
    """An MMoE run config (click, like given click) over ``data``'s train/valid files, written by
    :func:`write_multitask_data`; ``sections`` add or replace top-level keys (``distributed``)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "name": "ddp_multitask",
        "data": {split: str(data / f"{split}.parquet") for split in ("train", "valid")},
        "schema": {
            "targets": [{"name": "click"}, {"name": "like", "condition": "click"}],
            "embedding_dim": 8,
            "features": [{"name": "user_group", "kind": "categorical"}, {"name": "item_cat", "kind": "categorical"}, {"name": "x", "kind": "numeric"}],
        },
        "task": {"type": "multi_task", "loss_weighting": weighting},
        "model": {"name": "mmoe", "params": {"num_experts": 2, "hidden_dims": [8], "tower_dims": [8]}},
        "loader": {"batch_size": 100, "shuffle_buffer": 0},
        "trainer": {"epochs": epochs, "lr": 0.05, "monitor": "click_auc", "device": "cpu", "progress": False},
        "output": str(folder / "run"),
        "threads": 1,
        "seed": 0,
        **sections,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_multitask_data(folder: Path, train_rows: int) -> Path:
    """The synthetic click / like set, in row groups of 100: every rank gets record batches to read."""
    from recstack.datasets.multi_task import generate_multitask

    generate_multitask(folder, rows=(train_rows, 400, 400), seed=0)
    for split in ("train", "valid"):
        path = folder / f"{split}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=100)
    return folder


def spawn(fn: Callable[..., None], *args: Any, world_size: int = 2) -> None:
    """Runs ``fn(rank, *args)`` in ``world_size`` processes with a gloo group already joined.

    The ranks meet through a file (no TCP store, so no free port to race for). A run in which a
    rank was killed by a signal is tried once more: CI saw a rank end by SIGABRT, inside
    torch's C++ communication code, in one spawn of a run's ~20 on a loaded machine (twice), and never
    here in 120 plain init/all_reduce/destroy spawns (gloo's TCP transport has such aborts
    reported upstream, e.g. pytorch/pytorch#188266). A rank that raised is never retried. Where
    every rank had finished ``fn`` before the signal (CI printed "terminate called without an
    active exception": an abort in teardown), the run counts as done and its outputs are checked.
    """
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            init_method = f"file://{Path(folder) / 'rendezvous'}"
            try:
                mp.spawn(_rank_main, args=(world_size, init_method, fn, args, folder), nprocs=world_size, join=True)
                return
            except mp.ProcessExitedException as error:
                if error.signal_name is not None and all((Path(folder) / f"done{r}").exists() for r in range(world_size)):
                    # every rank had finished its work: the abort came in teardown ("terminate
                    # called without an active exception", seen in CI), and a rerun would find
                    # the outputs of the finished run (a run folder refuses to be overwritten)
                    warnings.warn(f"spawned rank died after finishing its work ({error}); outputs kept", RuntimeWarning)
                    return
                if attempt == 2 or error.signal_name is None:
                    raise
                warnings.warn(f"spawned rank died ({error}); running the ranks once more", RuntimeWarning)


def _rank_main(rank: int, world_size: int, init_method: str, fn: Callable[..., None], args: tuple, folder: str) -> None:
    # the variables torchrun sets, so init_from_env sees a real launch
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
        (Path(folder) / f"done{rank}").touch()  # the work is done; what follows is teardown
    finally:
        dist.destroy_process_group()


# -- what the ranks run ------------------------------------------------------------------------


def train_and_save(rank: int, config_path: str, out_dir: str) -> None:
    """``train_run`` in this rank; saves the final weights and metrics as ``rank{r}.pt``."""
    from recstack.config import RunConfig
    from recstack.workflows.train import train_run

    config = RunConfig.from_yaml(config_path)
    model_holder: dict[str, Any] = {}
    import recstack.workflows.train as train_module

    build = train_module.build_model

    def keep(*a: Any, **k: Any):  # keep a handle on this rank's model
        model_holder["model"] = build(*a, **k)
        return model_holder["model"]

    train_module.build_model = keep
    torch.manual_seed(0)  # train_run does not seed the initial weights: the same ones in every run
    try:
        metrics = train_run(config, log=lambda _: None)
    finally:
        train_module.build_model = build
    state = {k: v.detach().cpu().clone() for k, v in model_holder["model"].state_dict().items()}
    torch.save({"state": state, "metrics": metrics}, Path(out_dir) / f"rank{rank}.pt")


def record_row_ids(rank: int, config_paths: dict[str, str], out_dir: str, epochs: int) -> None:
    """Per config: the row ids of every step this rank trains on, per epoch, padding marked."""
    from recstack.config import RunConfig
    from recstack.data.loader import BatchStream, make_loader
    from recstack.data.preprocessor import Preprocessor
    from recstack.models import build_model
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.workflows.distributed import DistributedTraining, init_from_env

    context = init_from_env("cpu")
    result = {}
    for name, config_path in config_paths.items():
        config = RunConfig.from_yaml(config_path)
        schema_with_row_ids = dataclasses.replace(config.schema, group="row_id")  # batch.group = row ids
        preprocessor = Preprocessor(schema_with_row_ids).fit(config.data.train)
        model = build_model("lr", preprocessor.feature_map(), {})
        training = DistributedTraining(model=model, task=BinaryClassificationTask(), context=context)
        stream = BatchStream(source=config.data.train, preprocessor=preprocessor, config=config.loader)
        result[name] = []
        for epoch in range(epochs):
            stream.set_epoch(epoch)
            batches = training.lockstep(make_loader(stream))
            result[name].append([(batch.group.tolist(), training.padding) for batch in batches])
    torch.save(result, Path(out_dir) / f"rows{rank}.pt")


def evaluate_both_ways(rank: int, config_path: str, out_dir: str, chunk_rows: int) -> None:
    """Gathered (sharded) metrics and this rank's one-process metrics on the same weights."""
    from recstack.config import RunConfig
    from recstack.data.preprocessor import Preprocessor
    from recstack.evaluation.ranking_evaluator import collect_predictions
    from recstack.evaluation.ranking_metrics import Predictions, ranking_report
    from recstack.data.loader import BatchStream, LoaderConfig
    from recstack.models import build_model
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.workflows.distributed import gather_predictions
    from recstack.workflows.tasks import evaluate_source

    config = RunConfig.from_yaml(config_path)
    preprocessor = Preprocessor(config.schema).fit(config.data.train)
    torch.manual_seed(7)  # the same random weights on every rank
    model = build_model("deepfm", preprocessor.feature_map(), {"hidden_dims": [16, 8]})
    task = BinaryClassificationTask()
    gathered = evaluate_source(model, task, preprocessor, config.data.valid)  # sharded under dist
    whole = BatchStream(source=config.data.valid, preprocessor=preprocessor, config=LoaderConfig(batch_size=4096), rank=0, world_size=1)
    predictions = collect_predictions(model, task, whole)
    single = ranking_report(*predictions)
    # the same predictions split as BatchStream shards them (row group k to rank k % 2)
    chunk = np.arange(len(predictions.labels)) // chunk_rows
    mine = chunk % dist.get_world_size() == rank
    shard = Predictions(predictions.labels[mine], predictions.probs[mine], predictions.groups[mine])
    same_predictions = ranking_report(*gather_predictions(shard))
    result = {"gathered": gathered, "single": single, "same_predictions": same_predictions}
    torch.save(result, Path(out_dir) / f"eval{rank}.pt")


def in_batch_loss_with_gathered_negatives(rank: int, out_dir: str) -> None:
    """Rank r holds rows of a global toy batch (3 rows on rank 0, 2 on rank 1); saves its loss
    with gathered negatives and the gradient of the summed losses for its own item vectors."""
    from torch import nn

    from recstack.data.batch import Batch
    from recstack.tasks.retrieval import InBatchSoftmaxTask

    generator = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1)
    items = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=1)
    rows = torch.tensor([7, 8, 9, 8, 10])  # item 8 appears on both ranks: an accidental hit
    mine = slice(0, 3) if rank == 0 else slice(3, 5)

    class Towers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Parameter(items[mine].clone())

        def forward(self, batch: Batch):
            return users[mine], self.items

    model = Towers()
    task = InBatchSoftmaxTask(temperature=0.5, gather_negatives=True)
    task.set_item_frequencies(torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 1.0]))
    loss = task.loss(model, Batch(ids={"item_id": rows[mine]}))
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": model.items.grad.clone()}, Path(out_dir) / f"gather{rank}.pt")


def resume_and_save(rank: int, config_path: str, out_dir: str) -> None:
    """``train_run(resume=True)`` from the run folder's last checkpoint; saves ``rank{r}.pt``."""
    from recstack.config import RunConfig
    from recstack.export.run_folder import load_run
    from recstack.workflows.train import train_run

    config = RunConfig.from_yaml(config_path)
    metrics = train_run(config, resume=True, log=lambda _: None)
    dist.barrier()  # rank 0 has written model.pt
    state = {k: v.clone() for k, v in load_run(config.output).model.state_dict().items()}
    torch.save({"state": state, "metrics": metrics}, Path(out_dir) / f"rank{rank}.pt")
