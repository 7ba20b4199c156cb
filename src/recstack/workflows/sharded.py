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

Validation of a binary ranking run is scored by the sharded model itself
(:func:`evaluate_in_shards`). The final metrics and the export read a *replica*: the plain model
rebuilt from ``model.json``'s recipe with the tables gathered
(:func:`~recstack.training.sharded.full_tables`), so ``evaluate``, ``predict``, ``export``,
``index`` and ``serve`` read a sharded run's folder unchanged; the tables must then fit one
host (so must retrieval validation, which scores the catalogue on a replica).

``distributed.gather_tables`` (``auto``: gather when the tables fit ``memory_budget_mb``) may
leave them sharded: a two-tower run then writes its item vectors shard by shard into the item
index (:mod:`recstack.workflows.sharded_index`) and its weights as DCP shards (``model_shards/``,
with ``sharded_model.json``, the recipe); no ``model.pt``, no validation or test metrics
(those score the catalogue on a gathered replica).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recstack.atomic import write_json_atomic
from recstack.config import RunConfig
from recstack.data.batch import Batch
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.evaluation.ranking_metrics import PredictionCollector, ranking_report
from recstack.errors import ConfigError
from recstack.export.run_folder import RunPaths
from recstack.nn.sharded_inputs import TABLES_ATTRIBUTE, table_weights, unpooled_features, use_torchrec_tables
from recstack.nn.torchrec_tables import require_torchrec
from recstack.tasks.base import Task
from recstack.training.config import TrainerConfig
from recstack.training.sharded import ShardedModel, format_plan, full_tables, shard_model
from recstack.workflows.distributed import gather_predictions
from recstack.workflows.tasks import EVAL_BATCH_SIZE

__all__ = ["ShardedRun", "load_gathered_state", "load_replica", "shard_run_model", "write_sharded_outputs"]

PLAN_FILE = "sharding_plan.json"


@dataclass
class ShardedRun:
    """The sharded model and how to get a plain replica of it."""

    sharded: ShardedModel
    build_plain: Callable[[], nn.Module]  # a fresh plain model of the run's recipe
    gather: bool = True  # distributed.gather_tables resolved: False leaves every table sharded

    def replica(self) -> nn.Module:
        """The plain model with this run's current weights (tables gathered), on every rank."""
        with torch.random.fork_rng():  # building draws initial weights: not from the run's RNG
            plain = self.build_plain()
        load_replica(plain, self.sharded)
        return plain.eval()

    def evaluator(
        self,
        config: RunConfig,
        task: Task,
        preprocessor: Preprocessor,
        evaluate: Callable[[nn.Module], dict[str, float]],
        *,
        device: torch.device,
    ) -> Callable[[nn.Module], dict[str, float]]:
        """Validation during training. A binary ranking run is scored by the sharded model
        itself (:func:`evaluate_in_shards`: no table gathered); other tasks (retrieval over the
        catalogue, multi-task), or a rank without validation rows, run ``evaluate`` on a replica."""
        source = config.data.valid

        def in_shards(_wrapped: nn.Module) -> dict[str, float]:
            metrics = evaluate_in_shards(self.sharded.module, task, preprocessor, source, device=device)
            return metrics if metrics is not None else evaluate(self.replica())

        if config.task.name == "binary" and source is not None:
            return in_shards
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
    check_loss_weighting_shardable(model)
    _place_all_but_deferred(model, device)
    unpooled = unpooled_features(model, lambda: task.loss(model, first_batch.to(device)))
    weights = {name: weight.detach() for name, weight in table_weights(model).items()}  # meta when deferred
    use_torchrec_tables(model, unpooled=unpooled, device="meta", seed=trainer_config.seed)
    per_target_gradients = getattr(model, "task_gradnorm", None) is not None  # GradNorm's extra partial backwards
    sharded = shard_model(model, config.distributed, lr=trainer_config.lr, device=device, weights=weights, seed=trainer_config.seed,
                          static_graph=not per_target_gradients)  # fmt: skip
    del weights  # the plain tables: each rank keeps only its shards from here on
    table_bytes = sum(spec.num_rows * spec.dim * 4 for spec in sharded.tables.specs.values())
    gather = config.distributed.gathers(table_bytes)
    if not gather:
        _check_not_gathered(config, model, table_bytes)
    if torch.distributed.get_rank() == 0:
        log(format_plan(sharded.report))
        if not gather:
            log(f"tables not gathered ({_gb(table_bytes)}; distributed.gather_tables: {config.distributed.gather_tables.value}): "
                f"item vectors go shard by shard into the {config.distributed.item_index.value} index")
        if paths is not None:
            write_json_atomic(paths.root / PLAN_FILE, sharded.report)
    return ShardedRun(sharded=sharded, build_plain=build_plain, gather=gather)


