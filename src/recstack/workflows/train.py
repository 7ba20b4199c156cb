"""``recstack train``: config → fitted preprocessor → model → Trainer → run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from recstack.config import RunConfig, TaskType
from recstack.data.batch import Batch
from recstack.data.loader import BatchStream, LoaderConfig, make_loader
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.export.run_folder import RunPaths, save_config, save_manifest, save_model
from recstack.atomic import write_json_atomic
from recstack.models import build_model
from recstack.tasks.base import Task
from recstack.training import MetricHistory, TensorBoardLogger, Trainer, TrainerConfig
from recstack.workflows.datasets import ensure_dataset
from recstack.workflows.tasks import build_task, make_evaluator


def train_run(config: RunConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains the configured model and writes the run folder; returns metrics.json's content."""
    torch.set_num_threads(config.threads)
    ensure_dataset(config.data)
    paths = RunPaths(config.output)
    paths.root.mkdir(parents=True, exist_ok=True)
    save_config(paths, _resolved(config))
    trainer_config = TrainerConfig.from_dict({"seed": config.seed, **config.trainer})
    rank = _rank()

    started = time.perf_counter()
    if resume and paths.preprocessor.exists():
        preprocessor = Preprocessor.load(paths.preprocessor)
    else:
        preprocessor = Preprocessor(config.schema).fit(config.data.train)
        if rank == 0:
            preprocessor.save(paths.preprocessor)
    fit_seconds = time.perf_counter() - started
    feature_map = preprocessor.feature_map()
    model_params = dict(config.model.params)
    if trainer_config.sparse_embeddings:
        model_params.setdefault("sparse_embeddings", True)
    model = build_model(config.model.name, feature_map, model_params)
    task = build_task(config, model, preprocessor)

    stream = BatchStream(source=config.data.train, preprocessor=preprocessor, config=config.loader)

    def train_batches(epoch: int):
        stream.set_epoch(epoch)
        return make_loader(stream)

    evaluate = make_evaluator(config, task, preprocessor, split="valid") if config.data.valid else None
    history = MetricHistory()
    callbacks = [history] + ([TensorBoardLogger(paths.tensorboard)] if rank == 0 else [])
    trainer = Trainer(trainer_config, callbacks=callbacks, checkpoint_dir=paths.checkpoints if rank == 0 else None)
    train_started = time.perf_counter()
    state = trainer.fit(model, task, train_batches, evaluate, resume=resume)
    train_seconds = time.perf_counter() - train_started

    metrics: dict[str, Any] = {}
    if evaluate is not None:
        metrics["valid"] = evaluate(model)
    if config.data.test:
        metrics["test"] = make_evaluator(config, task, preprocessor, split="test")(model)
    metrics.update(
        {
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "preprocess_fit_seconds": round(fit_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "train_samples": state.samples_seen,
            "samples_per_second": round(state.samples_seen / max(train_seconds, 1e-9), 1),
            "threads": config.threads,
        }
    )
    if rank == 0:
        save_model(paths, model, name=config.model.name, params=model_params, task={"type": config.task.type.value, **config.task.params})
        write_json_atomic(paths.metrics, metrics)
        history.plot(paths.learning_curve)
        save_manifest(paths, {"model": config.model.name, "task": config.task.type.value})
    return metrics


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _resolved(config: RunConfig) -> dict[str, Any]:
    """The config as written, with data sources as absolute paths so a run folder is portable."""
    raw = dict(config.raw)
    data = {"dataset": config.data.dataset} if config.data.dataset else {}
    for key in ("train", "valid", "test", "catalog", "seen"):
        source = getattr(config.data, key)
        if source is not None:
            data[key] = {"paths": [str(Path(p).resolve()) for p in source.paths], "format": source.format.value}
            if source.column_names:
                data[key]["column_names"] = list(source.column_names)
                data[key]["header"] = source.header
            if source.delimiter:
                data[key]["delimiter"] = source.delimiter
    raw["data"] = data
    return raw
