"""``distributed.embeddings: sharded``: a run's model on TorchRec-sharded tables, end to end.

:func:`shard_run_model` turns the built model (unchanged model code) into a sharded one:

0. the model was built with its fresh tables deferred (``nn.embedding.deferred_tables``: on
   ``meta``, no memory; pretrained ones read from their files);
1. one forward on the first training batch finds the features it reads position by position
   (:func:`~recstack.nn.sharded_inputs.unpooled_features`);
2. its tables become TorchRec collections (pooled ones built on ``meta``; ones read position
   by position whole, drawn here: TorchRec's sharded EmbeddingCollection copies them);
3. the planner places them within the per-rank budget; the plan is printed and saved as
   ``sharding_plan.json`` in the run folder; ``DistributedModelParallel`` wraps the model and
   each rank draws its shards' rows (N(0, init_std), chunk-seeded: the same values however the
   table is sharded) or copies them from a pretrained table.

Evaluation and export read a *replica*: the plain model rebuilt from ``model.json``'s recipe with
the tables gathered (:func:`~recstack.training.sharded.full_tables`), so ``evaluate``,
``predict``, ``export``, ``index`` and ``serve`` read a sharded run's folder unchanged. The
tables must then fit one host; training itself holds only each rank's shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from recstack.atomic import write_json_atomic
from recstack.config import RunConfig
from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.export.run_folder import RunPaths
from recstack.nn.sharded_inputs import TABLES_ATTRIBUTE, table_weights, unpooled_features, use_torchrec_tables
from recstack.nn.torchrec_tables import require_torchrec
from recstack.tasks.base import Task
from recstack.training.config import TrainerConfig
from recstack.training.sharded import ShardedModel, format_plan, full_tables, shard_model

__all__ = ["ShardedRun", "shard_run_model"]

PLAN_FILE = "sharding_plan.json"


@dataclass
class ShardedRun:
    """The sharded model and how to get a plain replica of it."""

    sharded: ShardedModel
    build_plain: Callable[[], nn.Module]  # a fresh plain model of the run's recipe

    def replica(self) -> nn.Module:
        """The plain model with this run's current weights (tables gathered), on every rank."""
        with torch.random.fork_rng():  # building draws initial weights: not from the run's RNG
            plain = self.build_plain()
        load_replica(plain, self.sharded)
        return plain.eval()

    def evaluator(self, evaluate: Callable[[nn.Module], dict[str, float]]) -> Callable[[nn.Module], dict[str, float]]:
        """``evaluate`` run on a replica (each rank scoring its shard of the rows, as for DDP)."""
        return lambda _wrapped: evaluate(self.replica())


def shard_run_model(
    config: RunConfig,
    trainer_config: TrainerConfig,
    model: nn.Module,
    task: Task,
    first_batch: Batch,
    *,
    device: torch.device,
    build_plain: Callable[[], nn.Module],
    paths: RunPaths | None,
    log: Callable[[str], None],
) -> ShardedRun:
    """Shard ``model``'s tables in place (see the module docstring); rank 0 writes the plan."""
    require_torchrec()
    if not torch.distributed.is_initialized():
        raise ConfigError(
            "distributed.embeddings: sharded needs several processes: recstack train CONFIG --nproc N "
            "(or torchrun on each machine, docs/distributed.md)"
        )
    if trainer_config.compile:
        raise ConfigError("trainer.compile: not available with distributed.embeddings: sharded (TorchRec's sharded modules run eagerly)")
    _place_all_but_deferred(model, device)
    unpooled = unpooled_features(model, lambda: task.loss(model, first_batch.to(device)))
    weights = {name: weight.detach() for name, weight in table_weights(model).items()}  # meta when deferred
    use_torchrec_tables(model, unpooled=unpooled, device="meta", seed=trainer_config.seed)
    sharded = shard_model(model, config.distributed, lr=trainer_config.lr, device=device, weights=weights, seed=trainer_config.seed)
    del weights  # the plain tables: each rank keeps only its shards from here on
    if torch.distributed.get_rank() == 0:
        log(format_plan(sharded.report))
        if paths is not None:
            write_json_atomic(paths.root / PLAN_FILE, sharded.report)
    return ShardedRun(sharded=sharded, build_plain=build_plain)


def _place_all_but_deferred(model: nn.Module, device: torch.device) -> None:
    """``model.to(device)`` for everything but the deferred tables (on meta until sharded)."""
    with torch.no_grad():
        for module in model.modules():
            for param in module._parameters.values():
                if param is not None and not param.is_meta:
                    param.data = param.data.to(device)  # the same Parameter: shared ones stay shared
            for key, buffer in module._buffers.items():
                if buffer is not None and not buffer.is_meta:
                    module._buffers[key] = buffer.to(device)


def load_replica(plain: nn.Module, sharded: ShardedModel) -> None:
    """Copy the sharded model's weights into ``plain`` (the same model class, plain tables)."""
    dense = {k: v for k, v in sharded.module.state_dict().items() if not k.startswith(f"{TABLES_ATTRIBUTE}.")}
    missing, unexpected = plain.load_state_dict(dense, strict=False)
    tables = table_weights(plain)
    table_keys = {k for k, v in plain.state_dict(keep_vars=True).items() if any(v is w for w in tables.values())}
    if unexpected or set(missing) - table_keys:
        raise RuntimeError(f"replica does not match the sharded model: missing {sorted(set(missing) - table_keys)}, unexpected {unexpected}")
    gathered = full_tables(sharded)
    with torch.no_grad():
        for name, weight in tables.items():
            weight.copy_(gathered[name])


def first_batch(batches: Iterable[Batch]) -> Batch:
    """The first batch of a training epoch (the probe of :func:`shard_run_model`)."""
    for batch in batches:
        return batch
    raise ConfigError("data.train: no training rows on this rank to build the sharded tables from")
