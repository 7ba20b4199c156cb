"""SparseInputs served by TorchRec tables, ready for ``DistributedModelParallel``.

:func:`use_torchrec_tables` takes a built model, unchanged, and swaps each of its
:class:`~recstack.nn.embedding.EmbeddingCollection` modules for a :class:`TorchRecSparseInputs`
answering the same questions (pooled, embed_fields, concat, sequence, mini_batch_l2) from one
:class:`~recstack.nn.torchrec_tables.TorchRecTables` holding all the model's tables, attached as
``model.torchrec_tables`` (the module TorchRec's planner shards). The weights are the model's
own: outputs equal the EmbeddingCollection's on the same batch.

:func:`unpooled_features` finds which features a model reads position by position (its
``sequence`` and ``mini_batch_l2`` questions) by running one forward with the plain tables:
those tables go to TorchRec's EmbeddingCollection, the rest to its EmbeddingBagCollection.

Shape legend: B batch, L sequence length, P packed positions, F fields, D embedding dim,
N concatenated width.

Example (tests/distributed/test_torchrec_inputs.py)::

    unpooled = unpooled_features(model, lambda: task.loss(model, batch))
    tables = use_torchrec_tables(model, unpooled=unpooled)   # model.torchrec_tables
    model(batch)                                             # the same logits as before
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from recstack.data.batch import PADDING_INDEX, Batch
from recstack.nn.embedding import EmbeddingCollection
from recstack.nn.pooling import masked_pool
from recstack.nn.torchrec_tables import TableSpec, TorchRecTables, _device_of, feature_key
from recstack.schema import Feature, Pooling, SequenceFeature, VectorFeature, is_embedded

__all__ = ["TABLES_ATTRIBUTE", "TorchRecSparseInputs", "table_weights", "unpooled_features", "use_torchrec_tables"]

TABLES_ATTRIBUTE = "torchrec_tables"


class TorchRecSparseInputs(nn.Module):
    """A :class:`~recstack.nn.sparse_inputs.SparseInputs` over :class:`TorchRecTables`.

    Args:
        features: the features served, by name (embedded and dense).
        table_of: embedded feature name -> TorchRec table name.
        tables: the model's tables (not registered here: the model holds them once).
    """

    def __init__(self, *, features: dict[str, Feature], table_of: dict[str, str], tables: TorchRecTables) -> None:
        super().__init__()
        self._features = dict(features)
        self._table_of = dict(table_of)
        self.__dict__["_tables"] = tables  # a plain attribute: no second copy in state_dict()

    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    def feature(self, name: str) -> Feature:
        try:
            return self._features[name]
        except KeyError:
            raise KeyError(f"feature {name!r} is not in these inputs; they have {self.feature_names}") from None

    def _spec(self, name: str) -> TableSpec:
        feature = self.feature(name)
        if name not in self._table_of:
            raise ValueError(f"feature {name!r} ({feature.kind}) is dense: it has no embedding table")
        return self._tables.specs[self._table_of[name]]

    def dim(self, name: str) -> int:
        if is_embedded(self.feature(name)):
            return self._spec(name).dim
        feature = self.feature(name)
        return feature.dim if isinstance(feature, VectorFeature) else 1

    def output_dim(self, names: Sequence[str]) -> int:
        return sum(self.dim(n) for n in names)

    def field_dim(self, names: Sequence[str]) -> int:
        dense = [n for n in names if not is_embedded(self.feature(n))]
        if dense:
            raise ValueError(f"dense feature(s) {dense} cannot be embedded fields")
        dims = {n: self.dim(n) for n in names}
        if len(set(dims.values())) > 1:
            raise ValueError(f"embedded fields need one embedding dim, got {dims}; give their tables one dim")
        return next(iter(dims.values()), 0)

    # ---- lookups -------------------------------------------------------------------------------
    def _looked_up(self, batch: Batch, name: str) -> Tensor:
        spec = self._spec(name)
        value = self._tables.lookup(batch)[feature_key(name, spec.name)]
        return value if spec.trainable else value.detach()  # a frozen table gets no gradient

    def pooled(self, batch: Batch, name: str) -> Tensor:
        """``(B, D)``: an id feature's row, or a sequence pooled over its real positions."""
        feature, spec = self.feature(name), self._spec(name)
        values = self._looked_up(batch, name)
        if spec.unpooled:  # (B, L, D) with zeros at padding: pooled here, as EmbeddingCollection does
            if not isinstance(feature, SequenceFeature):
                return values[:, 0]  # (B, D)
            return masked_pool(values, batch.mask(name), mode=feature.pooling, weights=batch.weights.get(name))
        if not isinstance(feature, SequenceFeature) or feature.pooling in (Pooling.SUM, Pooling.WEIGHTED_SUM):
            return values  # (B, D): the bag's sum (weighted by the per-value weights)
        if feature.pooling is Pooling.MEAN:
            counts = batch.mask(name).sum(dim=1, keepdim=True).clamp(min=1).to(values.dtype)  # (B, 1)
            return values / counts
        total = batch.weights[name].masked_fill(~batch.mask(name), 0.0).sum(dim=1, keepdim=True)  # (B, 1)
        safe = torch.where(total == 0, torch.ones_like(total), total)
        return torch.where(total == 0, torch.zeros_like(values), values / safe)  # weighted mean

    def embed_fields(self, batch: Batch, names: Sequence[str]) -> Tensor:
        self.field_dim(names)
        return torch.stack([self.pooled(batch, n) for n in names], dim=1)  # (B, F, D)

    def sequence(self, batch: Batch, name: str, flat: Tensor | None = None) -> Tensor:
        """``(B, L, D)`` zeros at padding; with ``flat`` (P,) indexes of the ``(B * L)``
        positions, ``(P, D)``."""
        if not isinstance(self.feature(name), SequenceFeature):
            raise ValueError(f"feature {name!r} ({self.feature(name).kind}) is not a sequence")
        if not self._spec(name).unpooled:
            raise ValueError(
                f"feature {name!r} was put in TorchRec's pooled EmbeddingBagCollection; read "
                "position by position it must be listed in use_torchrec_tables(unpooled=...)"
            )
        values = self._looked_up(batch, name)  # (B, L, D)
        if flat is None:
            return values
        return values.reshape(-1, values.shape[-1]).index_select(0, flat)  # (P, D)

    def dense_input(self, batch: Batch, names: Sequence[str]) -> Tensor:
        columns = []
        for name in names:
            if is_embedded(self.feature(name)):
                raise ValueError(f"feature {name!r} is embedded, not dense")
            values = batch.dense[name]
            columns.append(values.unsqueeze(-1) if values.dim() == 1 else values)  # (B, 1) | (B, D)
        if not columns:
            return torch.zeros(len(batch), 0, device=_device_of(batch))  # (B, 0)
        return torch.cat(columns, dim=-1).float()  # (B, N)

    def concat(self, batch: Batch, names: Sequence[str]) -> Tensor:
        parts = [self.pooled(batch, n) if is_embedded(self.feature(n)) else self.dense_input(batch, [n]) for n in names]
        if not parts:
            return torch.zeros(len(batch), 0, device=_device_of(batch))
        return torch.cat(parts, dim=-1)  # (B, N)

    def mini_batch_l2(self, batch: Batch) -> Tensor:
        """``sum_j ||w_j||^2 / n_j`` over the trainable rows j the batch uses, from the looked-up
        positions: each of the n_j occurrences of row j adds ``||w_j||^2 / n_j^2``."""
        ids: dict[str, list[Tensor]] = {}
        vectors: dict[str, list[Tensor]] = {}
        for name in self._table_of:
            spec = self._spec(name)
            if not spec.trainable:
                continue
            feature = self.feature(name)
            if isinstance(feature, SequenceFeature) and not spec.unpooled:
                raise ValueError(f"mini_batch_l2 reads every position of {name!r}: list it in use_torchrec_tables(unpooled=...)")
            values = self._looked_up(batch, name)
            raw = batch.sequences[name] if isinstance(feature, SequenceFeature) else batch.ids[name]
            ids.setdefault(spec.name, []).append(raw.reshape(-1))
            vectors.setdefault(spec.name, []).append(values.reshape(-1, values.shape[-1]))
        total = torch.zeros(())
        for table, parts in ids.items():
            flat = torch.cat(parts)  # (N,) every position, padding included
            found = torch.cat(vectors[table])  # (N, D), zeros at padding
            _, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
            per_position = counts[inverse].to(found.dtype)  # n_j of each position's row
            real = flat.ne(PADDING_INDEX)
            total = total + (found.pow(2).sum(dim=-1)[real] / per_position[real].pow(2)).sum()
        return total


