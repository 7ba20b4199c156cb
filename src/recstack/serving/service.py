"""``RecommendationService``: recall top-N items with a two-tower index, rank them, return top-K.

Shape legend: B requests, D user/item vector dim, N recalled candidates per request, C
candidates of the whole batch (sum of each request's N), K items returned per request.

One ``recommend`` call serves a batch of requests with one user-tower forward, one index
search and one ranker forward::

    requests (B) --user rows--> retrieval preprocessor --> encode_user        (B, D)
             --index.search(N, exclude=history)-->   candidate ids            (B, N)
             --ranker batch: B user rows transformed, each candidate's row of the item-feature
               tensor table transformed once at start-up (RankerInputs)--> ranker probs (C,)
             --top K by probability--> responses (B)

Users without any history (unknown users, or ``history: []``) get the most popular training
items instead, flagged ``fallback="popular"``. The user tower and the ranker run in ONNX Runtime
where their export reproduces PyTorch (``UserEncoder``, ``RankerScorer``), else eagerly. ``swap`` replaces both models and the index
while requests are being served: the new state is built completely, then one reference is
reassigned, so a request sees either the old models or the new ones, never a mix.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from recstack.data.batch import Batch
from recstack.data.sources import DataSource
from recstack.errors import ConfigError
from recstack.export.run_folder import LoadedRun, load_run, task_from_run
from recstack.retrieval.index import VectorIndex, create_index, load_index
from recstack.retrieval.index.ids import IdType, found_mask, id_type_of
from recstack.retrieval.multi_interest import search_interests
from recstack.schema import Side
from recstack.serving.catalogue import HISTORY_COLUMNS, Catalogue
from recstack.serving.feature_table import FeatureTable, latest_rows, read_table
from recstack.serving.limits import ServingLimits
from recstack.serving.ranker_inputs import RankerInputs
from recstack.serving.blend import Blend
from recstack.serving.ranker_scorer import RankerScorer
from recstack.serving.types import DEFAULT_USER_CACHE, DeadlineExceeded, RecommendedItem, RecommendRequest, RecommendResponse, RequestError
from recstack.serving.user_cache import UserCache, UserState
from recstack.serving.user_rows import assemble_user_rows
from recstack.serving.user_encoder import UserEncoder
from recstack.tasks import Task, TaskType
from recstack.export.retrieval_run import EMBED_BATCH_SIZE, item_id_column, retrieval_model

@dataclass(frozen=True)
class ServingModels:
    """Everything tied to one (retrieval run, ranking run) pair; swapped as a whole."""

    retrieval: LoadedRun
    ranker: LoadedRun
    index: VectorIndex
    user_features: list[str]  # the retrieval user tower's features
    retrieval_columns: list[str]  # raw columns those features read
    ranker_columns: list[str]  # raw columns the ranker reads
    item_side: FeatureTable  # catalogue + the latest item aggregates the ranker needs
    user_side: FeatureTable  # users table + the latest user aggregates the ranker needs
    ranker_inputs: RankerInputs  # the ranker's item features, transformed once for the catalogue
    user_encoder: UserEncoder | None = None  # the user tower as served (ONNX Runtime when exact)
    ranker_scorer: RankerScorer | None = None  # the ranker as served (ONNX Runtime when it exports, exact)
    user_cache: UserCache = field(default_factory=UserCache)  # stored users' vectors and ranker rows


class RecommendationService:
    """Two-stage recommendations over a catalogue. Build once, call ``recommend`` from any thread.

    Args:
        retrieval_run / ranking_run: run folders (or already loaded runs).
        catalogue: items, users and histories (``Catalogue.from_files``).
        index: a saved index folder; None builds one at start-up from the item tower.
        backend / kind: the index built when ``index`` is None (faiss flat by default).
        onnx_runtime: serve the user tower and the ranker through ONNX Runtime where their
            export matches PyTorch within 1e-5 (``UserEncoder``, ``RankerScorer``); False keeps
            eager PyTorch for both.
        user_cache_size: stored users whose user vector and ranker row are kept between
            requests (``UserCache``; 0 turns the cache off).
        limits: per-request bounds (``ServingLimits``): ``recommend`` refuses requests beyond
            them and ranks ``limits.chunk_rows`` (user, candidate) rows per ranker pass.

    Example::

        service = RecommendationService(retrieval_run="runs/ml100k_dssm", ranking_run="runs/ml100k_din",
                                        catalogue=Catalogue.from_files(catalog="items.parquet", users=..., history=...))
        [response] = service.recommend([RecommendRequest(user_id=1, k=10)])
    """

    def __init__(self, *, retrieval_run: str | Path | LoadedRun, ranking_run: str | Path | LoadedRun, catalogue: Catalogue, index: str | Path | None = None, backend: str = "faiss", kind: str = "flat", onnx_runtime: bool = True, user_cache_size: int = DEFAULT_USER_CACHE, limits: ServingLimits | None = None, blend: Blend | None = None) -> None:
        self.catalogue = catalogue
        self.blend = blend  # a multi-task ranker's rank score from its heads (None: product of its targets')
        self.limits = limits or ServingLimits()
        self.onnx_runtime = onnx_runtime
        self.user_cache_size = user_cache_size
        self.backend, self.kind = backend, kind
        self._swap_lock = threading.Lock()
        self._models = self._load(retrieval_run, ranking_run, index)

    # ---- model lifecycle ----------------------------------------------------------------------
    @property
    def models(self) -> ServingModels:
        return self._models

    @property
    def _task(self) -> Task:
        """The current ranker's task, as its run folder saved it."""
        return task_from_run(self._models.ranker)

    def swap(self, retrieval_run: str | Path | LoadedRun, ranking_run: str | Path | LoadedRun, *, index: str | Path | None = None) -> None:
        """Load new models (and index) completely, then replace the old ones in one assignment."""
        with self._swap_lock:
            models = self._load(retrieval_run, ranking_run, index)
            self._models = models  # a single reference: in-flight requests keep the state they read

    @torch.no_grad()
    def _load(self, retrieval_run: Any, ranking_run: Any, index_path: str | Path | None) -> ServingModels:
        retrieval = retrieval_run if isinstance(retrieval_run, LoadedRun) else load_run(retrieval_run)
        ranker = ranking_run if isinstance(ranking_run, LoadedRun) else load_run(ranking_run)
        retrieval_model(retrieval)  # ConfigError naming the run folder for a ranking run
        if ranker.task.type is not TaskType.BINARY:
            raise ValueError(f"{ranker.paths.root} is not a ranking run (its task {ranker.task.name!r} is a {ranker.task.type.value} task)")
        self._check_item_column(retrieval)
        if index_path is not None:
            index = load_index(index_path)
        else:
            ids, vectors = _embed_catalogue(retrieval, self.catalogue.items)
            index = create_index(self.backend, dim=vectors.shape[1], **({"kind": self.kind} if self.backend == "faiss" else {}))
            index.add(ids, vectors)  # the catalogue's own ids: ints or strings
        user_features = list(retrieval_model(retrieval).user_feature_names)
        retrieval_columns = retrieval.preprocessor.schema.feature_columns(user_features)
        ranker_columns = [c for c in ranker.preprocessor.input_columns(with_label=False) if c != ranker.preprocessor.schema.label]
        item_side, user_side = self._with_aggregates(ranker, ranker_columns)
        sides = _column_sides(ranker)
        item_columns = [c for c in ranker_columns if c in item_side.columns and sides.get(c) is not Side.USER]
        ranker_inputs = RankerInputs(ranker=ranker, items=item_side, item_columns=item_columns)
        models = ServingModels(retrieval, ranker, index, user_features, retrieval_columns, ranker_columns, item_side, user_side, ranker_inputs)
        users, pairs = self._examples(models)
        user_encoder = UserEncoder(retrieval.model, example=users, onnx=self.onnx_runtime)
        ranker_scorer = RankerScorer(model=ranker.model, task=task_from_run(ranker), example=pairs, onnx=self.onnx_runtime, blend=self.blend)
        return replace(models, user_encoder=user_encoder, ranker_scorer=ranker_scorer, user_cache=UserCache(self.user_cache_size))

    def _check_item_column(self, retrieval: LoadedRun) -> None:
        """The catalogue must be keyed by the retrieval run's item-id column (``post_id`` in seed
        001): the index, histories, exclusions and responses all carry that column's ids."""
        try:
            column = item_id_column(retrieval, self.catalogue.items.table)
        except (ConfigError, KeyError):  # the run leaves it open and the catalogue cannot tell
            return
        if column != self.catalogue.items.key:
            raise ConfigError(f"the catalogue is keyed by {self.catalogue.items.key!r}, but the retrieval run {retrieval.paths.root} keys its items by {column!r}: build it with Catalogue.from_files(..., item_column={column!r})")

    def _examples(self, models: ServingModels, users: int = 16, items: int = 50) -> tuple[Batch, Batch]:
        """Up to ``users`` stored users' transformed rows, and the ranker batch of each of them
        with the first ``items`` catalogue items: what the exported forms are checked on."""
        requests = [RecommendRequest(user_id=_plain(u)) for u in self.catalogue.users.keys[:users]]
        rows = self._user_rows(models, requests, [self._history(r) for r in requests])
        user_batch = models.retrieval.preprocessor.transform(rows.select(models.retrieval_columns), features=models.user_features, with_label=False)
        item_ids = models.item_side.keys[:items]
        owner = np.repeat(np.arange(len(requests)), len(item_ids))  # (B * items,)
        return user_batch, models.ranker_inputs.batch(rows, owner, np.tile(item_ids, len(requests)))

    def _with_aggregates(self, ranker: LoadedRun, columns: list[str]) -> tuple[FeatureTable, FeatureTable]:
        """Item and user columns the ranker needs beyond the catalogue and users tables (counts,
        rates): the latest value per item / user in the ranker's training data, if it is there."""
        items, users = self.catalogue.items, self.catalogue.users
        sides = _column_sides(ranker)
        missing_item = [c for c in columns if sides.get(c) is Side.ITEM and c not in items.columns]
        missing_user = [c for c in columns if sides.get(c) is Side.USER and c not in users.columns and c not in HISTORY_COLUMNS]
        train = (ranker.config.get("data") or {}).get("train") or _dataset_train(ranker.config)
        if not (missing_item or missing_user) or not train or not all(Path(p).exists() for p in _paths(train)):
            return items, users
        source = DataSource.from_config(train, key="ranker train")
        available = set(source.columns_of(source.files()[0]))
        missing_item = [c for c in missing_item if c in available]
        missing_user = [c for c in missing_user if c in available]
        time = "timestamp" if "timestamp" in available else None
        table = read_table(source, [items.key, users.key, *missing_item, *missing_user, *([time] if time else [])])
        if missing_item:
            items = items.merged(latest_rows(table, key=items.key, columns=missing_item, time_column=time))
        if missing_user:
            users = users.merged(latest_rows(table, key=users.key, columns=missing_user, time_column=time))
        return items, users

    # ---- serving -------------------------------------------------------------------------------
    @torch.inference_mode()
    def recommend(self, requests: Sequence[RecommendRequest], *, deadline: float | None = None) -> list[RecommendResponse]:
        """Top-K items for each request, in request order.

        ``deadline``: a ``time.monotonic()`` instant; past it ``DeadlineExceeded`` is raised at
        the next ranker chunk (None: no deadline). Requests beyond ``limits``: ``RequestError``.
        """
        models = self._models  # read once: a concurrent swap does not change this batch
        for request in requests:
            self.limits.check_request(request)
            self._check_features(models, request)
        histories = [self._history(request) for request in requests]
        personal = [b for b, history in enumerate(histories) if len(history) > 0]
        responses: list[RecommendResponse | None] = [None] * len(requests)
        for b in set(range(len(requests))) - set(personal):
            responses[b] = self._popular(requests[b], histories[b])
        if personal:
            chosen = [requests[b] for b in personal]
            for b, response in zip(personal, self._two_stage(models, chosen, [histories[b] for b in personal], deadline)):
                responses[b] = response
        return responses  # type: ignore[return-value]

    def _two_stage(self, models: ServingModels, requests: list[RecommendRequest], histories: list[np.ndarray], deadline: float | None) -> list[RecommendResponse]:
        user_vectors, ranker_users = self._users(models, requests, histories)  # (B, D) or (B, K, D), B rows
        n = max(r.candidates for r in requests)
        exclude = [h if r.exclude_seen else np.zeros(0, np.int64) for r, h in zip(requests, histories)]
        # K-interest users (B, K, D): K searches each, merged per user by max score, deduped
        recall_scores, candidate_ids = search_interests(models.index, user_vectors, n, exclude=exclude)  # (B, N)
        limit = np.array([r.candidates for r in requests])[:, None]
        keep = found_mask(candidate_ids) & (np.arange(n)[None, :] < limit)  # (B, N) padding is -1 or None
        owner = np.nonzero(keep)[0]  # (C,) request of each candidate
        flat_ids, flat_recall = candidate_ids[keep], recall_scores[keep]  # (C,)
        probs, heads = self._rank(models, ranker_users, owner, flat_ids, deadline)  # (C,), {head: (C,)}
        responses = []
        bounds = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        for b, request in enumerate(requests):
            start, stop = bounds[b], bounds[b + 1]
            order = start + np.argsort(-probs[start:stop], kind="stable")[: request.k]  # ties keep recall order
            reason = _nothing_left(len(models.index), request, histories[b]) if stop == start else None
            head_scores = {name: values[order] for name, values in heads.items()}
            responses.append(self._response(request, flat_ids[order], flat_recall[order], probs[order], reason=reason, heads=head_scores))
        return responses

    def _users(self, models: ServingModels, requests: list[RecommendRequest], histories: list[np.ndarray]) -> tuple[np.ndarray, Batch]:
        """``(B, D)`` user vectors and the ranker's B transformed user rows; a stored user who
        overrides nothing is served from ``models.user_cache`` when there."""
        cache = models.user_cache
        cacheable = cache.max_users > 0
        keys = [r.user_id if cacheable and r.user_id is not None and not r.features and r.history is None else None for r in requests]
        states: list[UserState | None] = [cache.get(key) if key is not None else None for key in keys]
        missing = [b for b, state in enumerate(states) if state is None]
        if missing:
            chosen = [requests[b] for b in missing]
            user_rows = self._user_rows(models, chosen, [histories[b] for b in missing])  # M rows
            batch = models.retrieval.preprocessor.transform(user_rows.select(models.retrieval_columns).to_batches()[0], features=models.user_features, with_label=False)
            vectors = models.user_encoder(batch) if models.user_encoder else models.retrieval.model.encode_user(batch).numpy()  # (M, D)
            ranker_users = models.ranker_inputs.user_batch(user_rows)  # M rows
            if len(missing) == len(requests) and not any(k is not None for k in keys):
                return vectors, ranker_users  # nothing to cache or to merge
            for j, b in enumerate(missing):
                states[b] = UserState.of_row(vectors, ranker_users, j)
                if keys[b] is not None:
                    cache.put(keys[b], states[b])
        return np.stack([s.vector for s in states]), Batch.concat(s.ranker_row for s in states)  # type: ignore[union-attr]

    def _rank(self, models: ServingModels, ranker_users: Batch, owner: np.ndarray, item_ids: np.ndarray, deadline: float | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(C,)`` ranker scores of each (user row ``owner[c]``, item ``item_ids[c]``) pair: the
        probability, or a multi-task ranker's blend, with its ``{head: (C,)}`` (else empty).

        Scored ``limits.chunk_rows`` pairs at a time: the ranker's batch (every feature of its
        rows, history sequences included) and its activations never exceed one chunk, whatever
        C is, and the deadline is checked before each chunk.
        """
        probs = np.empty(len(item_ids), np.float32)  # (C,)
        heads: dict[str, np.ndarray] = {}  # a multi-task ranker's scores per head, (C,) each
        step = self.limits.chunk_rows
        for start in range(0, len(item_ids), step):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(self.limits.deadline_ms)
            batch = models.ranker_inputs.pairs(ranker_users, owner[start : start + step], item_ids[start : start + step])  # (<= chunk, ...)
            if models.ranker_scorer is not None and models.ranker_scorer.multi_head:
                probs[start : start + step], chunk_heads = models.ranker_scorer.score(batch)
                for name, values in chunk_heads.items():
                    heads.setdefault(name, np.empty(len(item_ids), np.float32))[start : start + step] = values
            elif models.ranker_scorer is not None:
                probs[start : start + step] = models.ranker_scorer(batch)
            else:
                probs[start : start + step] = task_from_run(models.ranker).predict(models.ranker.model, batch).float().numpy()
        return probs, heads

    def _user_rows(self, models: ServingModels, requests: list[RecommendRequest], histories: list[np.ndarray]) -> pa.Table:
        """One row per request holding every user-side column either model reads."""
        item_columns = {c for c in self.catalogue.items.columns if c not in models.retrieval_columns}
        return assemble_user_rows(
            requests,
            histories,
            users=models.user_side,
            items=self.catalogue.items,
            columns=list(dict.fromkeys(models.retrieval_columns + models.ranker_columns)),
            per_candidate=item_columns | {c for c, side in _column_sides(models.ranker).items() if side is Side.ITEM},
        )

    def _history(self, request: RecommendRequest) -> np.ndarray:
        item_type = self.catalogue.items.keys.dtype
        if request.history is not None:
            try:
                history = np.asarray(list(request.history), dtype=item_type if item_type != object else object)
                if item_type == object and len(history) and id_type_of(history) is not IdType.STR:
                    raise TypeError("a string-keyed catalogue takes string ids")
                return history
            except (TypeError, ValueError):
                raise RequestError("item ids must match the catalogue's id type", field="history") from None
        stored = self.catalogue.histories.get(request.user_id)
        return stored if stored is not None else np.zeros(0, dtype=item_type)

    def _check_features(self, models: ServingModels, request: RecommendRequest) -> None:
        allowed = self.user_feature_columns(models)
        for name in request.features:
            if name not in allowed:
                raise RequestError(f"unknown user feature; known: {sorted(allowed)}", field=f"features.{name}")

    def user_feature_columns(self, models: ServingModels | None = None) -> set[str]:
        """Raw user columns a request may set in ``features``."""
        models = models or self._models
        sides = _column_sides(models.ranker) | _column_sides(models.retrieval)
        return {c for c in models.retrieval_columns + models.ranker_columns if sides.get(c) is Side.USER and c not in HISTORY_COLUMNS and c != self.catalogue.users.key}

    def _popular(self, request: RecommendRequest, history: np.ndarray) -> RecommendResponse:
        ids, shares = self.catalogue.histories.popular()
        if request.exclude_seen and len(history):
            keep = ~np.isin(ids, history)
            ids, shares = ids[keep], shares[keep]
        ids, shares = ids[: request.k], shares[: request.k]
        reason = None if len(ids) else "no popular items to fall back on: the stored histories are empty"
        return self._response(request, ids, shares, None, fallback="popular", reason=reason)

    def _response(self, request: RecommendRequest, ids: np.ndarray, recall: np.ndarray, probs: np.ndarray | None, fallback: str | None = None, reason: str | None = None, heads: Mapping[str, np.ndarray] | None = None) -> RecommendResponse:
        titles, genres = self.describe(ids)
        items = [
            RecommendedItem(
                item_id=_plain(item_id),
                title=titles[r],
                genres=genres[r],
                recall_score=float(recall[r]),
                rank_score=None if probs is None else float(probs[r]),
                rank=r + 1,
                head_scores={name: float(values[r]) for name, values in heads.items()} if heads else None,
            )
            for r, item_id in enumerate(ids)
        ]
        return RecommendResponse(user_id=_plain(request.user_id), items=items, fallback=fallback, reason=reason)

    def describe(self, ids: np.ndarray | Sequence[Any]) -> tuple[list[str | None], list[list[str]]]:
        """Titles and genre lists of catalogue items (None / [] where unknown)."""
        items = self.catalogue.items
        rows = items.positions(ids)
        n = len(rows)
        titles = items.take(rows, [self.catalogue.title_column]).column(0).to_pylist() if self.catalogue.title_column in items.columns else [None] * n
        genres = items.take(rows, [self.catalogue.genres_column]).column(0).to_pylist() if self.catalogue.genres_column in items.columns else [None] * n
        return titles, [g if isinstance(g, list) else ([] if g is None else [g]) for g in genres]


def _nothing_left(indexed: int, request: RecommendRequest, history: np.ndarray) -> str:
    """Why a personalised request got no candidate at all (its ``reason``)."""
    if indexed == 0:
        return "the index holds no items"
    if request.exclude_seen:
        return f"every candidate is excluded: the history ({len(history)} items) covers all {indexed} indexed items and exclude_seen is true"
    return "the index returned no candidates"


def _column_sides(run: LoadedRun) -> dict[str, Side]:
    sides: dict[str, Side] = {}
    for feature in run.preprocessor.schema.features:
        for column in feature.source_columns:
            sides.setdefault(column, feature.side)
    return sides


def _embed_catalogue(run: LoadedRun, items: FeatureTable) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` item ids and ``(N, D)`` item-tower vectors of every catalogue row."""
    features = list(retrieval_model(run).item_feature_names)
    columns = run.preprocessor.schema.feature_columns(features)
    vectors = []
    for start in range(0, len(items), EMBED_BATCH_SIZE):
        records = items.table.select(columns).slice(start, EMBED_BATCH_SIZE).combine_chunks().to_batches()[0]
        vectors.append(run.model.encode_item(run.preprocessor.transform(records, features=features, with_label=False)))  # (b, D)
    return items.keys, torch.cat(vectors).numpy().astype(np.float32)  # (N,), (N, D)


def _dataset_train(config: Mapping[str, Any]) -> str | None:
    data = config.get("data") or {}
    if data.get("dataset") is None:
        return None
    return f"{data.get('dir', 'data/' + data['dataset'])}/train.parquet"


def _paths(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, Mapping):
        return list(_paths(spec.get("path") or spec.get("paths") or []))
    return [str(p) for p in spec]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
