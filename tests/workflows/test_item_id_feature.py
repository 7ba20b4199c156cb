"""Which feature keys a two-tower run's items: read from the run, never assumed to be 'item_id'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.errors import ConfigError, DataError
from recstack.export.run_folder import LoadedRun
from recstack.models import build_model
from recstack.schema import Schema
from recstack.workflows.export import item_catalogue, item_id_feature

torch.set_num_threads(1)


def _events(folder: Path) -> Path:
    """Events with string item codes; each code has one brand (4 brands over 12 codes)."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 12, 200)
    table = pa.table({
        "label": rng.integers(0, 2, 200).astype(float),
        "user": [f"u{u}" for u in rng.integers(0, 30, 200)],
        "code": [f"sku-{c}" for c in codes],
        "brand": [f"b{c % 4}" for c in codes],
    })
    pq.write_table(table, folder / "events.parquet")
    return folder / "events.parquet"


def _run(folder: Path, *, item_id_feature: str | None = None, catalog: Path | None = None, brand: bool = True) -> LoadedRun:
    events = _events(folder)
    features = [{"name": "user", "kind": "categorical", "side": "user"}, {"name": "item_code", "column": "code", "kind": "categorical", "side": "item"}]
    if brand:
        features.append({"name": "brand", "kind": "categorical", "side": "item"})
    schema = Schema.from_dict({"label": "label", "embedding_dim": 4, "features": features})
    preprocessor = Preprocessor(schema).fit(DataSource(paths=(str(events),)))
    params = {"hidden_dims": [8], **({"item_id_feature": item_id_feature} if item_id_feature else {})}
    model = build_model("dssm", preprocessor.feature_map(), params)
    data = {"train": {"paths": [str(events)]}, **({"catalog": str(catalog)} if catalog else {})}
    return LoadedRun(paths=None, config={"data": data, "task": {"type": "retrieval"}}, preprocessor=preprocessor, feature_map=preprocessor.feature_map(), model=model, model_spec={})  # type: ignore[arg-type]


def test_the_models_item_id_feature_wins(tmp_path):
    assert item_id_feature(_run(tmp_path, item_id_feature="brand")) == "brand"


def test_the_only_item_side_categorical_is_the_id(tmp_path):
    assert item_id_feature(_run(tmp_path, brand=False)) == "item_code"


def test_an_ambiguous_run_names_the_candidates_and_the_key_to_set(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(ConfigError, match=r"model.params.item_id_feature.*\['item_code', 'brand'\]"):
        item_id_feature(run)


def test_given_item_rows_the_most_specific_feature_is_the_id(tmp_path):
    run = _run(tmp_path)
    catalogue = item_catalogue(run)  # no catalogue: the distinct items of the training rows
    assert (catalogue.feature, catalogue.column) == ("item_code", "code")
    assert set(catalogue.ids.tolist()) == {f"sku-{c}" for c in range(12)}
    assert len(catalogue) == 12 and catalogue.ids.dtype == object
    tie = pa.table({"code": ["a", "b"], "brand": ["x", "y"]})
    with pytest.raises(ConfigError, match="as many distinct values"):
        item_id_feature(run, tie)


def test_a_catalogue_must_list_each_item_once(tmp_path):
    run = _run(tmp_path, item_id_feature="item_code", catalog=tmp_path / "events.parquet")
    with pytest.raises(DataError, match=r"column 'code'.*must be unique.*leave --catalog out"):
        item_catalogue(run)
