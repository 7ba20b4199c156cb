"""Retrieval runs: the training task, item/user embedding, and full-corpus evaluation.

Evaluation ranks every catalogue item for each held-out user, excluding the items the user
already saw in training (``seen``), and reports Recall/HitRate/NDCG@K and MRR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from recstack.config import RunConfig
from recstack.data.batch import Batch
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, DataError
from recstack.evaluation.retrieval_metrics import evaluate_retrieval
from recstack.export.run_folder import LoadedRun
from recstack.tasks.base import Task
from recstack.tasks.retrieval import InBatchSoftmaxTask, NegativeSamplingTask, PointwiseTask, count_item_rows

EMBED_BATCH_SIZE = 4096
_LOSSES = ("in_batch_softmax", "pointwise", "negative_sampling")


def build_retrieval_task(config: RunConfig, model: nn.Module, preprocessor: Preprocessor) -> Task:
    """``task: {type: retrieval, loss: in_batch_softmax | pointwise | negative_sampling, ...}``."""
    params = dict(config.task.params)
    loss = params.pop("loss", "in_batch_softmax")
    if loss not in _LOSSES:
        raise ConfigError(f"task.loss: must be one of {list(_LOSSES)}, got {loss!r}")
    item_feature = _item_id_feature(model)
    try:
        if loss == "pointwise":
            return PointwiseTask(**params)
        if loss == "in_batch_softmax":
            task = InBatchSoftmaxTask(item_feature=item_feature, **params)
            if task.logq_correction:
                task.set_item_frequencies(_item_counts(config, preprocessor, item_feature))
            return task
        task = NegativeSamplingTask(item_feature=item_feature, **params)
    except TypeError as error:
        raise ConfigError(f"task: {error}") from None
    task.set_item_frequencies(_item_counts(config, preprocessor, item_feature))
    if hasattr(model, "set_item_catalogue") and config.data.catalog is not None:
        _, catalogue = catalog_batch(preprocessor, config.data.catalog, item_feature_names(model), item_feature)
        model.set_item_catalogue(catalogue)
    return task


def _item_counts(config: RunConfig, preprocessor: Preprocessor, item_feature: str) -> torch.Tensor:
    """Exact item frequencies of the training split, one streaming pass (for log-Q and sampling)."""
    table = preprocessor.feature_map().table_of(preprocessor.schema[item_feature])
    stream = BatchStream(source=config.data.train, preprocessor=preprocessor, config=LoaderConfig(batch_size=EMBED_BATCH_SIZE), rank=0, world_size=1)
    return count_item_rows(stream, num_rows=table.num_rows, item_feature=item_feature)


def _item_id_feature(model: nn.Module) -> str:
    return getattr(getattr(model, "params", None), "item_id_feature", "item_id")


def item_feature_names(model: nn.Module) -> list[str]:
    tower = model.item_tower()
    return list(getattr(tower, "features", None) or tower.input_names)


def user_feature_names(model: nn.Module) -> list[str]:
    return list(model.user_tower().features)


def catalog_batch(preprocessor: Preprocessor, catalog: DataSource, features: list[str], item_feature: str) -> tuple[np.ndarray, Batch]:
    """Raw item ids and one batch holding the item features of every catalogue row."""
    column = preprocessor.schema[item_feature].column
    columns = list(dict.fromkeys([column] + [c for f in features for c in _columns(preprocessor, f)]))
    table = pa.concat_tables(pa.Table.from_batches([chunk.records]) for chunk in catalog.chunks(columns=columns))
    records = table.combine_chunks().to_batches()[0]
    ids = records.column(column).to_numpy(zero_copy_only=False)
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"catalogue item ids in column {column!r} must be unique", path=",".join(catalog.paths), column=column)
    return ids, preprocessor.transform(records, features=features, with_label=False)


def _columns(preprocessor: Preprocessor, feature: str) -> list[str]:
    spec = preprocessor.schema[feature]
    return list(getattr(spec, "columns", ()) or [spec.column])


@torch.no_grad()
def embed_items(model: nn.Module, preprocessor: Preprocessor, catalog: DataSource) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` raw item ids and ``(N, D)`` float32 item vectors from the item tower."""
    model.eval()
    ids, batch = catalog_batch(preprocessor, catalog, item_feature_names(model), _item_id_feature(model))
    device = next(model.parameters()).device
    vectors = [model.encode_item(batch.select(slice(s, s + EMBED_BATCH_SIZE)).to(device)).cpu() for s in range(0, len(ids), EMBED_BATCH_SIZE)]
    return ids, torch.cat(vectors).numpy().astype(np.float32)