def check_loss_weighting_shardable(model: nn.Module) -> None:
    """ConfigError for a loss weighting that needs per-target gradients on tables TorchRec trains
    inside its fused kernels: MetaBalance (every shared tensor, the tables among them), or GradNorm
    on a model whose only shared layer is its embedding tables (ESMM, AITM)."""
    from recstack.models.multi_task_base import MultiTaskRanker

    if getattr(model, "task_metabalance", None) is not None:
        raise ConfigError(
            "task.loss_weighting: metabalance rescales each target's gradient on every shared tensor, the embedding tables "
            "among them, which distributed.embeddings: sharded trains inside TorchRec's fused kernels: use loss_weighting: "
            "gradnorm, uncertainty or fixed with sharded tables, or metabalance with distributed.embeddings: replicated"
        )
    if (
        getattr(model, "task_gradnorm", None) is not None
        and getattr(model, "feature_part", None) is None
        and type(model).shared_layer is MultiTaskRanker.shared_layer
    ):
        raise ConfigError(
            f"task.loss_weighting: gradnorm balances gradient norms on the last shared layer; {type(model).__name__} shares only "
            "its embedding tables, which distributed.embeddings: sharded trains inside TorchRec's fused kernels: use "
            "loss_weighting: uncertainty or fixed, or a model with a shared network (shared_bottom, mmoe, ple)"
        )


def _check_not_gathered(config: RunConfig, model: nn.Module, table_bytes: int) -> None:
    """A run that leaves its tables sharded is a two-tower run with a catalogue and without
    validation or test splits (their metrics score the catalogue on a gathered replica)."""
    budget = "" if config.distributed.memory_budget_mb is None else f", budget {config.distributed.memory_budget_mb:g} MB per rank"
    setting = f"distributed.gather_tables: {config.distributed.gather_tables.value} (tables {_gb(table_bytes)}{budget})"
    if not callable(getattr(model, "encode_item", None)) or config.data.catalog is None:
        raise ConfigError(
            f"{setting}: only a two-tower retrieval run with data.catalog can leave its tables sharded (its item "
            f"vectors go shard by shard into the index); this run needs them gathered: set distributed.gather_tables: "
            f"always with a budget that holds them"
        )
    given = [key for key in ("valid", "test") if getattr(config.data, key) is not None]
    if given:
        raise ConfigError(
            f"{setting}: data.{'/'.join(given)} cannot be scored without gathering the tables (retrieval metrics "
            f"score the catalogue on a gathered replica); drop data.{' and data.'.join(given)}, or set "
            f"distributed.gather_tables: always"
        )