def unpooled_features(model: nn.Module, run_forward: Callable[[], Any]) -> set[str]:
    """Features the model reads position by position, found by running ``run_forward()``
    (one forward of the model, a task's loss) with its plain tables: every feature it asks
    ``sequence`` for, every embedded feature of inputs whose ``mini_batch_l2`` it calls, and
    sequences pooled by ``max`` (no fbgemm bag kernel). The model's buffers and the RNG are
    left as they were."""
    found: set[str] = set()
    collections = [m for m in model.modules() if isinstance(m, EmbeddingCollection)]

    def record_sequence(inputs: EmbeddingCollection) -> Callable[..., Tensor]:
        def sequence(batch: Batch, name: str, flat: Tensor | None = None) -> Tensor:
            found.add(name)
            return EmbeddingCollection.sequence(inputs, batch, name, flat)

        return sequence

    def record_l2(inputs: EmbeddingCollection) -> Callable[[Batch], Tensor]:
        def mini_batch_l2(batch: Batch) -> Tensor:
            found.update(n for n in inputs.feature_names if is_embedded(inputs.feature(n)))
            return EmbeddingCollection.mini_batch_l2(inputs, batch)

        return mini_batch_l2

    for inputs in collections:
        inputs.__dict__["sequence"] = record_sequence(inputs)
        inputs.__dict__["mini_batch_l2"] = record_l2(inputs)
        found.update(
            n for n in inputs.feature_names
            if isinstance(inputs.feature(n), SequenceFeature) and inputs.feature(n).pooling is Pooling.MAX
        )
    buffers = {name: value.clone() for name, value in model.named_buffers()}  # batch-norm statistics
    deferred = {}  # tables built on meta read as zeros, without memory (a stride-0 view)
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    for inputs in collections:
        for embedding in inputs.tables.values():
            if embedding.weight.is_meta and id(embedding) not in deferred:
                deferred[id(embedding)] = (embedding, embedding.weight)
                rows, dim = embedding.weight.shape
                embedding.weight = nn.Parameter(torch.zeros(1, dim, device=device).expand(rows, dim), requires_grad=False)
    try:
        with torch.no_grad(), torch.random.fork_rng():  # the probe leaves no trace: no RNG draws,
            run_forward()
    finally:
        with torch.no_grad():  # no running-statistics update
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
        for embedding, weight in deferred.values():
            embedding.weight = weight
        for inputs in collections:
            inputs.__dict__.pop("sequence", None)
            inputs.__dict__.pop("mini_batch_l2", None)
    return found


