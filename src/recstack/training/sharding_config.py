"""The ``distributed:`` section of a run config: replicated tables (DDP) or sharded (TorchRec).

Plain frozen dataclasses, parsed once at the edge; nothing here imports TorchRec, so a config
can be read (and its errors reported) on a machine without it::

    distributed:
      embeddings: sharded            # replicated (default): every rank holds every table (DDP)
      memory_budget_mb: 2048         # per rank, for the planner; null: the host's memory
      table_optimizer: rowwise_adagrad   # fused into the backward: rowwise_adagrad | adagrad | adam | sgd
      table_lr: null                 # null: trainer.lr (the trainer's lr schedule scales both)
      gather_tables: auto            # export: auto (gather when the tables fit the budget) | always | never
      item_index: faiss              # two-tower runs not gathered: the index the item vectors go to
      item_index_uri: null           # item_index: milvus: a server address or a Milvus Lite path
      item_index_kind: null          # faiss: flat (default) | hnsw | ivf; milvus: HNSW (default) | FLAT | IVF_FLAT
      tables:                        # optional, per schema table
        item: {sharding: [row_wise], compute_kernel: fused, min_partition: 16}

Example:
    >>> config = DistributedConfig.from_dict({"embeddings": "sharded", "tables": {"item": {"sharding": "row_wise"}}})
    >>> config.sharded, config.tables["item"].sharding
    (True, (<ShardingType.ROW_WISE: 'row_wise'>,))
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from recstack.errors import ConfigError
from recstack.typed_fields import FieldError, coerce, coerce_fields

__all__ = ["DistributedConfig", "EmbeddingPlacement", "GatherTables", "ShardingType", "TableConstraints", "TableOptimizer"]


class EmbeddingPlacement(str, Enum):
    """Where a multi-process run keeps its embedding tables."""

    REPLICATED = "replicated"  # a full copy on every rank, gradients all-reduced (DDP)
    SHARDED = "sharded"  # split over the ranks by TorchRec's planner, looked up with all-to-alls


class GatherTables(str, Enum):
    """Whether a sharded run gathers its tables after training (the plain run folder) or not."""

    AUTO = "auto"  # gather when every table together fits memory_budget_mb (or no budget is set)
    ALWAYS = "always"  # a replica with the gathered tables: evaluate, model.pt, export as usual
    NEVER = "never"  # two-tower runs: item vectors shard by shard into the index, weights as DCP shards


class ItemIndexBackend(str, Enum):
    """Where a run that does not gather its tables puts the item vectors."""

    FAISS = "faiss"
    EXACT = "exact"
    MILVUS = "milvus"


class ShardingType(str, Enum):
    """TorchRec's sharding types (``torchrec.distributed.types.ShardingType`` values)."""

    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"
    TABLE_COLUMN_WISE = "table_column_wise"
    DATA_PARALLEL = "data_parallel"


class ComputeKernel(str, Enum):
    """TorchRec's embedding compute kernels that run on CPU and GPU."""

    FUSED = "fused"  # fbgemm's batched tables with the optimiser in the backward
    DENSE = "dense"  # plain weights (data_parallel only)


class TableOptimizer(str, Enum):
    """The optimiser fused into the sharded tables' backward (fbgemm's exact optimisers)."""

    ROWWISE_ADAGRAD = "rowwise_adagrad"  # one accumulator per row: the recommender default
    ADAGRAD = "adagrad"
    ADAM = "adam"
    SGD = "sgd"


