"""``recstack train``: config → fitted preprocessor → model → Trainer → run folder."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from recstack.config import RunConfig, TaskType
from recstack.data.batch import Batch
from recstack.data.loader import BatchStream, LoaderConfig, make_loader
from recstack.data.bad_rows import skipped_rows
from recstack.data.incremental import check_growable, check_numeric_stats
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.export.run_folder import RunPaths, load_preprocessor, save_config, save_manifest, save_model
from recstack.export.staged_run import StagedRun
from recstack.atomic import write_json_atomic
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.nn.embedding import deferred_tables
from recstack.models.registry import check_model_config
from recstack.parallel import rank as process_rank
from recstack.tasks.base import Task
from recstack.tasks.multi_task import MultiTaskTask
from recstack.training import MetricHistory, TensorBoardLogger, Trainer, TrainerCallback, TrainerConfig
from recstack.training.replicated_budget import check_replicated_budget
from recstack.training.sharded_trainer import ShardedTrainer
from recstack.training.rng import seed_everything
from recstack.training.warm_start import IncrementalConfig, OptimizerState
from recstack.workflows.datasets import ensure_dataset
from recstack.workflows.distributed import DistributedTraining, init_from_env, sum_over_ranks
from recstack.workflows.sharded import first_batch, shard_run_model, write_sharded_outputs
from recstack.workflows.incremental import ParentRun, carried_optimizers, incremental_config, load_parent, warm_start
from recstack.workflows.tasks import build_task, check_multi_task_config, features_read, make_evaluator, multi_task_model_params, saved_task_spec


def train_run(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    callbacks: Sequence[TrainerCallback] = (),
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Trains the configured model and writes the run folder; returns metrics.json's content.

    ``init_from`` (or the config's ``incremental.init_from``) names a parent run to continue on
    this config's data (incremental training, docs/incremental.md): its preprocessor refitted
    with vocabulary growth, its weights loaded with the embedding tables grown.

    The run is written into ``runs/.NAME.partial/`` and moved to ``config.output`` only when it is
    complete (:class:`~recstack.export.staged_run.StagedRun`): a failed run leaves an existing
    run folder untouched. An existing complete run is replaced only with ``overwrite``.
    ``callbacks`` are added to the Trainer's (``recstack tune`` reports each epoch's metric).

    Raises:
        RunFolderError: the run folder exists (without ``overwrite``), an interrupted run is in
            the way, there is nothing to resume, or another process trains the same folder.
        ConfigError: unknown model or model parameter, or a parent run this config cannot grow
            (another model; a feature added, removed or of another kind or width: named), before
            any data is read.
    """
    torch.set_num_threads(config.threads)
    trainer_config = TrainerConfig.from_dict({"seed": config.seed, **config.trainer})
    model_params = dict(config.model.params)
    if trainer_config.sparse_embeddings:
        model_params.setdefault("sparse_embeddings", True)
    model_params = multi_task_model_params(config, model_params)  # the schema's targets, for a multi-task model
    check_model_config(config.model.name, model_params)
    check_multi_task_config(config, model_params, trainer_config)
    incremental = incremental_config(config, init_from)
    parent = None if incremental.init_from is None else _parent_run(config, incremental)
    staged = StagedRun(config.output)
    mode = staged.plan(resume=resume, overwrite=overwrite)  # every rank checks before anyone writes
    context = init_from_env(trainer_config.device)  # None unless launched by torchrun (WORLD_SIZE > 1)
    if context is not None:
        trainer_config = dataclasses.replace(trainer_config, device=str(context.device))
    rank = process_rank()
    if context is not None:
        torch.distributed.barrier()  # every rank has planned before rank 0 creates the partial folder
    with staged.lock() if rank == 0 else contextlib.nullcontext():
        if rank == 0:  # one rank builds a bundled dataset; the others wait at the barrier below
            ensure_dataset(config.data)
            _check_columns(config)
            paths = staged.prepare(mode)
            save_config(paths, _resolved(config) | ({"incremental": incremental.to_dict()} if parent is not None else {}))
        if context is not None:
            torch.distributed.barrier()  # the partial folder exists before any rank reads it
        try:
            metrics = _train(
                config, trainer_config, model_params, staged.paths, context, rank,
                resume=resume, log=log, callbacks=callbacks, parent=parent, incremental=incremental,
            )  # fmt: skip
        except BaseException:
            if rank == 0:
                staged.discard_unless_resumable()
            raise
        if rank == 0:
            staged.publish()
        if context is not None:
            torch.distributed.barrier()  # no rank leaves before rank 0 has published the run folder
            context.close()
    return metrics


