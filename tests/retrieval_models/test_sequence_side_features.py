"""Item side features per position (item_side_features): each history item's genre, looked up in
a table of every item's values filled from the catalogue and saved with the model."""

from __future__ import annotations

import io

import pytest
import torch

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.models import build_model

from .sequence_helpers import ROWS, sequence_batch, sequence_feature_map

GENRES = 6


def _model(name: str = "sasrec"):
    torch.manual_seed(0)
    model = build_model(name, sequence_feature_map(genres=GENRES), {"item_side_features": ["genre"], "dropout": 0.0})
    return model.eval()


def _catalogue() -> Batch:
    items = torch.arange(2, ROWS - 5)  # the last 5 item rows are not in the catalogue
    return Batch(ids={"item_id": items, "genre": 2 + items % (GENRES - 2)})


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_each_position_adds_its_items_genre(name: str) -> None:
    model = _model(name)
    assert model.reads_item_catalogue and model.item_catalogue_features == ("item_id", "genre")
    model.set_item_catalogue(_catalogue())
    rows = model.attributes.rows[:, 0]
    assert rows[0] == 0 and rows[1] == 1 and torch.equal(rows[2 : ROWS - 5], 2 + torch.arange(2, ROWS - 5) % 4)
    assert bool((rows[ROWS - 5 :] == 1).all())  # not in the catalogue: the OOV genre
    history = sequence_batch().sequences["hist_item_ids"]
    side = model.attributes(history)  # (B, L, D)
    genre_vectors = model.attributes.inputs.pooled(Batch(ids={"genre": rows[history].reshape(-1)}), "genre")
    expected = model.attributes.project(genre_vectors).view(*history.shape, -1) * (history != 0).unsqueeze(-1)
    assert torch.allclose(side, expected) and torch.equal(side[history == 0], torch.zeros_like(side[history == 0]))
    pairs = model.retrieval_pairs(sequence_batch())  # training reads the real positions only (SASRec: packed)
    assert torch.allclose(pairs.queries, model.user_tower().every_position(history)[history != 0], atol=1e-6)
    before = model.encode_user(sequence_batch())
    with torch.no_grad():
        model.attributes.rows[2:, 0] = 1  # every genre unknown: the user vectors change
    assert not torch.allclose(before, model.encode_user(sequence_batch()))


def test_the_lookup_is_saved_with_the_model_and_exports(tmp_path) -> None:
    model = _model()
    model.set_item_catalogue(_catalogue())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = _model()  # a fresh model: every genre OOV until loaded
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    batch = sequence_batch()
    assert torch.equal(loaded.attributes.rows, model.attributes.rows)
    assert torch.equal(loaded.encode_user(batch), model.encode_user(batch))
    pytest.importorskip("onnxruntime")
    from recstack.export.onnx_towers import export_tower_onnx, onnx_max_abs_error

    tower = model.user_tower()
    assert tower.input_names == ("hist_item_ids",)  # serving sends item ids only
    path = export_tower_onnx(tower, tower.inputs_from_batch(batch), tmp_path / "user.onnx")
    assert onnx_max_abs_error(tower, path, tower.inputs_from_batch(sequence_batch(3, seed=5))) < 1e-5


def test_side_features_must_be_categorical_item_features() -> None:
    fm = sequence_feature_map(genres=GENRES)
    with pytest.raises(ConfigError, match=r"model.params.item_side_features: 'age' is not a categorical item-side feature"):
        build_model("sasrec", fm, {"item_side_features": ["age"]})
    with pytest.raises(ConfigError, match=r"model.params.item_side_features: 'item_id' is the item id itself"):
        build_model("gru4rec", fm, {"item_side_features": ["item_id"]})
    assert not build_model("sasrec", fm, {}).reads_item_catalogue
