"""Synthetic generators: deterministic, chunked, and carrying the planted signal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from recstack.datasets import generate_criteo_like, generate_ctr, generate_retrieval
from recstack.datasets.synthetic import main

SMALL_CTR = dict(num_users=500, num_items=400, num_item_cats=10, cat_vocab_sizes=(8, 12, 100))


def test_same_seed_same_file_other_seed_other_file(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_ctr(tmp_path / f"{name}.parquet", rows=3_000, seed=seed, chunk_rows=1_000, **SMALL_CTR)
    first, second, other = ((tmp_path / f"{n}.parquet").read_bytes() for n in "abc")
    assert first == second
    assert first != other


def test_chunked_writing_gives_the_requested_rows(tmp_path: Path) -> None:
    path = tmp_path / "ctr.parquet"
    info = generate_ctr(path, rows=2_500, chunk_rows=1_000, **SMALL_CTR)
    file = pq.ParquetFile(path)
    assert file.metadata.num_rows == 2_500 and file.metadata.num_row_groups == 3
    assert info["rows"] == 2_500 and 0.2 <= info["calibration"]["positive_rate"] <= 0.5


def test_ctr_columns_follow_the_conventions(tmp_path: Path) -> None:
    path = tmp_path / "ctr.parquet"
    generate_ctr(path, rows=1_000, **SMALL_CTR)
    table = pq.read_table(path)
    expected = ["user_id", "item_id", "item_cat", "cat_0", "cat_1", "cat_2", "num_0", "num_1", "num_2", "num_3",
                "tags", "hist_item_ids", "hist_cat", "label"]  # fmt: skip
    assert table.column_names == expected
    assert table.schema.field("hist_item_ids").type == pa.list_(pa.int64())
    assert table.schema.field("label").type == pa.float32()
    lengths = pc.list_value_length(table["hist_item_ids"])
    assert pc.equal(lengths, pc.list_value_length(table["hist_cat"])).to_numpy(zero_copy_only=False).all()
    assert pc.min(lengths).as_py() == 0 and pc.max(lengths).as_py() <= 30
    pairs = [pair for text in table["tags"].to_pylist() if text for pair in text.split(",")]
    assert pairs and all(int(tag) > 0 and 0 < float(weight) <= 1 for tag, weight in (p.split(":") for p in pairs))
    assert np.min(table["num_0"].to_numpy()) > 0  # lognormal: skewed, positive


def test_item_category_is_a_function_of_the_item(tmp_path: Path) -> None:
    path = tmp_path / "ctr.parquet"
    generate_ctr(path, rows=5_000, **SMALL_CTR)
    table = pq.read_table(path)
    items = np.concatenate([table["item_id"].to_numpy(), pc.list_flatten(table["hist_item_ids"]).to_numpy()])
    cats = np.concatenate([table["item_cat"].to_numpy(), pc.list_flatten(table["hist_cat"]).to_numpy()])
    pairs = np.unique(np.stack([items, cats], axis=1), axis=0)
    assert len(pairs) == len(np.unique(items))


def test_planted_signal_beats_logistic_regression_on_raw_fields(tmp_path: Path) -> None:
    path = tmp_path / "ctr.parquet"
    generate_ctr(path, rows=40_000, seed=4, include_logit=True, **SMALL_CTR)
    table = pq.read_table(path)
    label = table["label"].to_numpy()
    train, test = np.arange(len(label)) < 30_000, np.arange(len(label)) >= 30_000
    oracle_auc = roc_auc_score(label[test], table["logit"].to_numpy()[test])
    fields = ["user_id", "item_id", "item_cat", "cat_0", "cat_1", "cat_2"]
    one_hot = [_one_hot(table[name].to_numpy()) for name in fields]
    numeric = np.stack([np.log1p(np.abs(table[f"num_{k}"].to_numpy())) for k in range(4)], axis=1)
    features = sparse.hstack([*one_hot, sparse.csr_matrix(numeric)]).tocsr()
    model = LogisticRegression(C=0.3, max_iter=200).fit(features[train], label[train])
    lr_auc = roc_auc_score(label[test], model.decision_function(features[test]))
    assert oracle_auc > 0.78
    assert oracle_auc - lr_auc > 0.05
    # the sequence term: matches between history categories and the candidate's raise the rate
    hist_cat = table["hist_cat"].combine_chunks()
    rows = pc.list_parent_indices(hist_cat).to_numpy()
    matches = np.bincount(rows[hist_cat.values.to_numpy() == table["item_cat"].to_numpy()[rows]], minlength=len(label))
    assert roc_auc_score(label, matches) > 0.55


def test_criteo_layout_has_39_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "criteo.parquet"
    vocab = [3, 10, 1_000_000, *([50] * 23)]
    info = generate_criteo_like(path, rows=3_000, chunk_rows=1_000, vocab_sizes=vocab)
    table = pq.read_table(path)
    assert table.column_names == ["label", *(f"I{k}" for k in range(1, 14)), *(f"C{j}" for j in range(1, 27))]
    assert all(table.schema.field(f"C{j}").type == pa.int64() for j in range(1, 27))
    assert pc.min(table["I1"]).as_py() >= 0 and table["I1"].null_count > 0
    assert pc.max(table["C1"]).as_py() <= 3 and pc.max(table["C3"]).as_py() <= 1_000_000
    assert 0.15 < pc.mean(table["label"]).as_py() < 0.35 and info["calibration"]["oracle_auc"] > 0.7
    with pytest.raises(ValueError, match="26"):
        generate_criteo_like(tmp_path / "bad.parquet", rows=10, vocab_sizes=[5] * 3)


def test_retrieval_layout_and_planted_clusters(tmp_path: Path) -> None:
    stats = generate_retrieval(tmp_path / "ret", num_users=300, num_items=1_000, interactions_per_user=12, seed=1)
    names = {path.name for path in (tmp_path / "ret").iterdir()}
    assert {"train.parquet", "valid.parquet", "test.parquet", "seen.parquet", "items.parquet", "users.parquet"} <= names
    test = pq.read_table(tmp_path / "ret" / "test.parquet").to_pylist()
    assert stats["evaluated_users"] == len(test) == 300
    # the held-out item usually shares the cluster most of the user's history comes from
    same = [row["genre"] == max(set(row["hist_genres"]), key=row["hist_genres"].count) for row in test]
    assert np.mean(same) > 0.6
    seen = {row["user_id"]: row["seen_item_ids"] for row in pq.read_table(tmp_path / "ret" / "seen.parquet").to_pylist()}
    assert all(row["item_id"] not in seen[row["user_id"]] for row in test)
    assert all(len(items) == len(set(items)) == 10 for items in seen.values())


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ctr.parquet"
    assert main(["--layout", "ctr", "--rows", "1500", "--out", str(out), "--seed", "3", "--chunk-rows", "1000"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 3
    assert pq.ParquetFile(out).metadata.num_rows == 1_500


def _one_hot(values: np.ndarray) -> sparse.csr_matrix:
    _, codes = np.unique(values, return_inverse=True)
    return sparse.csr_matrix((np.ones(len(values)), (np.arange(len(values)), codes)), shape=(len(values), codes.max() + 1))
