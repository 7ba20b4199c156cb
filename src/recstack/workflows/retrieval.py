"""Retrieval runs: the training task, item/user embedding, and full-corpus evaluation.

Evaluation ranks every catalogue item for each held-out row, excluding the items listed in the
row's exclusion columns and the items its user already saw (``seen``), and reports
Recall/HitRate/NDCG@K and MRR. The splits may be event tables: item columns come from the
catalogue (``recstack.data.catalog_join``), targets and exclusions from
``recstack.data.held_out``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from recstack.config import RunConfig, exclude_columns
from recstack.data.batch import Batch
from recstack.data.catalog_join import with_catalog
from recstack.data.held_out import HISTORY_COLUMN, HeldOut, held_out  # noqa: F401 (HeldOut: re-exported)
from recstack.data.loader import BatchStream, LoaderConfig
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, DataError
from recstack.evaluation.multi_interest import max_interest_scores
from recstack.evaluation.progress import progress_counter
from recstack.evaluation.retrieval_metrics import evaluate_ranked_scores
from recstack.export.retrieval_run import EMBED_BATCH_SIZE, retrieval_model  # noqa: F401 (EMBED_BATCH_SIZE re-exported)
from recstack.export.run_folder import LoadedRun
from recstack.models.retrieval_contract import RetrievalModel, require_retrieval_model
from recstack.tasks import Task, build_task
from recstack.tasks.retrieval import FrequencyAwareTask, InBatchSoftmaxTask, NegativeSamplingTask, count_item_rows
from recstack.training.config import TrainerConfig


def build_retrieval_task(config: RunConfig, model: nn.Module, preprocessor: Preprocessor) -> Task:
    """``task: {type: retrieval, loss: in_batch_softmax | pointwise | negative_sampling, ...}``:
    the task built from ``config.task.spec`` (the model's item-id feature filled in when the
    config names none), with the training split's item frequencies where it needs them."""
    retrieval = require_retrieval_model(model, where=f"task {config.task.spec.name!r} (model {config.model.name!r})")
    spec = config.task.spec
    has_item_feature = any(f.name == "item_feature" for f in dataclasses.fields(spec.params))
    if has_item_feature and spec.params.item_feature is None:  # type: ignore[attr-defined]
        spec = spec.replace(item_feature=retrieval.item_id_feature)
    task = build_task(spec)
    # frequencies of the training positives: the task's item column for two towers, the model's
    # next-item sequence for a sequence model
    counted = retrieval.positive_feature
    if isinstance(task, (InBatchSoftmaxTask, NegativeSamplingTask)) and counted == retrieval.item_id_feature:
        counted = task.item_feature  # the config may name the item column itself
    if isinstance(task, InBatchSoftmaxTask):
        if task.logq_correction:
            task.set_item_frequencies(_item_counts(config, preprocessor, counted))
    elif isinstance(task, FrequencyAwareTask) and task.needs_item_frequencies:
        task.set_item_frequencies(_item_counts(config, preprocessor, counted))
    elif isinstance(task, NegativeSamplingTask):
        task.set_item_frequencies(_item_counts(config, preprocessor, counted))
        if config.data.catalog is not None:
            _, catalogue = catalog_batch(preprocessor, config.data.catalog, item_feature_names(model), task.item_feature)
            retrieval.set_item_catalogue(catalogue)
    if retrieval.reads_item_catalogue:  # the model's per-item side features come from the catalogue
        if config.data.catalog is None:
            raise ConfigError(f"data.catalog: model {config.model.name!r} reads item side features from the item catalogue; name one")
        features = list(retrieval.item_catalogue_features)
        _, catalogue = catalog_batch(preprocessor, config.data.catalog, features, retrieval.item_id_feature)
        retrieval.set_item_catalogue(catalogue)
    return task


def _item_counts(config: RunConfig, preprocessor: Preprocessor, item_feature: str) -> torch.Tensor:
    """Exact item frequencies of the training split, one streaming pass (for log-Q and sampling)."""
    table = preprocessor.feature_map().table_of(preprocessor.schema[item_feature])
    stream = BatchStream(source=config.data.train, preprocessor=preprocessor, config=LoaderConfig(batch_size=EMBED_BATCH_SIZE), rank=0, world_size=1)
    return count_item_rows(stream, num_rows=table.num_rows, item_feature=item_feature)