@torch.no_grad()
def embed_users(model: nn.Module, preprocessor: Preprocessor, data: DataSource, *, user_column: str = "user_id") -> tuple[np.ndarray, np.ndarray]:
    """``(U,)`` user ids (one per row of ``data``) and ``(U, D)`` user vectors."""
    model.eval()
    features = user_feature_names(model)
    columns = list(dict.fromkeys([user_column] + [c for f in features for c in _columns(preprocessor, f)]))
    device = next(model.parameters()).device
    ids, vectors = [], []
    for chunk in data.chunks(columns=columns):
        ids.append(chunk.records.column(user_column).to_numpy(zero_copy_only=False))
        batch = preprocessor.transform(chunk, features=features, with_label=False)
        for start in range(0, len(batch), EMBED_BATCH_SIZE):
            vectors.append(model.encode_user(batch.select(slice(start, start + EMBED_BATCH_SIZE)).to(device)).cpu())
    return np.concatenate(ids), torch.cat(vectors).numpy().astype(np.float32)


@dataclass(frozen=True)
class HeldOut:
    """Per evaluated user: the target's catalogue index and the catalogue indices to exclude."""

    user_ids: np.ndarray  # (U,)
    targets: np.ndarray  # (U,)
    exclude_indptr: np.ndarray  # (U + 1,)
    exclude_indices: np.ndarray


def held_out(
    split: DataSource,
    seen: DataSource | None,
    catalog_ids: np.ndarray,
    *,
    user_column: str,
    item_column: str,
    seen_column: str = "seen_item_ids",
    history_column: str | None = "hist_item_ids",
) -> HeldOut:
    """Targets and exclusions of every evaluated row.

    Excluded: the user's training items (``seen``) and the items in the row's own history
    column, so the validation positive is not recommended again when scoring test.
    """
    columns = [user_column, item_column]
    if history_column and history_column in split.columns_of(split.files()[0]):
        columns.append(history_column)
    rows = pa.concat_tables(pa.Table.from_batches([c.records]) for c in split.chunks(columns=columns))
    users = rows.column(user_column).to_numpy()
    order = np.argsort(catalog_ids, kind="stable")
    targets = _positions(catalog_ids, order, rows.column(item_column).to_numpy())
    known = targets >= 0  # a held-out item missing from the catalogue cannot be ranked
    users, targets = users[known], targets[known]
    owners: list[np.ndarray] = []
    items: list[np.ndarray] = []
    if seen is not None:
        table = pa.concat_tables(pa.Table.from_batches([c.records]) for c in seen.chunks(columns=[user_column, seen_column]))
        seen_users = table.column(user_column).to_numpy()
        user_order = np.argsort(seen_users, kind="stable")
        where = np.minimum(np.searchsorted(seen_users, users, sorter=user_order), len(seen_users) - 1)
        seen_rows = np.where(seen_users[user_order[where]] == users, user_order[where], -1)
        owner, values = _list_entries(table.column(seen_column).combine_chunks())
        # entries of seen row r belong to every evaluated user whose seen row is r
        evaluated_of_seen = np.full(len(seen_users), -1)
        evaluated_of_seen[seen_rows[seen_rows >= 0]] = np.flatnonzero(seen_rows >= 0)
        mapped = evaluated_of_seen[owner]
        owners.append(mapped[mapped >= 0])
        items.append(values[mapped >= 0])
    if len(columns) == 3:
        owner, values = _list_entries(rows.column(history_column).combine_chunks())
        position = np.full(len(known), -1)
        position[np.flatnonzero(known)] = np.arange(len(users))
        mapped = position[owner]
        owners.append(mapped[mapped >= 0])
        items.append(values[mapped >= 0])
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    indices = np.zeros(0, dtype=np.int64)
    if owners:
        owner = np.concatenate(owners)
        positions = _positions(catalog_ids, order, np.concatenate(items))
        keep = positions >= 0
        owner, positions = owner[keep], positions[keep]
        by_owner = np.lexsort((positions, owner))
        owner, positions = owner[by_owner], positions[by_owner]
        distinct = np.ones(len(owner), dtype=bool)
        distinct[1:] = (owner[1:] != owner[:-1]) | (positions[1:] != positions[:-1])
        owner, indices = owner[distinct], positions[distinct]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(users)))])
    return HeldOut(users, targets, indptr, indices)


