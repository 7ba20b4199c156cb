"""The per-rank memory check of a replicated (DDP) run: every rank holds every table.

``distributed.memory_budget_mb`` bounds what one rank may hold. A sharded run hands it to
TorchRec's planner; a replicated run is checked here, on the model built on ``meta`` (no
memory), before any table is allocated: weights, their dense gradients (not with
``trainer.sparse_embeddings``) and the optimiser's state per table entry (Adam/AdamW and
SparseAdam 2, Adagrad 1, SGD 0), fp32::

    per rank = sum over tables of rows x dim x 4 B x (1 + gradient + optimiser state)
"""

from __future__ import annotations

from torch import nn

from recstack.errors import ConfigError
from recstack.nn.embedding import EmbeddingCollection
from recstack.training.config import OptimizerName, TrainerConfig
from recstack.training.sharding_config import DistributedConfig

__all__ = ["OPTIMIZER_STATE", "check_replicated_budget", "replicated_table_bytes"]

SHOWN = 4  # tables named in the error, largest first
OPTIMIZER_STATE = {OptimizerName.ADAM: 2, OptimizerName.ADAMW: 2, OptimizerName.ADAGRAD: 1, OptimizerName.SGD: 0}


def replicated_table_bytes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """``{module path.table: (rows, dim, fp32 weight bytes)}`` of every embedding table of ``model``
    (parameters may be on ``meta``); a table shared by several features counted once."""
    found: dict[str, tuple[int, int, int]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if not isinstance(module, EmbeddingCollection):
            continue
        for key, table in module.tables.items():
            weight = table.weight
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            rows, dim = weight.shape
            name = f"{module_name}.{key}" if module_name else key
            found[name] = (int(rows), int(dim), int(rows) * int(dim) * 4)
    return found


def check_replicated_budget(model: nn.Module, distributed: DistributedConfig, trainer: TrainerConfig) -> int:
    """Bytes a replicated rank needs for ``model``'s tables; a ConfigError when they exceed
    ``distributed.memory_budget_mb`` (naming the tables, their sizes, the budget and the fix).

    Call it on the model built under ``deferred_tables()`` (tables on ``meta``)."""
    tables = replicated_table_bytes(model)
    factor = 1 + (0 if trainer.sparse_embeddings else 1) + OPTIMIZER_STATE[trainer.optimizer]
    weights = sum(size for _, _, size in tables.values())
    needed = weights * factor
    if distributed.memory_budget_mb is None or needed <= distributed.memory_budget_mb * 2**20:
        return needed
    largest = sorted(tables.items(), key=lambda item: -item[1][2])
    listed = ", ".join(f"{name} {rows:,} x {dim} ({_mb(size)})" for name, (rows, dim, size) in largest[:SHOWN])
    rest = largest[SHOWN:]
    more = f" and {len(rest)} smaller ({_mb(sum(size for _, (_, _, size) in rest))})" if rest else ""
    gradient = "" if trainer.sparse_embeddings else " + dense gradients"
    raise ConfigError(
        f"distributed.memory_budget_mb: {distributed.memory_budget_mb:g} MB per rank cannot hold the replicated "
        f"embedding tables: every rank holds all of them ({listed}{more}: {_mb(weights)} of weights{gradient} + "
        f"{trainer.optimizer.value} state = {_mb(needed)} per rank). Shard them over the ranks with "
        f"distributed.embeddings: sharded (each rank then holds about 1/world size of the rows), or raise the budget"
    )


def _mb(size: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size / 2**10:.1f} KB"
