"""A ranker whose schema has a weighted sequence exports to ONNX: its ids and its weights are two
inputs of one feature name (they once collided, and serving start-up failed with "Required
inputs (['tags.1']) are missing")."""

from __future__ import annotations

import pytest
import torch

from recstack.models import build_model

from .helpers import fit, full_records, full_schema, model_params, write_pretrained


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


@pytest.mark.parametrize("name", ["deepfm", "din"])
def test_a_ranker_with_a_weighted_sequence_is_served_by_onnx_runtime(world, name: str) -> None:
    pytest.importorskip("onnxruntime")
    from recstack.serving.ranker_scorer import RankerScorer
    from recstack.tasks import BinaryClassificationTask

    feature_map, batch = world
    assert "tags" in batch.weights  # the weighted sequence is among the inputs
    torch.manual_seed(0)
    model = build_model(name, feature_map, model_params(name)).eval()
    batch.labels = {}
    example, other = batch.select(torch.arange(40)), batch.select(torch.arange(40, 64))
    scorer = RankerScorer(model=model, task=BinaryClassificationTask(), example=example)
    assert scorer.backend == "onnxruntime", scorer.failure
    with torch.no_grad():
        expected = torch.sigmoid(model(other)).numpy()
    assert abs(scorer(other) - expected).max() < 1e-5