def _list_entries(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row index and value of every entry of a list column."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(lists)), lengths)
    return owner, pc.list_flatten(lists).to_numpy(zero_copy_only=False)


def _positions(sorted_source: np.ndarray, order: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each wanted id in ``sorted_source`` (unsorted, with ``order`` sorting it), or -1."""
    where = np.minimum(np.searchsorted(sorted_source, wanted, sorter=order), len(order) - 1)
    found = sorted_source[order[where]] == wanted
    return np.where(found, order[where], -1)


def retrieval_metrics(model: nn.Module, preprocessor: Preprocessor, *, split: DataSource, catalog: DataSource, seen: DataSource | None, ks: tuple[int, ...], user_column: str = "user_id") -> dict[str, float]:
    """Full-corpus Recall/HitRate/NDCG@K and MRR of ``model`` on one held-out row per user."""
    item_column = preprocessor.schema[_item_id_feature(model)].column
    catalog_ids, item_vectors = embed_items(model, preprocessor, catalog)
    targets = held_out(split, seen, catalog_ids, user_column=user_column, item_column=item_column)
    user_ids, user_vectors = embed_users(model, preprocessor, split, user_column=user_column)
    keep = np.isin(user_ids, targets.user_ids)
    metrics = evaluate_retrieval(
        torch.from_numpy(user_vectors[keep]),
        torch.from_numpy(item_vectors),
        targets.targets,
        exclude=(targets.exclude_indptr, targets.exclude_indices),
        ks=ks,
    )
    return {k: float(v) for k, v in metrics.items()}


def make_retrieval_evaluator(config: RunConfig, preprocessor: Preprocessor, *, split: str) -> Callable[[nn.Module], dict[str, float]]:
    if config.data.catalog is None:
        raise ConfigError("data.catalog: a retrieval run needs the item catalogue (one row per item)")
    source: DataSource = getattr(config.data, split)
    user_column = config.evaluation.group or config.schema.group or "user_id"
    return lambda model: retrieval_metrics(
        model, preprocessor, split=source, catalog=config.data.catalog, seen=config.data.seen, ks=config.evaluation.ks, user_column=user_column
    )


def evaluate_retrieval_run(run: LoadedRun, data: DataSource) -> dict[str, Any]:
    config = run.config
    catalog = DataSource.from_config(config["data"].get("catalog") or _dataset_file(config, "items.parquet"), key="data.catalog")
    seen_spec = config["data"].get("seen") or _dataset_file(config, "seen.parquet")
    seen = DataSource.from_config(seen_spec, key="data.seen") if seen_spec else None
    ks = tuple((config.get("evaluation") or {}).get("ks", (10, 50)))
    user_column = (config.get("evaluation") or {}).get("group") or run.preprocessor.schema.group or "user_id"
    return retrieval_metrics(run.model, run.preprocessor, split=data, catalog=catalog, seen=seen, ks=ks, user_column=user_column)


def _dataset_file(config: dict[str, Any], name: str) -> str | None:
    data = config.get("data") or {}
    if data.get("dataset") is None:
        return None
    return f"{data.get('dir', 'data/' + data['dataset'])}/{name}"