def write_sharded_outputs(
    run: ShardedRun, config: RunConfig, preprocessor: Preprocessor, paths: RunPaths, *, spec: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """The outputs of a run whose tables stay sharded (every rank calls it): the weights as DCP
    shards in ``model_shards/`` (``sharded_model.json``: the recipe), the item vectors as
    Parquet parts in ``item_vectors/``, and rank 0's ``item_index/`` built from the parts in
    bounded batches. Returns the summary for metrics.json (``item_index``)."""
    import torch.distributed.checkpoint as dcp

    from recstack.retrieval.index import create_index
    from recstack.training.sharding_config import ItemIndexBackend
    from recstack.workflows.sharded_index import VECTORS_FOLDER, index_vector_shards, write_item_vector_shards

    assert config.data.catalog is not None  # _check_not_gathered
    dcp.save({"model": run.sharded.module.state_dict()}, checkpoint_id=str(paths.root / SHARDED_WEIGHTS))
    shard = write_item_vector_shards(run.sharded, preprocessor, config.data.catalog, paths.root / VECTORS_FOLDER, device=device)
    shards: list[dict[str, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, shard.to_dict())
    summary: dict[str, Any] = {"backend": config.distributed.item_index.value, "shards": shards, "items": sum(s["items"] for s in shards if s)}
    if dist.get_rank() == 0:
        write_json_atomic(paths.root / SHARDED_SPEC, {**spec, "weights": SHARDED_WEIGHTS, "format": "torch.distributed.checkpoint"})
        backend = config.distributed.item_index
        options: dict[str, Any] = {}
        kind = config.distributed.item_index_kind
        if backend is ItemIndexBackend.MILVUS:
            options = {"uri": config.distributed.item_index_uri, "collection": "items", **({"index_type": kind} if kind else {})}
        elif backend is ItemIndexBackend.FAISS and kind:
            options = {"kind": kind}
        dim = _vector_dim(paths.root / VECTORS_FOLDER)
        with create_index(backend.value, dim=dim, **options) as index:
            summary["indexed"] = index_vector_shards(paths.root / VECTORS_FOLDER, index)
            index.save(paths.root / ITEM_INDEX)
    dist.barrier()  # the index is written before any rank moves on
    return summary


SHARDED_WEIGHTS = "model_shards"
SHARDED_SPEC = "sharded_model.json"
ITEM_INDEX = "item_index"


def _vector_dim(folder: Any) -> int:
    import pyarrow.parquet as pq

    for part in sorted(folder.glob("part-r*.parquet")):
        return int(pq.read_schema(part).field("vector").type.list_size)
    raise ConfigError(f"no item vectors were written to {folder} (is the catalogue empty?)")


def _gb(size: int) -> str:
    return f"{size / 2**30:.2f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"


def evaluate_in_shards(
    module: nn.Module, task: Task, preprocessor: Preprocessor, source: DataSource, *, device: torch.device
) -> dict[str, float] | None:
    """Exact ranking metrics of the sharded model over every row of ``source``, each rank
    scoring its shard of the rows (the lookups are all-to-alls), the predictions gathered.

    Every rank runs the same number of forwards (the lookups are collectives): before each one
    the ranks agree whether any still has a batch; a rank that has run out scores its last batch
    again and drops those predictions. None when some rank has no row at all (the caller then
    evaluates a replica)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    stream = BatchStream(source=source, preprocessor=preprocessor, config=LoaderConfig(batch_size=EVAL_BATCH_SIZE), rank=rank, world_size=world)
    batches = iter(stream)
    batch = next(batches, None)
    if not _over_ranks(batch is not None, dist.ReduceOp.MIN, device):
        return None
    collector, last = PredictionCollector(), batch
    while _over_ranks(batch is not None, dist.ReduceOp.MAX, device):
        scored = (batch if batch is not None else last).to(device)
        probs = task.predict(module, scored).float().cpu().numpy()  # (B,)
        if batch is not None:
            labels = batch.label.numpy() if batch.label is not None else np.full(len(probs), np.nan, np.float32)
            collector.append(labels, probs, batch.group)
            last = batch
        batch = next(batches, None)
    return ranking_report(*gather_predictions(collector.predictions()))


def _over_ranks(flag: bool, op: Any, device: torch.device) -> bool:
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=op)
    return bool(value.item())


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
    _load_dense(plain, dense)
    gathered = full_tables(sharded)
    with torch.no_grad():
        for name, weight in table_weights(plain).items():
            weight.copy_(gathered[name])


def load_gathered_state(plain: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a sharded model's *whole* state dict into ``plain`` (the same model class, plain
    tables): what ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` makes of a
    run's ``model_shards/`` (``state["model"]``) on a host that holds every table."""
    dense = {k: v for k, v in state.items() if not k.startswith(f"{TABLES_ATTRIBUTE}.")}
    _load_dense(plain, dense)
    found = {k.rsplit(".", 2)[-2]: v for k, v in state.items() if k.startswith(f"{TABLES_ATTRIBUTE}.") and k.endswith(".weight")}
    with torch.no_grad():
        for name, weight in table_weights(plain).items():
            if name not in found:
                raise RuntimeError(f"the sharded state has no table {name!r} (tables: {sorted(found)})")
            weight.copy_(found[name])


def _load_dense(plain: nn.Module, dense: dict[str, Any]) -> None:
    missing, unexpected = plain.load_state_dict(dense, strict=False)
    tables = table_weights(plain)
    table_keys = {k for k, v in plain.state_dict(keep_vars=True).items() if any(v is w for w in tables.values())}
    if unexpected or set(missing) - table_keys:
        raise RuntimeError(f"replica does not match the sharded model: missing {sorted(set(missing) - table_keys)}, unexpected {unexpected}")


def first_batch(batches: Iterable[Batch]) -> Batch:
    """The first batch of a training epoch (the probe of :func:`shard_run_model`)."""
    for batch in batches:
        return batch
    raise ConfigError("data.train: no training rows on this rank to build the sharded tables from")
