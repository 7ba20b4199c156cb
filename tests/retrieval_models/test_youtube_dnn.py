"""YouTube DNN: history-pooled user tower, output-embedding items, exportable towers."""

import pytest
import torch

from recstack.errors import ConfigError
from recstack.models.registry import build_model
from recstack.models.youtube_dnn import YoutubeDNN
from recstack.tasks.retrieval import InBatchSoftmaxTask, NegativeSamplingTask

from .helpers import NUM_ITEM_ROWS, make_batch


def test_user_tower_reads_history_and_user_features_items_are_output_rows(feature_map) -> None:
    model = YoutubeDNN(feature_map=feature_map, params=YoutubeDNN.Params(hidden_dims=(16, 8)))
    assert model.user_tower().input_names == ("user_id", "hist_item_ids", "tags", "tags__weights", "age")
    batch = make_batch(5)
    users, items = model(batch)
    assert users.shape == items.shape == (5, 8)
    assert torch.all(items == 0)  # zero-initialised output embedding: unseen items score 0
    assert model.item_tower().inputs.table("item_id") is not model.user_tower().embeddings.table("hist_item_ids")
    assert torch.equal(model.encode_item_rows(batch.ids["item_id"]), items)


def test_towers_alone_equal_the_training_model(feature_map) -> None:
    model = build_model("youtube_dnn", feature_map, {"hidden_dims": [16, 8], "batch_norm": True, "dropout": 0.1})
    batch = make_batch(6)
    InBatchSoftmaxTask(logq_correction=False).loss(model, batch).backward()
    model.eval()
    with torch.no_grad():
        user_tower, item_tower = model.user_tower(), model.item_tower()
        assert torch.equal(user_tower(*user_tower.inputs_from_batch(batch).values()), model.encode_user(batch))
        assert torch.equal(item_tower(batch.ids["item_id"]), model.encode_item(batch))


def test_shared_output_embedding_and_normalised_vectors(feature_map) -> None:
    params = {"hidden_dims": [16, 8], "share_output_embedding": True, "normalize": True}
    model = build_model("youtube_dnn", feature_map, params)
    assert model.item_tower().inputs.table("item_id") is model.user_tower().embeddings.table("hist_item_ids")
    users, items = model(make_batch(4))
    assert torch.allclose(users.norm(dim=-1), torch.ones(4), atol=1e-6)
    assert torch.allclose(items.norm(dim=-1), torch.ones(4), atol=1e-6)
    with pytest.raises(ConfigError, match="model.params.hidden_dims"):
        build_model("youtube_dnn", feature_map, {"hidden_dims": [16, 4], "share_output_embedding": True})


def test_bad_params_name_the_key(feature_map) -> None:
    with pytest.raises(ConfigError, match="model.params.history_feature"):
        build_model("youtube_dnn", feature_map, {"history_feature": "user_id"})
    with pytest.raises(ConfigError, match="model.params.user_features"):
        build_model("youtube_dnn", feature_map, {"user_features": ["user_id"]})


def test_trains_with_sampled_negatives(feature_map) -> None:
    model = build_model("youtube_dnn", feature_map, {"hidden_dims": [8]})
    assert model.num_item_rows == NUM_ITEM_ROWS
    task = NegativeSamplingTask(num_negatives=5, temperature=1.0, seed=0)
    loss = task.loss(model, make_batch(6))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.item_tower().inputs.table("item_id").weight.grad.abs().sum() > 0  # negatives were pushed away