def _item_id_feature(model: nn.Module) -> str:
    return _retrieval(model).item_id_feature


def item_feature_names(model: nn.Module) -> list[str]:
    """The features a retrieval model's item tower reads."""
    return list(_retrieval(model).item_feature_names)


def user_feature_names(model: nn.Module) -> list[str]:
    """The features a retrieval model's user tower reads."""
    return list(_retrieval(model).user_feature_names)


def _retrieval(model: nn.Module) -> RetrievalModel:
    return require_retrieval_model(model, where="retrieval evaluation")


def catalog_batch(preprocessor: Preprocessor, catalog: DataSource, features: list[str], item_feature: str) -> tuple[np.ndarray, Batch]:
    """Raw item ids and one batch holding the item features of every catalogue row."""
    column = preprocessor.schema[item_feature].column
    columns = list(dict.fromkeys([column, *preprocessor.schema.feature_columns(features)]))
    table = pa.concat_tables(pa.Table.from_batches([chunk.records]) for chunk in catalog.chunks(columns=columns))
    records = table.combine_chunks().to_batches()[0]
    ids = records.column(column).to_numpy(zero_copy_only=False)
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"catalogue item ids in column {column!r} must be unique", path=",".join(catalog.paths), column=column)
    return ids, preprocessor.transform(records, features=features, with_label=False)


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
    """``(U,)`` user ids (one per row of ``data``) and ``(U, D)`` user vectors (``(U, K, D)``
    for a model with K > 1 interests)."""
    model.eval()
    features = user_feature_names(model)
    columns = list(dict.fromkeys([user_column, *preprocessor.schema.feature_columns(features)]))
    device = next(model.parameters()).device
    ids, vectors = [], []
    for chunk in data.chunks(columns=columns):
        ids.append(chunk.records.column(user_column).to_numpy(zero_copy_only=False))
        batch = preprocessor.transform(chunk, features=features, with_label=False)
        for start in range(0, len(batch), EMBED_BATCH_SIZE):
            vectors.append(model.encode_user(batch.select(slice(start, start + EMBED_BATCH_SIZE)).to(device)).cpu())
    return np.concatenate(ids), torch.cat(vectors).numpy().astype(np.float32)


def retrieval_metrics(
    model: nn.Module,
    preprocessor: Preprocessor,
    *,
    split: DataSource,
    catalog: DataSource,
    seen: DataSource | None,
    ks: tuple[int, ...],
    user_column: str = "user_id",
    exclude_columns: Sequence[str] | None = None,
    exclude_delimiter: str | None = None,
    progress: bool = False,
    progress_file: Any = None,
    desc: str = "evaluate",
) -> dict[str, float]:
    """Full-corpus Recall/HitRate/NDCG@K and MRR of ``model`` on the held-out rows of ``split``.

    ``progress``: a bar counting the users scored toward the users evaluated (``desc``; drawn
    on ``progress_file``, stderr by default, only when it is a terminal).
    """
    item_column = preprocessor.schema[_item_id_feature(model)].column
    catalog_ids, item_vectors = embed_items(model, preprocessor, catalog)
    targets = held_out(
        split, seen, catalog_ids, user_column=user_column, item_column=item_column,
        exclude_columns=exclude_columns, delimiter=exclude_delimiter or _list_delimiter(preprocessor, exclude_columns),
    )  # fmt: skip
    _, user_vectors = embed_users(model, preprocessor, split, user_column=user_column)  # (rows, D)
    users = torch.from_numpy(user_vectors[targets.rows])  # (U, D) or (U, K, D): one per held-out row
    items_t = torch.from_numpy(item_vectors).T  # (D, N)
    with progress_counter(len(users), desc=desc, unit="user", enabled=progress, file=progress_file) as advance:

        def score_chunk(rows: np.ndarray) -> torch.Tensor:  # rows: (C,) contiguous, ascending
            advance(len(rows))
            # K interests: each searches the corpus, merged by max score (evaluation.multi_interest)
            return max_interest_scores(users[int(rows[0]) : int(rows[-1]) + 1], items_t)  # (C, N), a fresh matrix

        metrics = evaluate_ranked_scores(score_chunk, targets.targets, exclude=(targets.exclude_indptr, targets.exclude_indices), ks=ks)
    return {k: float(v) for k, v in metrics.items()}


