"""Embedding tables for a model's features: one table per schema table, shared by name; the
:class:`~recstack.nn.sparse_inputs.SparseInputs` implementation models get from
:func:`build_sparse_inputs`.

Features that name the same table share one ``nn.Embedding`` (``item_id`` and
``hist_item_ids``), so an item has one vector whether it is the candidate or in a history.
Row layout, as the vocabularies lay it out::

    # row   0         1        2 .. num_rows-1
    #       padding   OOV      values (pretrained: vector file row i at row 2 + i)
    #       zero,     learned  learned (pretrained: from the file; frozen unless trainable)
    #       no grad   (zero in pretrained tables: unknown ids map to padding there)

Shape legend: B batch, L sequence length, F fields, D embedding dim, N dense width.

Example:
    >>> from recstack.schema import Schema
    >>> from recstack.data.feature_map import FeatureMap, TableInfo
    >>> schema = Schema.from_dict({"tables": {"item": {"dim": 4}}, "features": [
    ...     {"name": "item_id", "kind": "categorical", "table": "item"},
    ...     {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 3}]})
    >>> fmap = FeatureMap(schema=schema, tables={"item": TableInfo(name="item", num_rows=10, dim=4)})
    >>> embeddings = build_sparse_inputs(fmap)
    >>> embeddings.table("item_id") is embeddings.table("hist_item_ids")
    True
    >>> batch = Batch(ids={"item_id": torch.tensor([2, 3])},
    ...               sequences={"hist_item_ids": torch.tensor([[2, 5, 0], [0, 0, 0]])})
    >>> embeddings.embed_fields(batch, ["item_id", "hist_item_ids"]).shape
    torch.Size([2, 2, 4])
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from recstack.data.batch import PADDING_INDEX, Batch
from recstack.data.feature_map import FeatureMap, TableInfo, table_name
from recstack.errors import ConfigError
from recstack.nn.pooling import masked_pool
from recstack.nn.sparse_inputs import SparseInputs
from recstack.nn.table import Embedding, FieldLookup, lookup_many
from recstack.schema import Feature, SequenceFeature, VectorFeature, is_embedded
from recstack.vector_io import read_vectors

__all__ = ["EmbeddingCollection", "build_sparse_inputs", "deferred_tables"]

FIRST_VALUE_ROW = 2


def build_sparse_inputs(
    feature_map: FeatureMap,
    *,
    features: Sequence[str] | None = None,
    sparse: bool = False,
    dim: int | None = None,
    init_std: float = 0.01,
    share_with: SparseInputs | None = None,
) -> EmbeddingCollection:
    """The sparse inputs of a model's ``features``: the one factory models build tables with.

    Args:
        feature_map: the fitted feature map (schema + table sizes); features naming one schema
            table share it.
        features: the features served (embedded and dense); None: all.
        sparse: sparse gradients (only the rows a batch touched), for SparseAdam / Adagrad.
        dim: every table this width, fresh and trainable (``dim=1``: a linear model's per-id
            weights; a model's own output embedding); None: the schema tables' dims.
        init_std: standard deviation of the normal init of fresh tables (0 gives zeros).
        share_with: inputs built earlier whose tables these reuse where they hold the same
            schema table (a two-tower model's item table in both towers: one matrix).

    Returns:
        An :class:`EmbeddingCollection` (a :class:`~recstack.nn.sparse_inputs.SparseInputs`).
    """
    if share_with is not None and not isinstance(share_with, EmbeddingCollection):
        raise TypeError(f"share_with: tables can be shared with an EmbeddingCollection, got {type(share_with).__name__}")
    return EmbeddingCollection(
        feature_map, features=features, sparse=sparse, dim=dim, init_std=init_std, share_with=share_with
    )


class EmbeddingCollection(nn.Module):
    """Embeds a model's categorical, bucketised and sequence features; reads its dense ones.

    Args:
        feature_map: the fitted feature map (schema + table sizes).
        features: the features this collection serves (embedded and dense); None: all.
        sparse: build ``nn.Embedding(sparse=True)`` tables, whose gradients are sparse (only
            the rows a batch touched), for SparseAdam / Adagrad.
        dim: give every table this width instead of the feature map's, as fresh trainable
            tables (``dim=1`` makes the per-id weights of a linear model); None: table dims.
        init_std: standard deviation of the normal init of fresh tables (0 gives zeros).
        share_with: a collection whose modules these reuse for the schema tables both hold.

    Models use the :class:`~recstack.nn.sparse_inputs.SparseInputs` methods only; ``table``,
    ``lookup``, ``present_rows`` and the names are this implementation's own, for its tests
    and for code that manages tables (pretrained rows, export), never for a model's forward.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        features: Sequence[str] | None = None,
        sparse: bool = False,
        dim: int | None = None,
        init_std: float = 0.01,
        share_with: EmbeddingCollection | None = None,
    ):
        super().__init__()
        selected = feature_map.select(list(features) if features is not None else None)
        self._features: dict[str, Feature] = {f.name: f for f in selected}
        self.width_override = dim  # None: the feature map's dims (pretrained tables hold their files' rows)
        self._table_of: dict[str, str] = {f.name: table_name(f) for f in selected if is_embedded(f)}
        self._module_keys: dict[str, str] = {}
        self.tables = nn.ModuleDict()
        for name in dict.fromkeys(self._table_of.values()):
            info = feature_map.tables[name]
            key = _module_key(name, taken=set(self._module_keys.values()))
            self._module_keys[name] = key
            self.tables[key] = _build_table(info, sparse=sparse, dim=dim, init_std=init_std)
            if share_with is not None and name in share_with._module_keys:
                # built all the same: every later init draws the random numbers it always drew
                self.tables[key] = share_with._table_by_name(name)
        self._id_lookups: dict[tuple[str, ...], FieldLookup | None] = {}

    # ---- what is here ----------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    @property
    def table_names(self) -> list[str]:
        """Schema names of the tables, one per shared table."""
        return list(self._module_keys)

    def feature(self, name: str) -> Feature:
        try:
            return self._features[name]
        except KeyError:
            raise KeyError(f"feature {name!r} is not in this collection; it has {self.feature_names}") from None

    def table(self, name: str) -> nn.Embedding:
        """The table feature ``name`` looks up (the same object for features sharing it)."""
        return self.tables[self._module_keys[self._table_name_of(name)]]

    def _table_name_of(self, name: str) -> str:
        feature = self.feature(name)
        if feature.name not in self._table_of:
            raise ValueError(f"feature {name!r} ({feature.kind}) is dense: it has no embedding table")
        return self._table_of[name]

    def _is_embedded(self, name: str) -> bool:
        return is_embedded(self.feature(name))

    def dim(self, name: str) -> int:
        """Width of feature ``name`` in a model input: its table's dim, or its dense width."""
        if self._is_embedded(name):
            return self.table(name).embedding_dim
        feature = self.feature(name)
        return feature.dim if isinstance(feature, VectorFeature) else 1

    def output_dim(self, names: Sequence[str]) -> int:
        """Width of :meth:`concat` over ``names``."""
        return sum(self.dim(n) for n in names)

    # ---- embedded features -----------------------------------------------------------------
    def lookup(self, batch: Batch, name: str) -> Tensor:
        """Raw embeddings: ``(B, D)`` for an id feature, ``(B, L, D)`` for a sequence."""
        table = self.table(name)
        if isinstance(self.feature(name), SequenceFeature):
            return table(batch.sequences[name])  # (B, L, D)
        return table(batch.ids[name])  # (B, D)

    def sequence(self, batch: Batch, name: str, flat: Tensor | None = None) -> Tensor:
        """Sequence ``name`` unpooled: ``(B, L, D)``; with ``flat`` (P,), indexes of its
        ``(B * L)`` flattened ids, ``(P, D)``: only those positions are looked up (and get
        gradients)."""
        if not isinstance(self.feature(name), SequenceFeature):
            raise ValueError(f"feature {name!r} ({self.feature(name).kind}) is not a sequence")
        ids = batch.sequences[name]  # (B, L)
        if flat is None:
            return self.table(name)(ids)  # (B, L, D)
        return self.table(name)(ids.reshape(-1).index_select(0, flat))  # (P, D)

    def pooled(self, batch: Batch, name: str) -> Tensor:
        """One ``(B, D)`` vector per row: a sequence pooled with its feature's pooling over
        real positions (weighted modes use ``batch.weights``); an id feature's lookup."""
        feature = self.feature(name)
        values = self.lookup(batch, name)
        if not isinstance(feature, SequenceFeature):
            return values  # (B, D)
        return masked_pool(
            values,  # (B, L, D)
            batch.mask(name),  # (B, L)
            mode=feature.pooling,
            weights=batch.weights.get(name),  # (B, L) or None
        )  # (B, D)

    def embed_fields(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """Pooled embeddings of ``names`` stacked as fields, ``(B, F, D)``; dims must be equal."""
        lookup = self._id_lookup(names)
        if lookup is not None:
            return lookup([batch.ids[n] for n in names])  # (B, F, D)
        self.field_dim(names)
        return torch.stack(self._pooled_many(batch, names), dim=1)  # (B, F, D)

    def _id_lookup(self, names: Sequence[str]) -> FieldLookup | None:
        """One lookup of ``names`` when they are all id features (one id per row) of one dim,
        the common ranking input, as one node; None otherwise. Decided once per list of
        names: it runs at every step."""
        key = tuple(names)
        if key not in self._id_lookups:
            self._id_lookups[key] = FieldLookup([self.table(n) for n in names]) if self._all_ids(names) else None
        return self._id_lookups[key]

    def _all_ids(self, names: Sequence[str]) -> bool:
        """Whether ``names`` are id features (one id per row) of one embedding dim."""
        ids = self._id_features(names)
        return bool(names) and len(ids) == len(names) and len({self.dim(n) for n in ids}) == 1

    def _id_features(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if self._is_embedded(n) and not isinstance(self.feature(n), SequenceFeature)]

    def _pooled_many(self, batch: Batch, names: Sequence[str]) -> list[Tensor]:
        """:meth:`pooled` of every name; the id features' lookups as one call (one autograd
        node on CPU: see ``nn/table.py``)."""
        ids = self._id_features(names)
        lookup = self._id_lookup(ids) if len(ids) > 1 else None  # the common case, set up once
        values = [batch.ids[n] for n in ids]
        found = lookup(values).unbind(-2) if lookup is not None else lookup_many([self.table(n) for n in ids], values)
        looked_up = dict(zip(ids, found))
        return [looked_up[n] if n in looked_up else self.pooled(batch, n) for n in names]

    def field_dim(self, names: Sequence[str]) -> int:
        """The common embedding dim of ``names``; a ValueError naming each dim otherwise.

        Field-interaction layers (FM, stacked fields) need one D: give those tables one dim.
        """
        dense = [n for n in names if not self._is_embedded(n)]
        if dense:
            raise ValueError(f"dense feature(s) {dense} cannot be embedded fields")
        dims = {n: self.dim(n) for n in names}
        if len(set(dims.values())) > 1:
            raise ValueError(f"embedded fields need one embedding dim, got {dims}; give their tables one dim")
        return next(iter(dims.values()), 0)

    # ---- dense features and concatenation ----------------------------------------------------
    def dense_input(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """Numeric scalars and vectors of ``names`` side by side, ``(B, N)`` (N may be 0)."""
        columns = []
        for name in names:
            if self._is_embedded(name):
                raise ValueError(f"feature {name!r} is embedded, not dense")
            values = batch.dense[name]
            columns.append(values.unsqueeze(-1) if values.dim() == 1 else values)  # (B, 1) | (B, D)
        if not columns:
            return torch.zeros(len(batch), 0, device=_device_of(batch))  # (B, 0)
        return torch.cat(columns, dim=-1).float()  # (B, N)

    def concat(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """Every feature of ``names`` as one row vector: pooled embeddings and dense values in
        the given order, ``(B, output_dim(names))``: the stacking layer of Embedding+MLP."""
        lookup = self._id_lookup(names)
        if lookup is not None:  # no copies but the stacking
            return lookup([batch.ids[n] for n in names]).flatten(start_dim=-2)  # (B, F*D)
        embedded = [n for n in names if self._is_embedded(n)]
        pooled = dict(zip(embedded, self._pooled_many(batch, embedded)))
        parts = [pooled[n] if n in pooled else self.dense_input(batch, [n]) for n in names]
        if not parts:
            return torch.zeros(len(batch), 0, device=_device_of(batch))
        return torch.cat(parts, dim=-1)  # (B, N)

    # ---- regularisation support ----------------------------------------------------------------
    def present_rows(self, batch: Batch, names: Sequence[str] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Rows each table serves in ``batch``, with their in-batch occurrence counts.

        Features sharing a table count together (an item as candidate and in a history); the
        padding row is left out. DIN's mini-batch-aware L2 reads this.

        Args:
            batch: the batch.
            names: embedded features to look at; None: every embedded feature here.

        Returns:
            ``{table name: (rows (K,) int64 sorted, counts (K,) int64)}``.
        """
        names = [n for n in (names if names is not None else self._table_of) if self._is_embedded(n)]
        ids_by_table: dict[str, list[Tensor]] = {}
        for name in names:
            ids = batch.sequences[name] if isinstance(self.feature(name), SequenceFeature) else batch.ids[name]
            ids_by_table.setdefault(self._table_name_of(name), []).append(ids.reshape(-1))
        present = {}
        for table, parts in ids_by_table.items():
            ids = torch.cat(parts)
            ids = ids[ids != PADDING_INDEX]
            present[table] = torch.unique(ids, return_counts=True)
        return present

    def mini_batch_l2(self, batch: Batch) -> Tensor:
        """``sum_j ||w_j||^2 / n_j`` over the trainable rows j of :meth:`present_rows`, a scalar
        (DIN's mini-batch-aware L2; frozen tables are left out)."""
        total = torch.zeros((), device=_device_of(batch))
        for table_name, (rows, counts) in self.present_rows(batch).items():
            table = self._table_by_name(table_name)
            if not table.weight.requires_grad:
                continue
            vectors = table(rows)  # (K, D): through the module, so sparse tables stay sparse
            total = total + (vectors.pow(2).sum(dim=-1) / counts.to(vectors.dtype)).sum()
        return total

    def _table_by_name(self, table: str) -> nn.Embedding:
        """The module of schema table ``table``."""
        return self.tables[self._module_keys[table]]


_DEFERRED = contextvars.ContextVar("recstack_deferred_tables", default=False)


@contextlib.contextmanager
def deferred_tables(enabled: bool = True) -> Iterator[None]:
    """Fresh tables built inside are allocated on ``meta`` (no memory), their init std kept as
    ``table.init_std``: a sharded run initialises each rank's shard itself
    (``recstack.training.sharded``). Pretrained tables are read as usual."""
    token = _DEFERRED.set(enabled)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def _build_table(info: TableInfo, *, sparse: bool, dim: int | None, init_std: float) -> nn.Embedding:
    width = dim if dim is not None else info.dim
    deferred = _DEFERRED.get() and not (info.pretrained and dim is None)
    table = Embedding(info.num_rows, width, padding_idx=PADDING_INDEX, sparse=sparse, device="meta" if deferred else None)
    table.init_std = init_std
    with torch.no_grad():
        if deferred:
            pass  # initialised shard by shard once placed
        elif info.pretrained and dim is None:
            table.weight.copy_(_pretrained_weight(info))
        else:
            nn.init.normal_(table.weight, std=init_std)
            table.weight[PADDING_INDEX].zero_()
    # frozen also when a run folder rebuilds it without its file (rows from model.pt); a table of
    # another width (LR's 1-d weights) holds no pretrained rows and always trains
    table.weight.requires_grad_(info.trainable or dim is not None)
    return table


def _pretrained_weight(info: TableInfo) -> Tensor:
    """``(num_rows, D)``: rows 0 (padding) and 1 (OOV) zero, row 2 + i the file's vector i."""
    table = read_vectors(info.pretrained, info.pretrained_format)
    vectors = torch.tensor(table.vectors, dtype=torch.float32)  # (N, D), a copy: the array is read-only
    expected = (info.num_rows - FIRST_VALUE_ROW, info.dim)
    if tuple(vectors.shape) != expected:
        raise ConfigError(
            f"table {info.name!r}: vector file {info.pretrained!r} holds {tuple(vectors.shape)} vectors, "
            f"the fitted vocabulary expects {expected}; refit the preprocessor on this file"
        )
    weight = torch.zeros(info.num_rows, info.dim)
    weight[FIRST_VALUE_ROW:] = vectors
    return weight


def _module_key(table: str, *, taken: set[str]) -> str:
    """A ModuleDict key for a table name: no dots, and no clash with ModuleDict's own
    attributes (a table called ``items`` or ``keys`` would otherwise be rejected)."""
    key = table.replace(".", "_")
    while not key or hasattr(nn.ModuleDict, key) or key in taken:
        key = f"{key}_"
    return key


def _device_of(batch: Batch) -> torch.device:
    for tensors in (batch.ids, batch.sequences, batch.dense):
        for tensor in tensors.values():
            return tensor.device
    return torch.device("cpu")
