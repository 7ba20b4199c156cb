"""A model's embedding tables as TorchRec collections, looked up once per batch.

Every table a model holds (one per schema table and width; shared tables once) becomes one
TorchRec table. Tables whose features the model only reads pooled go to one
``EmbeddingBagCollection`` (fbgemm's pooled kernels: a bag per row, per-value weights for the
weighted modes); tables read position by position (``sequence``: DIN's history; ``max`` pooling;
DIN's mini-batch L2) go to one ``EmbeddingCollection``. ``DistributedModelParallel`` shards both.

A feature's values become one ``KeyedJaggedTensor`` key, ``"<feature>@<table>"``, padding (id 0)
left out, built from the Batch's padded tensors without a Python loop over rows::

    #               row 0     row 1    row 2   <-- B
    # "item_id@item"  [7]       [3]      []       (an id feature: a bag of one; 0 = missing)
    # "hist@item"     [5, 9]    []       [4]      (a sequence's real positions)
    values = [7, 3, 5, 9, 4]; lengths = [1, 1, 0, 2, 0, 1]

Every batch is looked up once: the first question a model asks of a batch runs the collections
(the all-to-alls when sharded) and later questions about the same Batch object read the result,
so every rank runs the same collectives once per forward whatever the model asks.

Shape legend: B batch, L sequence length, N values in the batch, D embedding dim.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from recstack.data.batch import PADDING_INDEX, Batch
from recstack.errors import ConfigError
from recstack.schema import Feature, Pooling, SequenceFeature

__all__ = ["TableSpec", "TorchRecTables", "feature_key", "fill_normal", "load_table_weights", "require_torchrec"]

INSTALL_HINT = (
    "pip install fbgemm-gpu-cpu==1.8.0 && pip install --no-deps torchrec==1.9.2 && "
    "pip install tensordict==0.15.3 torchmetrics==1.0.3 pyre-extensions iopath tqdm "
    "(what `make setup` / scripts/setup.sh installs)"
)


def require_torchrec(what: str = "distributed.embeddings: sharded") -> None:
    """A ConfigError naming ``what`` and the install command when TorchRec cannot be imported."""
    try:
        import fbgemm_gpu  # noqa: F401  (the kernels; an undefined symbol means a torch mismatch)
        import torchrec  # noqa: F401
    except (ImportError, OSError) as error:
        raise ConfigError(
            f"{what} needs TorchRec and fbgemm, which cannot be imported here "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); install them: {INSTALL_HINT}"
        ) from None


def feature_key(feature: str, table: str) -> str:
    """The KeyedJaggedTensor key of ``feature`` read from TorchRec table ``table``."""
    return f"{feature}@{table}"


@dataclass(frozen=True)
class TableSpec:
    """One TorchRec table: its rows, width, the features reading it and how."""

    name: str  # the TorchRec table name (unique in the model; the schema table's name when it can be)
    schema_table: str
    num_rows: int
    dim: int
    trainable: bool
    features: tuple[Feature, ...]
    unpooled: bool  # in the EmbeddingCollection (read position by position), else the bag collection
    init_std: float | None = None  # a deferred table (built on meta): rows drawn N(0, std) where placed

    @property
    def keys(self) -> list[str]:
        return [feature_key(f.name, self.name) for f in self.features]


class TorchRecTables(nn.Module):
    """The TorchRec collections of a model's tables and the per-batch lookup.

    Args:
        specs: the tables.
        device: where the collections are built; ``"meta"`` allocates nothing (the weights are
            then set shard by shard after ``DistributedModelParallel``, :meth:`load_weights`).
    """

    def __init__(self, specs: Sequence[TableSpec], *, device: str | torch.device = "cpu") -> None:
        super().__init__()
        require_torchrec()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection, EmbeddingConfig, PoolingType

        self.specs = {spec.name: spec for spec in specs}
        bags = [s for s in specs if not s.unpooled]
        positions = [s for s in specs if s.unpooled]
        self.weighted = any(_is_weighted(f) for s in bags for f in s.features)
        # SUM everywhere: means are divided here (fbgemm's mean ignores per-value weights)
        self.bags = None if not bags else EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=s.name, embedding_dim=s.dim, num_embeddings=s.num_rows,
                                   feature_names=s.keys, pooling=PoolingType.SUM)
                for s in bags
            ],
            is_weighted=self.weighted,
            device=torch.device(device),
        )
        # TorchRec's sharded EmbeddingCollection copies the unsharded weights: never on meta
        self.positions = None if not positions else EmbeddingCollection(
            tables=[
                EmbeddingConfig(name=s.name, embedding_dim=s.dim, num_embeddings=s.num_rows, feature_names=s.keys)
                for s in positions
            ],
            device=torch.device("cpu") if torch.device(device).type == "meta" else torch.device(device),
        )
        self._bag_keys = [(k, f) for s in bags for k, f in zip(s.keys, s.features)]
        self._position_keys = [(k, f) for s in positions for k, f in zip(s.keys, s.features)]
        self._cache: tuple[Batch, bool, dict[str, Tensor]] | None = None
        # sharded: TorchRec's all-to-alls need one batch size on every rank, so a rank's smaller
        # batch (an epoch's last) is looked up padded with empty rows, which are then dropped
        self.pad_across_ranks = False

    # ---- lookups -------------------------------------------------------------------------------
    def lookup(self, batch: Batch) -> dict[str, Tensor]:
        """``{key: (B, D)}`` summed bags, and ``{key: (B, L, D)}`` (``(B, 1, D)`` for an id
        feature) positions with zeros at padding; computed once per forward of a Batch: the
        result is kept until the model's next forward (:meth:`forget`), the backward through
        it (which updates fused tables) or a change of grad mode."""
        grad = torch.is_grad_enabled()
        if self._cache is not None and self._cache[0] is batch and self._cache[1] == grad:
            return self._cache[2]
        found: dict[str, Tensor] = {}
        size = len(batch)
        padded = _largest_over_ranks(size, _device_of(batch)) if self.pad_across_ranks else size
        if self.bags is not None:
            pooled = self.bags(_jagged(batch, self._bag_keys, size, padded, weighted=self.weighted)[0])
            # by name: a sharded collection may reorder its keys; padding rows dropped
            found.update({key: value[:size] for key, value in pooled.to_dict().items()})
        if self.positions is not None:
            jagged, where = _jagged(batch, self._position_keys, size, padded, weighted=False)
            looked_up = self.positions(jagged)
            for key, feature in self._position_keys:
                values = looked_up[key].values()  # (N, D) real positions only
                found[key] = _scatter(values, where[key], size, _length(batch, feature))  # (B, L, D)
        for value in found.values():
            if value.requires_grad:  # the backward updates the tables: later lookups are new
                value.register_hook(self._forget_on_backward)
        self._cache = (batch, grad, found)
        return found

    def forget(self, *_: Any) -> None:
        """Drop the kept lookup (a forward pre-hook of the model calls it)."""
        self._cache = None

    def _forget_on_backward(self, grad: Tensor) -> Tensor:
        self._cache = None
        return grad

    # ---- weights ---------------------------------------------------------------------------------
    def full_weights(self) -> dict[str, Tensor]:
        """``{table: (num_rows, D)}`` of an unsharded collection (views, not copies)."""
        weights = {}
        for name, value in self.state_dict().items():
            weights[name.rsplit(".", 2)[-2]] = value
        return weights

    def load_weights(self, weights: Mapping[str, Tensor], *, seed: int = 0) -> None:
        """Copy full ``(num_rows, D)`` tables into this collection, sharded or not (each rank
        copies its own shards' rows and columns); deferred tables not in ``weights`` are drawn
        (:func:`fill_normal`)."""
        load_table_weights(self.state_dict(), weights, specs=self.specs, seed=seed)


def load_table_weights(state: Mapping[str, Any], weights: Mapping[str, Tensor], *, specs: Mapping[str, TableSpec], seed: int = 0) -> None:
    """Copy full tables (by TorchRec table name) into ``state``'s table weights, whole or
    sharded; a deferred table (``init_std`` set) missing from ``weights`` gets its rows drawn."""
    with torch.no_grad():
        for name, target in state.items():
            table = name.rsplit(".", 2)[-2]
            spec = specs.get(table)
            if not name.endswith(".weight") or spec is None:
                continue
            if not hasattr(target, "local_shards") and target.device.type == "meta":
                continue  # an unsharded bag table on meta: set once sharded
            pieces = (
                [(s.tensor, *s.metadata.shard_offsets) for s in target.local_shards()]  # a ShardedTensor: this rank's
                if hasattr(target, "local_shards")
                else [(target, 0, 0)]
            )
            for piece, row, col in pieces:
                rows, cols = piece.shape
                if table in weights and weights[table].device.type != "meta":
                    piece.copy_(weights[table][row : row + rows, col : col + cols])
                elif spec.init_std is not None:
                    fill_normal(piece, row=row, col=col, dim=spec.dim, std=spec.init_std, seed=seed, table=table)


INIT_CHUNK_ROWS = 65536


def fill_normal(target: Tensor, *, row: int, col: int, dim: int, std: float, seed: int, table: str) -> None:
    """Rows ``row ..`` and columns ``col ..`` of a table drawn N(0, std^2), row 0 (padding) zero.

    The table is drawn in chunks of :data:`INIT_CHUNK_ROWS` full-width rows, each from its own
    generator seeded by (seed, table, chunk): a row's values do not depend on how the table is
    sharded, and no rank ever holds more than its shard and one chunk."""
    rows, cols = target.shape
    for chunk in range(row // INIT_CHUNK_ROWS, (row + rows - 1) // INIT_CHUNK_ROWS + 1):
        generator = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(f"{table}:{chunk}".encode()))
        block = torch.randn(INIT_CHUNK_ROWS, dim, generator=generator) * std  # (CHUNK, D)
        start, stop = max(row, chunk * INIT_CHUNK_ROWS), min(row + rows, (chunk + 1) * INIT_CHUNK_ROWS)
        base = chunk * INIT_CHUNK_ROWS
        target[start - row : stop - row] = block[start - base : stop - base, col : col + cols].to(target.device)
    if row == PADDING_INDEX and rows:
        target[0].zero_()


def _is_weighted(feature: Feature) -> bool:
    return isinstance(feature, SequenceFeature) and feature.pooling in (Pooling.WEIGHTED_SUM, Pooling.WEIGHTED_MEAN)


def _length(batch: Batch, feature: Feature) -> int:
    if isinstance(feature, SequenceFeature):
        return int(batch.sequences[feature.name].shape[1]) if feature.name in batch.sequences else 0
    return 1


def _jagged(batch: Batch, keys: Sequence[tuple[str, Feature]], size: int, padded: int, *, weighted: bool) -> tuple[Any, dict[str, Tensor]]:
    """The KeyedJaggedTensor of ``keys`` (padding left out; ``padded - size`` empty rows after
    the batch's) and, per key, the flat ``(N,)`` positions of its values in the ``(B * L)``
    padded layout."""
    from torchrec import KeyedJaggedTensor

    values, lengths, weights, where = [], [], [], {}
    device = _device_of(batch)
    for key, feature in keys:
        if isinstance(feature, SequenceFeature):
            ids = batch.sequences.get(feature.name)
        else:
            ids = batch.ids.get(feature.name)
            ids = None if ids is None else ids.unsqueeze(1)  # (B, 1)
        if ids is None:  # a batch without this feature (an item-only batch): empty bags
            lengths.append(torch.zeros(padded, dtype=torch.long, device=device))
            where[key] = torch.zeros(0, dtype=torch.long, device=device)
            continue
        real = ids.ne(PADDING_INDEX)  # (B, L)
        flat = real.reshape(-1).nonzero().squeeze(1)  # (N,) row-major: row by row
        where[key] = flat
        values.append(ids.reshape(-1).index_select(0, flat))
        lengths.append(real.sum(dim=1))
        if padded > size:
            lengths.append(torch.zeros(padded - size, dtype=torch.long, device=device))
        if weighted:
            given = batch.weights.get(feature.name) if _is_weighted(feature) else None
            weights.append(given.reshape(-1).index_select(0, flat).float() if given is not None else torch.ones(len(flat), device=device))
    empty = torch.zeros(0, dtype=torch.long, device=device)
    jagged = KeyedJaggedTensor(
        keys=[key for key, _ in keys],
        values=torch.cat(values) if values else empty,
        lengths=torch.cat(lengths),
        weights=(torch.cat(weights) if weights else torch.zeros(0, device=device)) if weighted else None,
    )
    return jagged, where


def _largest_over_ranks(size: int, device: torch.device) -> int:
    import torch.distributed as dist

    largest = torch.tensor([size], device=device)  # the batch's device: CPU for gloo, the GPU for NCCL
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def _scatter(values: Tensor, where: Tensor, size: int, length: int) -> Tensor:
    """``(N, D)`` real positions back into the padded ``(B, L, D)`` layout, zeros at padding."""
    out = values.new_zeros(size * length, values.shape[-1])
    return out.index_copy(0, where, values).view(size, length, -1)  # (B, L, D)


def _device_of(batch: Batch) -> torch.device:
    for tensors in (batch.ids, batch.sequences, batch.dense):
        for tensor in tensors.values():
            return tensor.device
    return torch.device("cpu")
