"""A retrieval run as export, indexing and serving read it: its model under the retrieval
contract, and the item-id feature keying its items.

Below ``workflows`` and ``serving`` so both use it (serving imports no workflow).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from recstack.errors import ConfigError
from recstack.export.run_folder import LoadedRun, load_run
from recstack.models.retrieval_contract import RetrievalModel, require_retrieval_model
from recstack.schema import Side
from recstack.schema.specs import CategoricalFeature

__all__ = ["EMBED_BATCH_SIZE", "item_id_column", "item_id_feature", "load_retrieval_run", "retrieval_model"]

EMBED_BATCH_SIZE = 4096  # items or users embedded per forward


def retrieval_model(run: LoadedRun) -> RetrievalModel:
    """The run's model as a :class:`RetrievalModel`; ConfigError naming the run folder and the
    model when it is a ranking run."""
    folder = run.paths.root if run.paths is not None else "the run"
    name = run.model_spec.get("name") or type(run.model).__name__
    return require_retrieval_model(run.model, where=f"{folder} (model {name!r})")


def load_retrieval_run(run_dir: str | Path) -> LoadedRun:
    """:func:`load_run`, refused (ConfigError) unless the run is a retrieval run."""
    run = load_run(run_dir)
    retrieval_model(run)
    return run


def item_id_feature(run: LoadedRun, table: pa.Table | None = None) -> str:
    """The run's item-id feature, read from the run.

    In order: the model's ``item_id_feature`` when the schema has it; the item-side
    categorical feature reading the task's ``target_column``; the only item-side categorical
    feature; else, given the item rows ``table``, the item-side categorical feature whose
    column has the most distinct values there (an item's other attributes, such as its topic,
    are functions of its id, so none has more values than the id). Anything else is a
    ConfigError naming the candidates and the key to set.
    """
    model = retrieval_model(run)
    schema = run.preprocessor.schema
    named = model.item_id_feature
    if named in schema.names and isinstance(schema[named], CategoricalFeature):
        return named
    item_features = set(model.item_feature_names)
    candidates = [f for f in schema.by_side(Side.ITEM) if isinstance(f, CategoricalFeature) and f.name in item_features]
    target = (run.config.get("task") or {}).get("target_column")
    by_target = [f.name for f in candidates if target and f.column == target]
    if len(by_target) == 1:
        return by_target[0]
    if len(candidates) == 1:
        return candidates[0].name
    hint = f"set model.params.item_id_feature to one of {[f.name for f in candidates]} in the run's config"
    if not candidates:
        raise ConfigError(f"model.params.item_id_feature: {named!r} is not a feature of the run's schema and the item tower has no categorical feature to key items by")
    if table is None:
        raise ConfigError(f"model.params.item_id_feature: {named!r} is not a feature of the run's schema; {hint}")
    distinct = {f.name: len(table.column(f.column).unique()) for f in candidates}
    ranked = sorted(distinct.items(), key=lambda kv: -kv[1])
    if ranked[0][1] == ranked[1][1]:
        raise ConfigError(f"model.params.item_id_feature: {named!r} is not in the schema and the item features {[n for n, c in ranked if c == ranked[0][1]]} have as many distinct values ({ranked[0][1]}); {hint}")
    return ranked[0][0]


def item_id_column(run: LoadedRun, table: pa.Table | None = None) -> str:
    """The raw column holding the run's item ids (``item_id_feature``'s column): ``post_id`` in
    seed 001, ``item_id`` in MovieLens."""
    return run.preprocessor.schema[item_id_feature(run, table)].column
