"""Sharded tables: TorchRec's planner and ``DistributedModelParallel`` around a recstack model.

:func:`shard_model` takes a model whose tables are TorchRec collections
(:func:`recstack.nn.sharded_inputs.use_torchrec_tables`), gives the trainable tables a fused
optimiser (applied inside the backward, per table shard: fbgemm's exact row-wise Adagrad, Adagrad,
Adam or SGD), asks the planner for a plan within the per-rank memory budget and the per-table
constraints, and wraps the model: tables sharded, the rest data-parallel (DDP). Frozen tables
get SGD with learning rate 0 and a detached output: they never change.

On CPU TorchRec's sharders offer row-wise sharding only on GPUs; the sharders here add it
(the fbgemm CPU kernels run it; outputs equal the unsharded tables, tests/distributed).

Shape legend: R table rows, D table dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from recstack.errors import ConfigError
from recstack.nn.sharded_inputs import TABLES_ATTRIBUTE
from recstack.nn.torchrec_tables import TorchRecTables, load_table_weights
from recstack.training.sharding_config import DistributedConfig, ShardingType, TableOptimizer

__all__ = ["ShardedModel", "format_plan", "full_tables", "plan_report", "shard_model"]

ROW_WISE_TYPES = (ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value)
CPU_OPTIMIZERS = (TableOptimizer.ROWWISE_ADAGRAD, TableOptimizer.ADAGRAD, TableOptimizer.SGD)  # fbgemm's CPU kernels
# what the planner may choose for a table without constraints: data parallel only when asked
# (a whole table on every rank is the dense optimiser's, not the fused one's)
SHARDED_TYPES = [kind.value for kind in ShardingType if kind is not ShardingType.DATA_PARALLEL]


@dataclass
class ShardedModel:
    """The wrapped model, its tables and the plan the planner chose."""

    dmp: nn.Module  # torchrec DistributedModelParallel
    tables: TorchRecTables
    plan: Any  # torchrec ShardingPlan
    report: dict[str, Any]  # plan_report(...)
    data_parallel: set[str]  # tables whole on every rank, trained by the dense optimiser

    @property
    def module(self) -> nn.Module:
        """The model itself, its tables sharded (what tasks and evaluation read)."""
        return self.dmp.module

    @property
    def fused_optimizer(self) -> Any:
        return self.dmp.fused_optimizer

    def dense_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the sharded tables (data-parallel trainable tables included):
        the recstack optimiser's, all-reduced by DDP."""
        dense = []
        for name, param in self.dmp.named_parameters():
            if f"{TABLES_ATTRIBUTE}." in name:
                table = name.rsplit(".", 2)[-2]
                if table not in self.data_parallel or not self.tables.specs[table].trainable:
                    continue
            if param.requires_grad:
                dense.append(param)
        return dense


def shard_model(
    model: nn.Module,
    config: DistributedConfig,
    *,
    lr: float,
    device: torch.device,
    weights: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    static_graph: bool = True,
) -> ShardedModel:
    """Plan, shard and wrap ``model`` (its tables already TorchRec collections).

    Args:
        model: with ``model.torchrec_tables`` (built on ``meta``, or holding the weights).
        config: the ``distributed:`` section (budget, constraints, table optimiser).
        lr: the table optimiser's learning rate when ``config.table_lr`` is unset.
        device: this rank's device (cpu: gloo; cuda: NCCL).
        weights: full tables by TorchRec name, copied into this rank's shards after sharding
            (needed when the bag tables were built on ``meta``); deferred tables (the model's
            own built on meta) are drawn shard by shard instead (``fill_normal``, ``seed``).
        static_graph: the dense part's DDP may assume one backward a step (TorchRec's default);
            False for a loss that takes extra per-target gradients first (GradNorm), which
            otherwise left the ranks' dense weights apart.

    Raises:
        ConfigError: a table named in ``config.tables`` is not the model's, or no plan fits
            the budget (naming each table's size and the budget).
    """
    from torch.distributed.optim import _apply_optimizer_in_backward
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel

    if device.type == "cpu" and config.table_optimizer not in CPU_OPTIMIZERS:
        raise ConfigError(
            f"distributed.table_optimizer: {config.table_optimizer.value} runs on GPUs only; fbgemm's CPU "
            f"kernels have {[kind.value for kind in CPU_OPTIMIZERS]}"
        )
    tables: TorchRecTables = getattr(model, TABLES_ATTRIBUTE)
    unknown = sorted(set(config.tables) - {s.schema_table for s in tables.specs.values()} - set(tables.specs))
    if unknown:
        raise ConfigError(f"distributed.tables: {unknown} not among the model's tables {sorted(tables.specs)}")
    constraints, data_parallel = _constraints(tables, config)
    optimizer, kwargs = _table_optimizer(config.table_optimizer, config.table_lr or lr)
    for name, param in _table_parameters(tables).items():
        if name in data_parallel:
            continue  # the dense optimiser's, all-reduced by DDP
        if tables.specs[name].trainable:
            _apply_optimizer_in_backward(optimizer, [param], kwargs)
        else:  # frozen (pretrained): its own kernel group that never moves
            _apply_optimizer_in_backward(torch.optim.SGD, [param], {"lr": 0.0})
    sharders = _sharders()
    plan = _plan(model, tables, config, constraints, sharders, device)
    wrapper = DefaultDataParallelWrapper(static_graph=static_graph)
    dmp = DistributedModelParallel(model, device=device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper)
    tables.pad_across_ranks = True  # one batch size on every rank for the all-to-alls
    # (a sharded table's gradient is the mean over ranks, as DDP's: TorchRec divides its
    # all-to-all's backward by the world size, comm_ops' gradient division, on by default.)
    # The fused kernels read their learning rate when the optimiser steps or zeroes, which the
    # Trainer does before the scheduler moves it: hand it over before each forward instead
    dmp.register_forward_pre_hook(lambda *_: dmp.fused_optimizer.zero_grad())
    state = {k: v for k, v in dmp.module.state_dict().items() if k.startswith(f"{TABLES_ATTRIBUTE}.bags.")}
    load_table_weights(state, weights or {}, specs=tables.specs, seed=seed)
    report = plan_report(plan, tables, world_size=dist.get_world_size())
    return ShardedModel(dmp=dmp, tables=tables, plan=plan, report=report, data_parallel=data_parallel)


