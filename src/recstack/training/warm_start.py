"""Warm start from a parent run: embedding tables grown by table name, everything else loaded.

Incremental training (``recstack train CONFIG --init-from runs/OLD``) refits the preprocessor
with the parent's as ``parent`` (``data/incremental.py``: every known id keeps its row, new ids
get rows appended), builds the model fresh on the grown feature map, then :func:`grow_model`
loads the parent's ``model.pt`` into it::

    # table "item"   rows 0 .. R_old-1          rows R_old .. R_new-1
    #   parent       trained values       →     (none)
    #   child        the parent's, copied       the fresh model's own init (normal(init_std));
    #                                           a pretrained table: the vector file's rows

Every table of every :class:`~recstack.nn.embedding.EmbeddingCollection` in the model is found
through the state dict by identity, so a table shared by two towers, a history and a candidate
(``item_id`` and ``hist_item_ids``), or any model that builds its tables with
``build_sparse_inputs`` (ranking, two-tower, sequence models) grows the same way. Any other
parameter or buffer must have the parent's shape; one that does not is a ConfigError naming it.
A multi-task ranker's loss weighting state (``LOSS_WEIGHTING_STATE``: learned task weights,
MetaBalance's averages) is carried when parent and child use the same ``loss_weighting`` and
starts fresh when the child changed it.
The optimiser starts fresh unless ``optimizer_state: carry`` (:func:`carry_optimizer_state`).

Example::

    child = Preprocessor(schema).fit(new_data, parent=parent_pre)
    model = build_model("deepfm", child.feature_map().without_pretrained_files(), params)
    growth = grow_model(model, torch.load("runs/old/model.pt", weights_only=True), parent=parent_pre, child=child)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from recstack.data.batch import PADDING_INDEX
from recstack.data.feature_map import table_name
from recstack.data.incremental import NumericUpdate
from recstack.data.preprocessor import Preprocessor
from recstack.data.vocabulary import FIRST_VALUE_INDEX, Vocabulary, vocabulary_from_ids
from recstack.errors import ConfigError
from recstack.models.multi_task_base import LOSS_WEIGHTING_STATE
from recstack.nn.embedding import EmbeddingCollection
from recstack.schema import is_embedded

__all__ = ["IncrementalConfig", "OptimizerState", "TableGrowth", "carry_optimizer_state", "grow_model"]

_RETRAIN = "train from scratch (without --init-from)"


class OptimizerState(str, enum.Enum):
    FRESH = "fresh"  # new optimiser state (moments, step counts): the default
    CARRY = "carry"  # the parent's last checkpoint's state, for every parameter whose shape is unchanged


@dataclass(frozen=True)
class IncrementalConfig:
    """The config's ``incremental:`` section (``--init-from`` sets ``init_from``).

    Example:
        >>> IncrementalConfig.from_dict({"init_from": "runs/day1", "numeric": "update"}).numeric
        <NumericUpdate.UPDATE: 'update'>
    """

    init_from: Path | None = None  # the parent run folder; None: an ordinary run from scratch
    numeric: NumericUpdate = NumericUpdate.KEEP  # keep | update the parent's numeric normalisers
    optimizer_state: OptimizerState = OptimizerState.FRESH  # fresh | carry

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> "IncrementalConfig":
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise ConfigError("incremental: expected a mapping (init_from, numeric, optimizer_state)")
        unknown = sorted(set(raw) - {"init_from", "numeric", "optimizer_state"})
        if unknown:
            raise ConfigError(f"incremental.{unknown[0]}: unknown key; allowed: init_from, numeric, optimizer_state")
        init_from = raw.get("init_from")
        if init_from is not None and not isinstance(init_from, (str, Path)):
            raise ConfigError(f"incremental.init_from: expected a run folder path, got {init_from!r}")
        return cls(
            init_from=Path(init_from) if init_from else None,
            numeric=_choice(NumericUpdate, raw.get("numeric", "keep"), "incremental.numeric"),
            optimizer_state=_choice(OptimizerState, raw.get("optimizer_state", "fresh"), "incremental.optimizer_state"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "init_from": None if self.init_from is None else str(self.init_from),
            "numeric": self.numeric.value,
            "optimizer_state": self.optimizer_state.value,
        }


def _choice(kind: type[enum.Enum], value: Any, key: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = " | ".join(member.value for member in kind)
        raise ConfigError(f"{key}: expected {allowed}, got {value!r}") from None


@dataclass(frozen=True)
class TableGrowth:
    """One schema table's rows before and after growth (``added`` rows got the fresh init)."""

    table: str
    rows_before: int
    rows_after: int
    features: tuple[str, ...]

    @property
    def added(self) -> int:
        return self.rows_after - self.rows_before


