"""Warm start from a parent run (``training/warm_start.py``): after growth and before any step,
old rows and predictions on old-only rows are the parent's, new rows are the fresh model's init
(a pretrained table's: the file's), shared tables stay shared, other parameters must match in
shape, and the optimiser state is carried only where shapes allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import Chunk
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.models.registry import model_names
from recstack.schema import Schema
from recstack.training.config import TrainerConfig
from recstack.training.optim import build_optimizers
from recstack.training.warm_start import IncrementalConfig, carry_optimizer_state, grow_model
from recstack.vector_io import VectorTable, write_vectors

torch.set_num_threads(1)

SCHEMA = {
    "label": "label",
    "tables": {"item": {"dim": 8}, "cat": {"dim": 8}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 8},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 4, "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "cat", "kind": "categorical", "table": "cat", "side": "item"},
        {"name": "price", "kind": "numeric", "side": "item"},
    ],
}
BEHAVIOURS = [{"candidate": "item_id", "history": "hist_item_ids"}]
RANKING = {
    "deepfm": {"hidden_dims": [16]},
    "din": {"behaviours": BEHAVIOURS, "attention_hidden_dims": [8], "hidden_dims": [16]},
    "bst": {"behaviours": BEHAVIOURS, "hidden_dims": [16], "transformer_dropout": 0.0},  # a sequence model, when registered
}


def day(items: np.ndarray, users: np.ndarray, seed: int) -> Chunk:
    rng = np.random.default_rng(seed)
    history = [",".join(map(str, rng.choice(items, 3))) for _ in range(len(items))]
    records = pa.RecordBatch.from_pydict(
        {
            "user_id": pa.array(users, pa.int64()),
            "hist_item_ids": pa.array(history),
            "item_id": pa.array(items, pa.int64()),
            "cat": pa.array(items % 7, pa.int64()),
            "price": pa.array(rng.normal(10, 3, len(items))),
            "label": pa.array(rng.integers(0, 2, len(items)).astype(float)),
        }
    )
    return Chunk(records, "<day>", 1)


def parent_and_child(schema: Schema = Schema.from_dict(SCHEMA)) -> tuple[Preprocessor, Preprocessor, Chunk]:
    rng = np.random.default_rng(0)
    old = day(rng.integers(0, 40, 400), rng.integers(0, 30, 400), seed=1)
    new = day(rng.integers(20, 60, 400), rng.integers(10, 50, 400), seed=2)  # items 40..59, users 30..49 are new
    parent = Preprocessor(schema).fit([old])
    child = Preprocessor(schema).fit([new], parent=parent)
    return parent, child, old


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """The freshly built model moved away from its init, as training would (padding rows stay 0)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
            if name.endswith(".weight") and ".tables." in name:
                param[0].zero_()
    return model.eval()


def build(name: str, pre: Preprocessor, params: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, pre.feature_map().without_pretrained_files(), params)


@pytest.mark.parametrize("name", [n for n in RANKING if n in model_names()])
def test_old_rows_and_old_only_predictions_are_the_parents_new_rows_the_fresh_init(name: str) -> None:
    parent_pre, child_pre, old_rows = parent_and_child()
    parent = trained_like(build(name, parent_pre, RANKING[name], seed=1))
    child = build(name, child_pre, RANKING[name]).eval()
    fresh = build(name, child_pre, RANKING[name]).eval()  # the same init, never grown

    growth = {g.table: g for g in grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)}

    assert growth["item"].added == 20 and growth["user_id"].added == 20 and growth["cat"].added == 0
    assert set(growth["item"].features) >= {"item_id", "hist_item_ids"}  # the history grows with its item table
    parent_state, child_state, fresh_state = parent.state_dict(), child.state_dict(), fresh.state_dict()
    for key, value in child_state.items():
        old = parent_state[key]
        if value.dim() == 0 or value.shape == old.shape:
            torch.testing.assert_close(value, old, rtol=0, atol=0)
            continue
        torch.testing.assert_close(value[: old.shape[0]], old, rtol=0, atol=0)
        torch.testing.assert_close(value[old.shape[0] :], fresh_state[key][old.shape[0] :], rtol=0, atol=0)
    with torch.no_grad():
        expected = parent(parent_pre.transform(old_rows))
        got = child(child_pre.transform(old_rows))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # before any step: the parent's predictions