def _table_parameters(tables: TorchRecTables) -> dict[str, nn.Parameter]:
    found = {}
    for name, param in tables.named_parameters():
        found[name.rsplit(".", 2)[-2]] = param
    return found


def _table_optimizer(kind: TableOptimizer, lr: float) -> tuple[type, dict[str, Any]]:
    from torchrec.optim import RowWiseAdagrad

    if kind is TableOptimizer.ROWWISE_ADAGRAD:
        return RowWiseAdagrad, {"lr": lr, "eps": 1e-8}
    if kind is TableOptimizer.ADAGRAD:
        return torch.optim.Adagrad, {"lr": lr, "eps": 1e-8}
    if kind is TableOptimizer.ADAM:
        return torch.optim.Adam, {"lr": lr}
    return torch.optim.SGD, {"lr": lr}


def _sharders() -> list[Any]:
    """TorchRec's bag and position sharders, row-wise allowed on CPU too."""
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    class BagSharder(EmbeddingBagCollectionSharder):
        def sharding_types(self, compute_device_type: str) -> list[str]:
            return list(dict.fromkeys([*super().sharding_types(compute_device_type), *ROW_WISE_TYPES]))

    class PositionSharder(EmbeddingCollectionSharder):
        def sharding_types(self, compute_device_type: str) -> list[str]:
            return list(dict.fromkeys([*super().sharding_types(compute_device_type), *ROW_WISE_TYPES]))

    return [BagSharder(), PositionSharder()]


def _constraints(tables: TorchRecTables, config: DistributedConfig) -> tuple[dict[str, Any], set[str]]:
    """TorchRec ``ParameterConstraints`` per table, and the tables kept whole on every rank
    (data parallel: the dense optimiser and DDP train them, as TorchRec does)."""
    from torchrec.distributed.planner import ParameterConstraints

    constraints, data_parallel = {}, set()
    for name, spec in tables.specs.items():
        given = config.tables.get(name) or (None if spec.dim % 4 else config.tables.get(spec.schema_table))
        if given is None and spec.dim % 4:  # fbgemm's kernels need dims of 4k: a linear part's
            constraints[name] = ParameterConstraints(  # 1-wide weights stay whole on every rank
                sharding_types=[ShardingType.DATA_PARALLEL.value], compute_kernels=["dense"]
            )
            data_parallel.add(name)
        elif given is None:  # TorchRec's planner may keep a small table whole (data parallel):
            constraints[name] = ParameterConstraints(sharding_types=SHARDED_TYPES)  # not unasked here
        else:
            constraints[name] = ParameterConstraints(
                sharding_types=[kind.value for kind in given.sharding] or SHARDED_TYPES,
                compute_kernels=None if given.compute_kernel is None else [given.compute_kernel.value],
                min_partition=given.min_partition,
            )
            if given.sharding == (ShardingType.DATA_PARALLEL,):
                data_parallel.add(name)
    return constraints, data_parallel