def grow_model(model: nn.Module, parent_state: Mapping[str, Tensor], *, parent: Preprocessor, child: Preprocessor) -> list[TableGrowth]:
    """Load ``parent_state`` into ``model`` (built on ``child``'s feature map), growing tables.

    Args:
        model: freshly built (and seeded) on ``child.feature_map()`` (pretrained tables built
            without their files: their rows come from here); changed in place.
        parent_state: the parent run's ``model.pt`` state dict.
        parent: the parent run's preprocessor; ``child`` the one refitted from it.

    Returns:
        The growth of each schema table the model holds, by table name.

    Raises:
        ConfigError: a parameter is missing, extra, or of another shape than the parent's (the
            model's params or a table's width changed), naming it and the features it serves.
    """
    tables = _table_parameters(model)
    state = model.state_dict(keep_vars=True)
    parent_rows = {name: info.num_rows for name, info in parent.feature_map().tables.items()}
    _check_keys(state, parent_state)
    merged: dict[str, Tensor] = {}
    growth: dict[str, TableGrowth] = {}
    for key, value in state.items():
        if _loss_weighting_key(key):
            old = parent_state.get(key)  # None: the child changed its loss weighting, which starts fresh
            merged[key] = value.detach() if old is None else old  # (MetaBalance's averages are sized at the first step)
            continue
        old = parent_state[key]
        if id(value) not in tables:
            if tuple(old.shape) != tuple(value.shape):
                raise ConfigError(
                    f"model parameter {key!r}: shape {tuple(old.shape)} in the parent run, {tuple(value.shape)} now; "
                    f"the model's params or the features it reads changed; {_RETRAIN}"
                )
            merged[key] = old
            continue
        name, collection, features = tables[id(value)]
        if old.dim() != 2 or old.shape[0] != parent_rows.get(name):
            raise ConfigError(
                f"table {name!r}: the parent's weights hold {tuple(old.shape)}, its preprocessor {parent_rows.get(name)} rows "
                "(model.pt and preprocessor.json of different runs?)"
            )
        merged[key] = _grown_table(key, value.detach(), old, name=name, features=features, collection=collection, child=child)
        growth[name] = TableGrowth(name, old.shape[0], value.shape[0], features)
    model.load_state_dict(merged)
    return sorted(growth.values(), key=lambda g: g.table)


def _table_parameters(model: nn.Module) -> dict[int, tuple[str, EmbeddingCollection, tuple[str, ...]]]:
    """``id(weight)`` of every table of every collection in ``model`` → (schema table name,
    its collection, the features it serves); a shared table appears once."""
    found: dict[int, tuple[str, EmbeddingCollection, tuple[str, ...]]] = {}
    for module in model.modules():
        if not isinstance(module, EmbeddingCollection):
            continue
        for feature in module.feature_names:
            if not is_embedded(module.feature(feature)):
                continue
            weight = module.table(feature).weight
            name = table_name(module.feature(feature))
            served = found[id(weight)][2] if id(weight) in found else ()
            found[id(weight)] = (name, module, tuple(dict.fromkeys((*served, feature))))
    return found


def _loss_weighting_key(key: str) -> bool:
    return key.split(".", 1)[0] in LOSS_WEIGHTING_STATE


def _check_keys(state: Mapping[str, Tensor], parent_state: Mapping[str, Tensor]) -> None:
    missing = [k for k in state if k not in parent_state and not _loss_weighting_key(k)]
    extra = [k for k in parent_state if k not in state and not _loss_weighting_key(k)]
    if missing or extra:
        what = f"new parameter(s) {missing[:5]}" if missing else f"the parent's parameter(s) {extra[:5]} are gone"
        raise ConfigError(f"model parameters differ from the parent run's: {what}; the model or its params changed; {_RETRAIN}")