def use_torchrec_tables(
    model: nn.Module, *, unpooled: set[str] = frozenset(), device: str | torch.device = "cpu", seed: int = 0
) -> TorchRecTables:
    """Serve ``model``'s embedded features from TorchRec tables, in place; returns the tables.

    Every ``nn.Embedding`` of the model's EmbeddingCollections becomes one TorchRec table
    (shared ones once: a two-tower model's item table stays one matrix) holding its weights;
    a table any of whose features is in ``unpooled`` is read position by position (TorchRec's
    EmbeddingCollection), the others pooled (EmbeddingBagCollection). ``device="meta"`` builds
    the bag tables without memory: set their weights after sharding with
    ``TorchRecTables.load_weights(weights)``, the tables of :func:`table_weights`. Tables the
    model built deferred (``nn.embedding.deferred_tables``: on meta) are drawn where they are
    placed (``fill_normal``, seeded by ``seed``).

    Returns:
        The :class:`TorchRecTables`, also ``model.torchrec_tables``.
    """
    owners, found = _plain_tables(model)
    if not owners:
        raise ValueError(f"{type(model).__name__} has no EmbeddingCollection to serve from TorchRec tables")
    source = {name: (table.schema_table, table.embedding) for name, table in found.items()}
    members = {name: table.features for name, table in found.items()}
    specs = [
        TableSpec(
            name=name,
            schema_table=schema_table,
            num_rows=embedding.num_embeddings,
            dim=embedding.embedding_dim,
            trainable=embedding.weight.requires_grad,
            features=tuple(members[name].values()),
            unpooled=any(f in unpooled for f in members[name]),
            init_std=getattr(embedding, "init_std", 0.01) if embedding.weight.is_meta else None,
        )
        for name, (schema_table, embedding) in source.items()
    ]
    tables = TorchRecTables(specs, device=device)
    # the bag collection on meta gets its weights once sharded; the rest here (drawn when deferred)
    tables.load_weights({name: embedding.weight.detach() for name, (_, embedding) in source.items()}, seed=seed)
    for path, inputs in owners:
        table_of = {n: name for name, table in found.items() for p, n in table.readers if p == path}
        replacement = TorchRecSparseInputs(
            features={n: inputs.feature(n) for n in inputs.feature_names}, table_of=table_of, tables=tables
        )
        _replace(model, path, replacement)
    model.add_module(TABLES_ATTRIBUTE, tables)
    model.register_forward_pre_hook(tables.forget)  # each forward looks its batch up afresh
    return tables