def _plan(model: nn.Module, tables: TorchRecTables, config: DistributedConfig, constraints: dict[str, Any], sharders: list[Any], device: torch.device) -> Any:
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import PlannerError

    world_size = dist.get_world_size()
    budget = None if config.memory_budget_mb is None else int(config.memory_budget_mb * 2**20)
    capacity = {"hbm_cap": budget} if device.type == "cuda" else {"ddr_cap": budget}
    topology = Topology(world_size=world_size, compute_device=device.type, **{k: v for k, v in capacity.items() if v is not None})
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    try:  # every rank plans (the planner is deterministic): a refusal is raised on every rank
        plan = planner.plan(model, sharders)
    except PlannerError as error:
        sizes = ", ".join(f"{s.name} {s.num_rows} x {s.dim} ({_mb(s.num_rows * s.dim * 4)})" for s in tables.specs.values())
        limit = "the planner's default" if budget is None else f"{config.memory_budget_mb:g} MB"
        raise ConfigError(
            f"distributed: no sharding plan fits {world_size} ranks with a per-rank budget of {limit} "
            f"(distributed.memory_budget_mb) for tables {sizes} plus their optimiser state; raise the "
            f"budget, add ranks or relax distributed.tables. TorchRec: {str(error).splitlines()[0]}"
        ) from None
    plans: list[str | None] = [None] * world_size
    dist.all_gather_object(plans, str(plan))
    if len(set(plans)) > 1:
        raise RuntimeError(f"the ranks planned different shardings:\n{plans[0]}\nvs\n{next(p for p in plans if p != plans[0])}")
    return plan


def plan_report(plan: Any, tables: TorchRecTables, *, world_size: int) -> dict[str, Any]:
    """Where each table sits: sharding type, kernel, shards (rows, columns, rank, bytes) and the
    table bytes per rank (fp32 weights; optimiser state comes on top)."""
    report: dict[str, Any] = {"world_size": world_size, "tables": {}, "bytes_per_rank": [0] * world_size}
    for module_plan in plan.plan.values():
        for name, sharding in module_plan.items():
            spec = tables.specs.get(name)
            if spec is None:
                continue
            shards = []
            if sharding.sharding_spec is not None and hasattr(sharding.sharding_spec, "shards"):
                for shard in sharding.sharding_spec.shards:
                    rank = shard.placement.rank()
                    rows, cols = shard.shard_sizes
                    shards.append({"rank": rank, "offsets": list(shard.shard_offsets), "sizes": [rows, cols], "bytes": rows * cols * 4})
                    report["bytes_per_rank"][rank] += rows * cols * 4
            else:  # data parallel: a full copy on every rank
                for rank in range(world_size):
                    shards.append({"rank": rank, "offsets": [0, 0], "sizes": [spec.num_rows, spec.dim], "bytes": spec.num_rows * spec.dim * 4})
                    report["bytes_per_rank"][rank] += spec.num_rows * spec.dim * 4
            report["tables"][name] = {
                "schema_table": spec.schema_table,
                "rows": spec.num_rows,
                "dim": spec.dim,
                "sharding_type": sharding.sharding_type,
                "compute_kernel": sharding.compute_kernel,
                "trainable": spec.trainable,
                "pooled": not spec.unpooled,
                "shards": shards,
            }
    return report


def format_plan(report: Mapping[str, Any]) -> str:
    """The plan as lines a person reads: one per table, then bytes per rank."""
    lines = ["sharding plan:"]
    for name, table in report["tables"].items():
        ranks = ", ".join(f"rank {s['rank']}: rows {s['offsets'][0]}+{s['sizes'][0]} cols {s['offsets'][1]}+{s['sizes'][1]}" for s in table["shards"])
        lines.append(f"  {name} ({table['rows']} x {table['dim']}) {table['sharding_type']} [{table['compute_kernel']}]: {ranks}")
    lines.append("  table bytes per rank: " + ", ".join(f"rank {r}: {_mb(b)}" for r, b in enumerate(report["bytes_per_rank"])))
    return "\n".join(lines)


def full_tables(sharded: ShardedModel) -> dict[str, Tensor]:
    """Every table whole, on every rank: ``{TorchRec table name: (R, D)}`` (each rank fills its
    shards into zeros, then one all-reduce sums them: shards do not overlap, so the sum is exact)."""
    found: dict[str, Tensor] = {}
    for key, value in sharded.module.state_dict().items():
        if not key.startswith(f"{TABLES_ATTRIBUTE}.") or not key.endswith(".weight"):
            continue
        name = key.rsplit(".", 2)[-2]
        spec = sharded.tables.specs[name]
        if hasattr(value, "local_shards"):
            full = torch.zeros(spec.num_rows, spec.dim, device=_device_of(value))
            for shard in value.local_shards():
                (row, col), (rows, cols) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                full[row : row + rows, col : col + cols] = shard.tensor.detach()
            dist.all_reduce(full)
        else:  # data parallel: every rank holds it
            full = value.detach().clone()
        found[name] = full.cpu()
    return found


def _device_of(value: Any) -> torch.device:
    shards = value.local_shards()
    return shards[0].tensor.device if shards else torch.device("cpu")


def _mb(size: int) -> str:
    """Bytes as a person reads them: ``1.3 GB``, ``610.4 MB``, ``3.2 KB``."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KB"
