"""Exported ONNX towers reproduce PyTorch in onnxruntime, at any batch size, with no loops."""

import pytest
import torch

from recstack.export.onnx_towers import export_tower_onnx, onnx_matches, onnx_max_abs_error
from recstack.models.dssm import TwoTower  # noqa: F401 (registers "dssm")
from recstack.models.registry import build_model
from recstack.models.youtube_dnn import YoutubeDNN  # noqa: F401 (registers "youtube_dnn")

from .helpers import make_batch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("side", ["user", "item"])
def test_dssm_towers_match_in_onnxruntime(feature_map, tmp_path, side) -> None:
    model = build_model("dssm", feature_map, {"hidden_dims": [16, 8], "batch_norm": True})
    model.train()
    model(make_batch(16))  # non-trivial batch-norm running statistics
    model.eval()
    tower = model.user_tower() if side == "user" else model.item_tower()
    path = tmp_path / f"{side}.onnx"
    export_tower_onnx(tower, tower.inputs_from_batch(make_batch(4)), path)

    other_size = tower.inputs_from_batch(make_batch(11, generator=torch.Generator().manual_seed(7)))
    assert onnx_max_abs_error(tower, path, other_size) <= 1e-5  # the batch axis is dynamic
    assert onnx_matches(tower, path, other_size, atol=1e-5)
    ops = _op_types(path)
    assert not ops & {"Loop", "Scan", "If", "SequenceConstruct"}  # no EmbeddingBag loop
    assert [p.name for p in tmp_path.iterdir()] == [f"{side}.onnx"]  # written atomically, no temp left


def test_vector_only_tower_exports(tmp_path) -> None:
    from recstack.data.feature_map import FeatureMap
    from recstack.schema import Schema

    schema = Schema.from_dict({"features": [
        {"name": "user_vec", "kind": "vector", "dim": 128, "side": "user"},
        {"name": "item_vec", "kind": "vector", "dim": 128, "side": "item"},
    ]})
    model = build_model("dssm", FeatureMap(schema=schema, tables={}), {}).eval()
    tower = model.item_tower()
    export_tower_onnx(tower, (torch.randn(3, 128),), tmp_path / "item.onnx")
    assert onnx_matches(tower, tmp_path / "item.onnx", {"item_vec": torch.randn(9, 128)})


def test_youtube_dnn_towers_match_in_onnxruntime(feature_map, tmp_path) -> None:
    model = build_model("youtube_dnn", feature_map, {"hidden_dims": [16, 8], "normalize": True}).eval()
    batch = make_batch(9)
    for tower in (model.user_tower(), model.item_tower()):
        path = tmp_path / "tower.onnx"
        export_tower_onnx(tower, tower.inputs_from_batch(make_batch(3)), path)
        assert onnx_matches(tower, path, tower.inputs_from_batch(batch))


def test_a_failed_export_leaves_the_previous_file(feature_map, tmp_path) -> None:
    model = build_model("dssm", feature_map, {"hidden_dims": [8]}).eval()
    tower = model.item_tower()
    path = tmp_path / "item.onnx"
    export_tower_onnx(tower, tower.inputs_from_batch(make_batch(3)), path)
    before = path.read_bytes()
    with pytest.raises(KeyError, match="item_cat"):
        export_tower_onnx(tower, {"item_id": torch.tensor([2])}, path)
    with pytest.raises(Exception):
        export_tower_onnx(tower, (torch.tensor([2]),) * 3, path)  # wrong dtypes: the export itself fails
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["item.onnx"]