def test_a_new_id_gets_its_own_row() -> None:
    parent_pre, child_pre, _ = parent_and_child()
    new = day(np.array([45, 59]), np.array([31, 49]), seed=3)
    rows = child_pre.transform(new).ids["item_id"].numpy()
    assert (rows >= parent_pre.lookups["item"].num_rows).all() and len(set(rows)) == 2
    assert (parent_pre.transform(new).ids["item_id"].numpy() == 1).all()  # OOV in the parent


def test_two_tower_shared_item_table_grows_once_and_stays_shared() -> None:
    params = {"user_features": ["user_id", "hist_item_ids"], "item_features": ["item_id", "cat", "price"], "hidden_dims": [8]}
    parent_pre, child_pre, old_rows = parent_and_child()
    parent = trained_like(build("dssm", parent_pre, params, seed=1))
    child = build("dssm", child_pre, params).eval()
    grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)
    tables = [m for m in child.modules() if type(m).__name__ == "EmbeddingCollection"]
    user_side = next(t for t in tables if "hist_item_ids" in t.feature_names)
    item_side = next(t for t in tables if "item_id" in t.feature_names)
    assert user_side.table("hist_item_ids") is item_side.table("item_id")  # one matrix in both towers
    assert user_side.table("hist_item_ids").weight.shape[0] == child_pre.lookups["item"].num_rows
    with torch.no_grad():
        for encode in ("encode_user", "encode_item"):
            torch.testing.assert_close(
                getattr(child, encode)(child_pre.transform(old_rows)), getattr(parent, encode)(parent_pre.transform(old_rows)), rtol=0, atol=0
            )


def test_pretrained_table_new_ids_take_the_files_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = tmp_path / "v1.parquet"
    second = tmp_path / "v2.parquet"
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    write_vectors(first, VectorTable(ids=[str(i) for i in range(40)], vectors=vectors[:40]))
    write_vectors(second, VectorTable(ids=[str(i) for i in range(59, -1, -1)], vectors=vectors[::-1].copy()))  # newer file, other order
    raw = {**SCHEMA, "tables": {**SCHEMA["tables"], "item": {"pretrained": str(first), "trainable": True}}}
    parent_pre = Preprocessor(Schema.from_dict(raw)).fit([day(np.arange(40), np.arange(40), seed=1)])
    raw["tables"]["item"] = {"pretrained": str(second), "trainable": True}
    child_pre = Preprocessor(Schema.from_dict(raw)).fit([day(np.arange(60), np.arange(60), seed=2)], parent=parent_pre)
    torch.manual_seed(1)
    parent = trained_like(build_model("deepfm", parent_pre.feature_map(), RANKING["deepfm"]))  # rows from the file, then "trained"
    child = build("deepfm", child_pre, RANKING["deepfm"])
    grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)
    key = next(k for k in child.state_dict() if k.endswith("tables.item.weight") and child.state_dict()[k].shape[1] == 8)
    table = child.state_dict()[key]
    assert table.shape[0] == 2 + 60
    torch.testing.assert_close(table[:42], parent.state_dict()[key], rtol=0, atol=0)  # trained old rows kept
    new_rows = child_pre.transform(day(np.arange(40, 60), np.arange(20), seed=3)).ids["item_id"]
    torch.testing.assert_close(table[new_rows], torch.from_numpy(vectors[40:60]), rtol=0, atol=0)


def test_a_changed_parameter_shape_is_a_config_error_naming_it() -> None:
    parent_pre, child_pre, _ = parent_and_child()
    parent = build("deepfm", parent_pre, {"hidden_dims": [16]})
    child = build("deepfm", child_pre, {"hidden_dims": [32]})
    with pytest.raises(ConfigError, match=r"model parameter '.*linear.weight': shape \(16, .*\) in the parent run, \(32, .*\) now"):
        grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)
    with pytest.raises(ConfigError, match="table '.*': the parent's weights hold .* of different runs"):
        grow_model(build("deepfm", child_pre, {"hidden_dims": [16]}), parent.state_dict(), parent=child_pre, child=child_pre)
    with pytest.raises(ConfigError, match="model parameters differ from the parent run's"):
        grow_model(build("fm", child_pre, {}), parent.state_dict(), parent=parent_pre, child=child_pre)