def _grown_table(
    key: str,
    fresh: Tensor,
    old: Tensor,
    *,
    name: str,
    features: tuple[str, ...],
    collection: EmbeddingCollection,
    child: Preprocessor,
) -> Tensor:
    """``(R_new, D)``: the parent's ``(R_old, D)`` rows, then ``fresh``'s (a pretrained table's
    new rows from its vector file)."""
    where = f"feature {features[0]!r} (table {name!r}, parameter {key!r})"
    if fresh.is_meta:  # a sharded run's deferred table: each rank would grow its own shard
        raise ConfigError(f"{where}: --init-from does not grow sharded (deferred) tables yet; train it unsharded")
    if old.dim() != 2 or old.shape[1] != fresh.shape[1]:
        raise ConfigError(f"{where}: embedding width {tuple(old.shape)[1:]} in the parent run, {fresh.shape[1]} now; {_RETRAIN}")
    if old.shape[0] > fresh.shape[0]:
        raise ConfigError(f"{where}: {old.shape[0]} rows in the parent run, only {fresh.shape[0]} now (files of different runs?)")
    grown = fresh.clone()
    grown[: old.shape[0]] = old
    info = child.feature_map().tables[name]
    if info.pretrained and collection.width_override is None and fresh.shape[0] > old.shape[0]:
        grown[old.shape[0] :] = _file_rows(child, name, first_row=old.shape[0])
    return grown


def _file_rows(child: Preprocessor, name: str, *, first_row: int) -> Tensor:
    """``(R_new - first_row, D)``: the vector file's rows of the vocabulary's rows ``first_row..``."""
    from recstack.vector_io import read_vectors

    spec = child.schema.tables[name]
    vocabulary = child.lookups[name]
    assert isinstance(vocabulary, Vocabulary) and spec.pretrained
    table = read_vectors(spec.pretrained, spec.pretrained_format)
    keys = pa.array(vocabulary.keys[first_row - FIRST_VALUE_INDEX :]).cast(pa.string())
    rows = vocabulary_from_ids(table.ids).lookup(keys)  # (N,): file row + 2; the grown keys all come from the file
    assert not (rows == PADDING_INDEX).any()
    return torch.as_tensor(table.vectors[rows - FIRST_VALUE_INDEX], dtype=torch.float32)


def carry_optimizer_state(optimizers: Sequence[Optimizer], saved: Sequence[Mapping[str, Any]]) -> int:
    """Load the parent's optimiser states (its last checkpoint's) into ``optimizers``, each
    parameter's only where its shape is unchanged (a grown table starts fresh); the learning
    rate and other settings stay this run's. Returns how many parameters carried their state.

    Raises:
        ConfigError: the optimisers or their parameters do not correspond (another optimizer
            or ``sparse_embeddings`` setting).
    """
    if len(saved) != len(optimizers):
        raise ConfigError(
            f"incremental.optimizer_state: carry: the parent run stepped {len(saved)} optimizer(s), this run {len(optimizers)} "
            "(trainer.sparse_embeddings changed?); use optimizer_state: fresh"
        )
    carried = 0
    for optimizer, parent in zip(optimizers, saved):
        own = optimizer.state_dict()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved_sizes = [len(group["params"]) for group in parent["param_groups"]]
        if saved_sizes != [len(group["params"]) for group in own["param_groups"]]:
            raise ConfigError(
                f"incremental.optimizer_state: carry: {type(optimizer).__name__} holds parameter groups of sizes "
                f"{[len(g['params']) for g in own['param_groups']]}, the parent's {saved_sizes}; use optimizer_state: fresh"
            )
        state = {}
        for index, values in parent["state"].items():
            shapes = [tuple(v.shape) for v in values.values() if isinstance(v, Tensor) and v.dim() > 0]
            if all(shape == tuple(params[int(index)].shape) for shape in shapes):
                state[index] = values
        optimizer.load_state_dict({"state": state, "param_groups": own["param_groups"]})
        carried += len(state)
    return carried
