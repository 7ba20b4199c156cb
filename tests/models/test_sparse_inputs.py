"""Models read their tables only through the SparseInputs interface, fast paths are one switch
away from the modules' own ops, and weights saved before the seams moved still load."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import recstack.models
from recstack.models import build_model
from recstack.nn import SparseInputs, fused_paths

from .helpers import fit, full_records, full_schema, model_params, write_pretrained

RANKING = ["lr", "fm", "embedding_mlp", "deep_crossing", "wide_deep", "deepfm", "dcn", "dcn_v2", "din"]
MODELS_DIR = Path(recstack.models.__file__).parent
PROTOCOL = {"feature", "dim", "output_dim", "field_dim", "pooled", "embed_fields", "dense_input", "concat", "sequence", "mini_batch_l2"}
# the implementation's own surface, which models must not use: tables, raw lookups, row counts
BEYOND_PROTOCOL = ("table", "tables", "lookup", "present_rows", "table_names", "feature_names")
FORBIDDEN_NAMES = {"EmbeddingCollection", "FieldLookup", "lookup_fields", "lookup_many", "PackedPositions"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path, _ = write_pretrained(tmp_path_factory.mktemp("vectors"))
    records = full_records(64)
    pre = fit(full_schema(path), records)
    return pre.feature_map(), pre.transform(records)


def _params(name: str) -> dict:
    return model_params(name) if name in RANKING else {"hidden_dims": [16, 8]}


def test_the_protocol_is_the_documented_surface():
    members = {n for n in vars(SparseInputs) if not n.startswith("_")}
    assert members == PROTOCOL
    assert not PROTOCOL & set(BEYOND_PROTOCOL)


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_model_builds_tables_or_branches_on_its_mode_for_speed(path):
    tree = ast.parse(path.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not (names | imported) & FORBIDDEN_NAMES, f"{path.name} uses {sorted((names | imported) & FORBIDDEN_NAMES)}"
    assert "nn.Embedding" not in path.read_text(), path.name
    modes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "training"]
    assert not modes, f"{path.name} reads self.training (line {modes[0].lineno})" if modes else ""
    # mlp.score(x, head): the MLP owns its head now
    two_arg_scores = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "score" and len(n.args) == 2
    ]
    assert not two_arg_scores, path.name


@pytest.mark.parametrize("name", [*RANKING, "dssm", "youtube_dnn"])
def test_models_use_only_the_protocol_when_building_training_and_regularising(world, name, monkeypatch):
    """Every use of the implementation's own surface from a model file is recorded."""
    import sys

    from recstack.nn.embedding import EmbeddingCollection

    feature_map, batch = world
    reached: list[str] = []

    def from_a_model() -> bool:
        return Path(sys._getframe(2).f_code.co_filename).parent == MODELS_DIR

    for member in ("table", "lookup", "present_rows"):
        original = getattr(EmbeddingCollection, member)

        def recording(self, *args, _original=original, _member=member, **kwargs):
            if from_a_model():
                reached.append(_member)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(EmbeddingCollection, member, recording)
    module_getattr = nn.Module.__getattr__

    def getattr_recording(self, attribute):
        if attribute == "tables" and from_a_model():
            reached.append("tables")
        return module_getattr(self, attribute)

    monkeypatch.setattr(EmbeddingCollection, "__getattr__", getattr_recording)
    model = build_model(name, feature_map, _params(name)).train()
    _loss(model, batch).backward()
    model.eval()
    with torch.no_grad():
        model(batch)
    assert reached == [], f"{name} reached {sorted(set(reached))}"


@pytest.mark.parametrize("name", [*RANKING, "dssm", "youtube_dnn"])
def test_every_models_inputs_satisfy_the_protocol(world, name):
    feature_map, _ = world
    model = build_model(name, feature_map, _params(name))
    inputs = [m for m in model.modules() if isinstance(m, SparseInputs)]
    assert inputs, name


def _loss(model: nn.Module, batch) -> torch.Tensor:
    out = model(batch)
    logits = (out[0] * out[1]).sum(-1) if isinstance(out, tuple) else out
    loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    return loss + model.regularization(batch) if hasattr(model, "regularization") else loss


@pytest.mark.parametrize("name", [*RANKING, "dssm", "youtube_dnn"])
def test_training_outputs_and_gradients_are_equal_with_the_fast_paths_off(world, name):
    feature_map, batch = world
    params = model_params("din", l2_reg=1e-3) if name == "din" else _params(name)
    fast = build_model(name, feature_map, params).train()
    plain = copy.deepcopy(fast)
    fast_loss = _loss(fast, batch)
    fast_loss.backward()
    with fused_paths(False):
        plain_loss = _loss(plain, batch)
        plain_loss.backward()
    torch.testing.assert_close(plain_loss, fast_loss, rtol=1e-5, atol=1e-6)
    plain_grads = dict(plain.named_parameters())
    for param_name, param in fast.named_parameters():
        if param.grad is None:
            assert plain_grads[param_name].grad is None, param_name
            continue
        torch.testing.assert_close(plain_grads[param_name].grad, param.grad, rtol=1e-4, atol=1e-6, msg=param_name)


def test_din_takes_the_same_path_in_train_and_eval_mode_without_grad(world):
    # the layout follows the gate (gradients on), not the module's mode: same values either way
    feature_map, batch = world
    model = build_model("din", feature_map, model_params("din"))
    with torch.no_grad():
        train_logits = model.train()(batch)
    with fused_paths(False):
        padded = model.train()(batch)
    torch.testing.assert_close(train_logits, padded.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name, old, new",
    [
        ("embedding_mlp", "score.", "mlp.head."),
        ("din", "score.", "mlp.head."),
        ("deepfm", "dnn_score.", "dnn.head."),
        ("wide_deep", "deep_score.", "deep.head."),
        ("youtube_dnn", "item_encoder.table.", "item_encoder.inputs.tables.item."),
    ],
)
def test_weights_saved_under_the_old_keys_load_into_the_same_parameters(world, name, old, new):
    feature_map, batch = world
    torch.manual_seed(0)
    trained = build_model(name, feature_map, _params(name)).eval()
    saved = {(old + k[len(new) :] if k.startswith(new) else k): v for k, v in trained.state_dict().items()}
    assert any(k.startswith(old) for k in saved)
    torch.manual_seed(1)
    fresh = build_model(name, feature_map, _params(name)).eval()
    fresh.load_state_dict(saved)  # strict
    with torch.no_grad():
        got, want = fresh(batch), trained(batch)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert torch.equal(g, w)


def test_dssm_towers_share_the_schema_table_through_the_factory(world):
    feature_map, batch = world
    model = build_model("dssm", feature_map, {"hidden_dims": [16, 8]})
    user_params = {id(p) for p in model.user_tower().parameters()}
    item_params = {id(p) for p in model.item_tower().parameters()}
    shared = user_params & item_params
    # item_id / hist_item_ids name table "item", genre / hist_genres table "genre": one each
    assert len(shared) == 2
    _loss(model, batch).backward()
    for table in [p for p in model.parameters() if id(p) in shared]:
        assert table.grad is not None and table.grad.abs().sum() > 0


def test_youtube_dnn_shares_its_output_layer_with_the_history_table(world):
    feature_map, _ = world
    model = build_model("youtube_dnn", feature_map, {"hidden_dims": [16, 8], "share_output_embedding": True})
    user_params = {id(p) for p in model.user_tower().parameters()}
    item_params = [p for p in model.item_tower().parameters()]
    assert len(item_params) == 1 and id(item_params[0]) in user_params