@dataclass(frozen=True)
class TableConstraints:
    """What the planner may do with one schema table (``distributed.tables.<table>``)."""

    sharding: tuple[ShardingType, ...] = ()  # allowed sharding types; empty: any
    compute_kernel: ComputeKernel | None = None
    min_partition: int | None = None  # smallest column-wise shard width

    def __post_init__(self) -> None:
        coerce_fields(self)
        if self.min_partition is not None and self.min_partition < 1:
            raise FieldError("min_partition", f"must be >= 1, got {self.min_partition}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TableConstraints":
        values = dict(values)
        if isinstance(values.get("sharding"), str):
            values["sharding"] = [values["sharding"]]
        _check_keys(values, cls)
        return cls(**values)


@dataclass(frozen=True)
class DistributedConfig:
    """Replicated (DDP) or sharded (TorchRec) embedding tables, and the sharded settings."""

    embeddings: EmbeddingPlacement = EmbeddingPlacement.REPLICATED
    memory_budget_mb: float | None = None  # per rank; None: the planner's default for the device
    table_optimizer: TableOptimizer = TableOptimizer.ROWWISE_ADAGRAD
    table_lr: float | None = None  # None: trainer.lr
    tables: Mapping[str, TableConstraints] = field(default_factory=dict)
    gather_tables: GatherTables = GatherTables.AUTO
    item_index: ItemIndexBackend = ItemIndexBackend.FAISS
    item_index_uri: str | None = None
    item_index_kind: str | None = None  # faiss kind / Milvus index type; None: the backend's default

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            if spec.name != "tables":  # a mapping of TableConstraints, parsed by from_dict
                object.__setattr__(self, spec.name, coerce(spec.name, hints[spec.name], getattr(self, spec.name)))
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise FieldError("memory_budget_mb", f"must be > 0, got {self.memory_budget_mb}")
        if self.table_lr is not None and self.table_lr <= 0:
            raise FieldError("table_lr", f"must be > 0, got {self.table_lr}")
        if self.item_index is ItemIndexBackend.MILVUS and not self.item_index_uri:
            raise FieldError("item_index_uri", "item_index: milvus needs a server address or a Milvus Lite path")

    def gathers(self, table_bytes: int) -> bool:
        """Whether a sharded run holding ``table_bytes`` of tables (fp32 weights) gathers them."""
        if self.gather_tables is GatherTables.AUTO:
            return self.memory_budget_mb is None or table_bytes <= self.memory_budget_mb * 2**20
        return self.gather_tables is GatherTables.ALWAYS

    @property
    def sharded(self) -> bool:
        return self.embeddings is EmbeddingPlacement.SHARDED

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DistributedConfig":
        """From the parsed ``distributed:`` mapping; a ConfigError names the bad key."""
        if not isinstance(values, Mapping):
            raise ConfigError("distributed: expected a mapping")
        values = dict(values)
        tables = values.pop("tables", None) or {}
        if not isinstance(tables, Mapping):
            raise ConfigError("distributed.tables: expected a mapping of table name to constraints")
        parsed = {}
        for name, spec in tables.items():
            if not isinstance(spec, Mapping):
                raise ConfigError(f"distributed.tables.{name}: expected a mapping")
            try:
                parsed[str(name)] = TableConstraints.from_dict(spec)
            except FieldError as error:
                raise ConfigError(f"distributed.tables.{name}.{error.key}: {error.problem}") from None
        try:
            _check_keys(values, cls)
            return cls(**values, tables=parsed)
        except FieldError as error:
            raise ConfigError(f"distributed.{error.key}: {error.problem}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the inverse of :meth:`from_dict`."""
        return {
            "embeddings": self.embeddings.value,
            "memory_budget_mb": self.memory_budget_mb,
            "table_optimizer": self.table_optimizer.value,
            "table_lr": self.table_lr,
            "gather_tables": self.gather_tables.value,
            "item_index": self.item_index.value,
            "item_index_uri": self.item_index_uri,
            "item_index_kind": self.item_index_kind,
            "tables": {
                name: {
                    "sharding": [kind.value for kind in spec.sharding],
                    "compute_kernel": None if spec.compute_kernel is None else spec.compute_kernel.value,
                    "min_partition": spec.min_partition,
                }
                for name, spec in self.tables.items()
            },
        }


def _check_keys(values: Mapping[str, Any], cls: type) -> None:
    """A FieldError naming the first key ``cls`` does not have (with the closest one)."""
    known = [spec.name for spec in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            raise FieldError(str(key), f"unknown setting{hint}")