def _train(
    config: RunConfig,
    trainer_config: TrainerConfig,
    model_params: dict[str, Any],
    paths: RunPaths,
    context: Any,
    rank: int,
    *,
    resume: bool,
    log: Callable[[str], None],
    callbacks: Sequence[TrainerCallback] = (),
    parent: ParentRun | None = None,
    incremental: IncrementalConfig = IncrementalConfig(),
) -> dict[str, Any]:
    """Fit, train, evaluate and write everything into ``paths`` (the partial run folder)."""

    started = time.perf_counter()
    skipped_train = None  # bad rows dropped from the training data (skip_bad_rows), counted by the fit
    if resume and paths.preprocessor.exists():
        preprocessor = load_preprocessor(paths.preprocessor)
    elif rank == 0:
        preprocessor = Preprocessor(config.schema)
        before = skipped_rows(preprocessor, config.data.train)
        preprocessor.fit(config.data.train, parent=None if parent is None else parent.preprocessor, numeric=incremental.numeric)
        preprocessor.save(paths.preprocessor)
        skipped_train = skipped_rows(preprocessor, config.data.train) - before
        if skipped_train or config.data.train.skip_bad_rows:  # skip_bad_rows, or on_invalid: skip_row
            log(f"dropped {skipped_train} bad row(s) of the training data (skip_bad_rows / on_invalid: skip_row)")
        else:
            skipped_train = None
    if context is not None:  # rank 0 fitted and saved it; the others load that same file
        torch.distributed.barrier()
        if rank != 0:
            preprocessor = load_preprocessor(paths.preprocessor)
    fit_seconds = time.perf_counter() - started
    feature_map = preprocessor.feature_map()
    seed_everything(trainer_config.seed)  # the initial weights too, not only fit's shuffling: reproducible runs
    # a grown pretrained table's rows come from the parent's weights and the file (warm_start)
    if not config.distributed.sharded and config.distributed.memory_budget_mb is not None:
        with deferred_tables(), torch.random.fork_rng():  # replicated: every rank holds every table: checked on meta first
            check_replicated_budget(build_model(config.model.name, feature_map, model_params), config.distributed, trainer_config)
    with deferred_tables(config.distributed.sharded):  # sharded: each rank draws only its shards' rows
        model = build_model(config.model.name, feature_map if parent is None else feature_map.without_pretrained_files(), model_params)
    growth = None if parent is None else warm_start(model, parent, preprocessor, incremental)
    task = build_task(config, model, preprocessor)
    reads = features_read(config, model, model_params)  # the streams transform only what the model reads
    stream = BatchStream(source=config.data.train, preprocessor=preprocessor, config=config.loader, features=reads)
    sharded = None  # distributed.embeddings: sharded: TorchRec tables over the ranks (workflows/sharded.py)
    if config.distributed.sharded:
        sharded = shard_run_model(
            config, trainer_config, model, task, first_batch(make_loader(stream)), device=torch.device(trainer_config.device),
            build_plain=lambda: build_model(config.model.name, feature_map, model_params), paths=paths if rank == 0 else None, log=log,
        )  # fmt: skip
    wrapped = None if sharded is None else sharded.sharded.dmp
    training = None if context is None else DistributedTraining(model=model, task=task, context=context, wrapped=wrapped)

    def train_batches(epoch: int):
        stream.set_epoch(epoch)
        loader = make_loader(stream)
        return loader if training is None else training.lockstep(loader)

    evaluate = make_evaluator(config, task, preprocessor, split="valid", features=reads) if config.data.valid else None
    history = MetricHistory()
    callbacks = [history] + ([TensorBoardLogger(paths.tensorboard)] if rank == 0 else []) + list(callbacks)
    # every rank reads the checkpoint on resume; only rank 0 writes it (see Trainer._save)
    if sharded is None:
        trainer = Trainer(trainer_config, callbacks=callbacks, checkpoint_dir=paths.checkpoints)
    else:
        trainer = ShardedTrainer(trainer_config, sharded=sharded.sharded, callbacks=callbacks, checkpoint_dir=paths.checkpoints)
    # the training rows read and transformed once before the clock, where the stream caches them
    # (the epochs then shuffle and slice): the peers' timed loops also start from encoded tensors
    prepare_started = time.perf_counter()
    stream.prepare()
    data_preparation_seconds = time.perf_counter() - prepare_started
    train_started = time.perf_counter()
    optimizers = None  # the Trainer builds fresh ones
    if parent is not None and growth is not None and incremental.optimizer_state is OptimizerState.CARRY and not resume:
        optimizers = trainer.build_optimizers(trainer.place_model(model))
        growth["optimizer_params_carried"] = carried_optimizers(optimizers, parent, incremental)
    fit_evaluate = evaluate
    if sharded is not None and evaluate is not None:  # binary: in shards; else on a gathered replica
        fit_evaluate = sharded.evaluator(config, task, preprocessor, evaluate, device=torch.device(trainer_config.device))
    fit_model = model if wrapped is None else wrapped
    state = trainer.fit(fit_model, task if training is None else training.task, train_batches, fit_evaluate, resume=resume, optimizers=optimizers)
    not_gathered = None  # distributed.gather_tables left the tables sharded: item vectors shard by shard
    if sharded is not None and sharded.gather:  # the plain model, tables gathered: evaluated and saved as any run's
        model = sharded.replica()
    train_seconds = time.perf_counter() - train_started
    if sharded is not None and not sharded.gather:
        spec = {"name": config.model.name, "params": model_params, "task": saved_task_spec(task, config).to_dict()}
        not_gathered = write_sharded_outputs(sharded, config, preprocessor, paths, spec=spec, device=torch.device(trainer_config.device))
    train_samples = state.samples_seen
    if training is not None:  # all ranks' rows, without the padding steps
        train_samples = int(sum_over_ranks(state.samples_seen - training.padding_rows))

    metrics: dict[str, Any] = {}
    if evaluate is not None:
        metrics["valid"] = evaluate(model)
    if config.data.test:
        metrics["test"] = make_evaluator(config, task, preprocessor, split="test", features=reads)(model)
    preprocessor.warn_truncated()  # lists truncated in validation / test rows (the fit warned about training rows)
    metrics.update(
        {
            "best_epoch": None if state.best_epoch is None else state.best_epoch + 1,  # 1-based, as epochs_run counts
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "preprocess_fit_seconds": round(fit_seconds, 3),
            "data_preparation_seconds": round(data_preparation_seconds, 3),  # the cached training rows' one transform
            "train_seconds": round(train_seconds, 3),
            "train_samples": train_samples,
            "samples_per_second": round(train_samples / max(train_seconds, 1e-9), 1),
            # the training steps alone: the loop without its validation passes, model and optimizer set-up
            "evaluation_seconds": round(state.evaluation_seconds, 3),
            "step_samples_per_second": round(train_samples / max(state.train_seconds - state.evaluation_seconds, 1e-9), 1),
            "threads": config.threads,
            "world_size": 1 if context is None else context.world_size,
        }
    )
    learned = task.loss_weights(model) if isinstance(task, MultiTaskTask) else None  # loss_weighting: uncertainty
    if learned is not None:
        metrics["loss_weights"] = learned
    if skipped_train is not None:
        metrics["skipped_bad_rows"] = skipped_train
    if growth is not None:
        metrics["incremental"] = growth
    if not_gathered is not None:
        metrics["item_index"] = not_gathered
    if rank == 0 and not_gathered is None:
        save_model(
            paths, model, name=config.model.name, params=model_params, task=saved_task_spec(task, config).to_dict(),
            parent_run=None if parent is None else str(parent.root),
        )  # fmt: skip
    if rank == 0:
        write_json_atomic(paths.metrics, metrics)
        history.plot(paths.learning_curve)
        save_manifest(paths, {"model": config.model.name, "task": config.task.type.value})
    return metrics


def _parent_run(config: RunConfig, incremental: IncrementalConfig) -> ParentRun:
    """The parent run, read and checked against ``config`` before any data is read."""
    assert incremental.init_from is not None
    if incremental.init_from == Path(config.output).resolve():
        raise ConfigError(f"incremental.init_from: {incremental.init_from} is this run's own output folder; give the new run another name")
    parent = load_parent(incremental.init_from, config)
    check_growable(parent.preprocessor.schema, config.schema)
    check_numeric_stats(parent.preprocessor, incremental.numeric)
    return parent


def _check_columns(config: RunConfig) -> None:
    """A ranking run's train/valid/test files hold the schema's columns: checked before the fit,
    so a missing column in the test file does not surface after training."""
    if config.task.type is not TaskType.BINARY:
        return  # retrieval runs may join item columns from the catalogue
    columns = config.schema.columns()
    for key in ("train", "valid", "test"):
        source = getattr(config.data, key)
        if source is not None:
            source.require_columns(columns)




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