def _list_delimiter(preprocessor: Preprocessor, columns: Sequence[str] | None) -> str:
    """The delimiter of the schema's sequence feature reading the first exclusion column, else ","."""
    column = columns[0] if columns else HISTORY_COLUMN
    for feature in preprocessor.schema.features:
        if getattr(feature, "column", None) == column and hasattr(feature, "delimiter"):
            return feature.delimiter
    return ","


def make_retrieval_evaluator(config: RunConfig, preprocessor: Preprocessor, *, split: str) -> Callable[[nn.Module], dict[str, float]]:
    if config.data.catalog is None:
        raise ConfigError("data.catalog: a retrieval run needs the item catalogue (one row per item)")
    source: DataSource = getattr(config.data, split)
    user_column = config.evaluation.group or config.schema.group or "user_id"
    evaluation = config.evaluation
    progress = TrainerConfig.from_dict(config.trainer).progress  # the training bar's switch
    return lambda model: retrieval_metrics(
        model, preprocessor, split=source, catalog=config.data.catalog, seen=config.data.seen, ks=evaluation.ks,
        user_column=user_column, exclude_columns=evaluation.exclude_columns, exclude_delimiter=evaluation.exclude_delimiter,
        progress=progress, desc=f"evaluate {split}",
    )  # fmt: skip


def evaluate_retrieval_run(
    run: LoadedRun, data: DataSource, *, catalog: DataSource | str | Sequence[str] | None = None, seen: DataSource | str | Sequence[str] | None = None
) -> dict[str, Any]:
    """Metrics of a retrieval run on an event file ``data``.

    Args:
        catalog: the items to rank (default: the run's ``data.catalog``).
        seen: items to exclude per user: a ``seen_item_ids`` list per user or one
            ``(user, item)`` pair per row, such as the training events (default: the run's
            ``data.seen``, if any).
    """
    config = run.config
    data_spec = config.get("data") or {}
    if catalog is None:
        catalog = data_spec.get("catalog") or _dataset_file(config, "items.parquet")
        if catalog is None:
            raise ConfigError("the run has no data.catalog: give the items to rank (evaluate --catalog ITEMS)")
    catalog = catalog if isinstance(catalog, DataSource) else DataSource.from_config(catalog, key="data.catalog")
    if seen is None:
        # a saved run config lists its resolved files: no seen file there means none was used
        seen = data_spec.get("seen") or (None if "train" in data_spec else _dataset_file(config, "seen.parquet"))
    seen = seen if seen is None or isinstance(seen, DataSource) else DataSource.from_config(seen, key="data.seen")
    evaluation = config.get("evaluation") or {}
    task = config.get("task") if isinstance(config.get("task"), Mapping) else {}
    item_column = run.preprocessor.schema[_item_id_feature(run.model)].column
    events = dict(catalog=None, item_column=item_column, target_column=task.get("target_column"))
    return retrieval_metrics(
        run.model, run.preprocessor, split=with_catalog(data, **events), catalog=catalog, seen=with_catalog(seen, **events),
        ks=tuple(evaluation.get("ks", (10, 50))),
        user_column=evaluation.get("group") or run.preprocessor.schema.group or "user_id",
        exclude_columns=exclude_columns(evaluation.get("exclude_columns"), key="evaluation.exclude_columns"),
        exclude_delimiter=evaluation.get("exclude_delimiter"),
    )  # fmt: skip


def _dataset_file(config: dict[str, Any], name: str) -> str | None:
    data = config.get("data") or {}
    if data.get("dataset") is None:
        return None
    return f"{data.get('dir', 'data/' + data['dataset'])}/{name}"