def test_carried_optimizer_state_only_where_shapes_allow() -> None:
    parent_pre, child_pre, old_rows = parent_and_child()
    config = TrainerConfig(lr=0.01)
    parent = build("deepfm", parent_pre, RANKING["deepfm"]).train()
    parent_optimizers = build_optimizers(parent, config)
    loss = parent(parent_pre.transform(old_rows)).sum()
    loss.backward()
    for optimizer in parent_optimizers:
        optimizer.step()
    child = build("deepfm", child_pre, RANKING["deepfm"])
    grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)
    optimizers = build_optimizers(child, TrainerConfig(lr=0.005))
    carried = carry_optimizer_state(optimizers, [o.state_dict() for o in parent_optimizers])
    params = list(child.parameters())
    grown = [p for p, q in zip(params, parent.parameters()) if p.shape != q.shape]
    assert grown and carried == len(params) - len(grown)
    state = optimizers[0].state
    assert all(p not in state for p in grown)
    assert all(torch.equal(state[p]["exp_avg"], parent_optimizers[0].state[q]["exp_avg"]) for p, q in zip(params, parent.parameters()) if p.shape == q.shape)
    assert optimizers[0].param_groups[0]["lr"] == 0.005  # this run's settings, the parent's moments
    with pytest.raises(ConfigError, match="optimizer_state"):
        carry_optimizer_state(optimizers, [])


def test_incremental_config_names_bad_keys() -> None:
    assert IncrementalConfig.from_dict(None).init_from is None
    with pytest.raises(ConfigError, match="incremental.numeric: expected keep | update"):
        IncrementalConfig.from_dict({"numeric": "average"})
    with pytest.raises(ConfigError, match="incremental.init_form: unknown key"):
        IncrementalConfig.from_dict({"init_form": "runs/a"})


SEQUENCE_SCHEMA = {
    "label": None,
    "tables": {"item": {"dim": 8}},
    "features": [
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 5, "side": "user"},
        {"name": "target_item_ids", "kind": "sequence", "table": "item", "maxlen": 5},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
    ],
}


def sequences(items: tuple[int, int], rows: int, seed: int) -> Chunk:
    rng = np.random.default_rng(seed)
    seq = rng.integers(*items, (rows, 6))
    text = lambda block: [",".join(map(str, row)) for row in block]  # noqa: E731
    records = pa.RecordBatch.from_pydict(
        {"hist_item_ids": pa.array(text(seq[:, :-1])), "target_item_ids": pa.array(text(seq[:, 1:])), "item_id": pa.array(seq[:, -1])}
    )
    return Chunk(records, "<sequences>", 1)


@pytest.mark.parametrize("name", [n for n in ("sasrec", "gru4rec", "mind", "comirec_sa", "comirec_dr") if n in model_names()])
def test_sequence_retrieval_models_grow_their_one_item_table(name: str) -> None:
    schema = Schema.from_dict(SEQUENCE_SCHEMA)
    old_rows = sequences((0, 40), 200, seed=1)
    parent_pre = Preprocessor(schema).fit([old_rows])
    child_pre = Preprocessor(schema).fit([sequences((20, 60), 200, seed=2)], parent=parent_pre)
    parent = trained_like(build(name, parent_pre, {}, seed=1))
    child = build(name, child_pre, {}).eval()
    growth = grow_model(child, parent.state_dict(), parent=parent_pre, child=child_pre)
    assert [(g.table, g.added) for g in growth] == [("item", 20)]
    assert set(growth[0].features) >= {"hist_item_ids", "item_id"}  # the history and the candidate: one table
    with torch.no_grad():
        for encode in ("encode_user", "encode_item"):
            torch.testing.assert_close(
                getattr(child, encode)(child_pre.transform(old_rows)), getattr(parent, encode)(parent_pre.transform(old_rows)), rtol=0, atol=0
            )