def table_weights(model: nn.Module) -> dict[str, Tensor]:
    """``{TorchRec table name: weight}`` of a plain model's EmbeddingCollections, named as
    :func:`use_torchrec_tables` names them (the same model class gives the same names): where
    gathered tables go back into an unchanged model (export)."""
    return {name: table.embedding.weight for name, table in _plain_tables(model)[1].items()}


@dataclass
class _PlainTable:
    schema_table: str
    embedding: nn.Embedding
    features: dict[str, Feature] = field(default_factory=dict)
    readers: list[tuple[str, str]] = field(default_factory=list)  # (inputs' module path, feature)


def _plain_tables(model: nn.Module) -> tuple[list[tuple[str, EmbeddingCollection]], dict[str, _PlainTable]]:
    """The model's EmbeddingCollections and its tables by TorchRec name, each ``nn.Embedding``
    once (a shared table is one), in module order. The widest table of a schema table takes its
    name; another (a linear part's 1-wide weights) is ``<table>_d<dim>``."""
    owners = [(name, module) for name, module in model.named_modules() if isinstance(module, EmbeddingCollection)]
    found: dict[int, _PlainTable] = {}
    for path, inputs in owners:
        for feature_name in inputs.feature_names:
            feature = inputs.feature(feature_name)
            if not is_embedded(feature):
                continue
            embedding = inputs.table(feature_name)
            table = found.setdefault(id(embedding), _PlainTable(inputs._table_name_of(feature_name), embedding))
            table.features[feature_name] = feature
            table.readers.append((path, feature_name))
    widest: dict[str, int] = {}
    for table in found.values():
        widest[table.schema_table] = max(widest.get(table.schema_table, 0), table.embedding.embedding_dim)
    tables: dict[str, _PlainTable] = {}
    for table in found.values():
        dim = table.embedding.embedding_dim
        name = table.schema_table.replace(".", "_")  # TorchRec splits state-dict keys on dots
        name = name if dim == widest[table.schema_table] else f"{name}_d{dim}"
        while name in tables:
            name = f"{name}_"
        tables[name] = table
    return owners, tables


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if not child:
        raise ValueError("the model itself is an EmbeddingCollection; wrap it in a model")
    setattr(parent, child, module)
