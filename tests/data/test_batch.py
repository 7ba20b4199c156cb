"""Batch: tensors per feature name, with row selection and concatenation that keep rows whole."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recstack.data.batch import Batch
from recstack.data.sources import Chunk
from recstack.errors import DataError

from ._files import fit, read_all, write_text


def make(offset: int = 0) -> Batch:
    return Batch(
        ids={"user": torch.tensor([2, 3, 4]) + offset},
        sequences={"hist": torch.tensor([[5, 6, 0], [0, 0, 0], [7, 0, 0]])},
        weights={"hist": torch.tensor([[0.5, 1.5, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])},
        dense={"age": torch.tensor([0.1, 0.2, 0.3])},
        label=torch.tensor([1.0, 0.0, 1.0]),
        group=np.array(["a", "b", "c"]),
    )


def test_mask_and_jagged_views_of_a_padded_sequence():
    batch = make()
    assert batch.mask("hist").tolist() == [[True, True, False], [False] * 3, [True, False, False]]
    values, offsets, weights = batch.jagged("hist")
    assert values.tolist() == [5, 6, 7] and offsets.tolist() == [0, 2, 2] and weights.tolist() == [0.5, 1.5, 2.0]


def test_select_and_concat_keep_rows_whole():
    batch = make()
    picked = batch.select(torch.tensor([2, 0]))
    assert picked.ids["user"].tolist() == [4, 2]
    assert picked.sequences["hist"].tolist() == [[7, 0, 0], [5, 6, 0]]
    assert picked.group.tolist() == ["c", "a"] and picked.label.tolist() == [1.0, 1.0]
    both = Batch.concat([batch, make(offset=10)])
    assert len(both) == 6 and both.ids["user"].tolist() == [2, 3, 4, 12, 13, 14]
    assert both.group.tolist() == ["a", "b", "c"] * 2
    assert len(batch.select(slice(1, 3))) == 2


def test_to_moves_every_tensor():
    moved = make().to("cpu")
    assert moved.ids["user"].device.type == "cpu" and moved.group.tolist() == ["a", "b", "c"]


# ---- labels of several targets ------------------------------------------------------------------
def two_targets() -> Batch:
    return Batch(dense={"age": torch.tensor([0.1, 0.2, 0.3])}, labels={"click": torch.tensor([1.0, 0.0, 1.0]), "like": torch.tensor([1.0, 0.0, 0.0])})


def test_a_single_label_is_the_one_entry_of_labels():
    batch = make()
    assert list(batch.labels) == ["label"] and batch.label is batch.labels["label"]
    assert Batch(dense={"x": torch.zeros(2)}).label is None and Batch(dense={"x": torch.zeros(2)}).labels == {}
    named = Batch(labels={"click": torch.tensor([1.0, 0.0])})
    named.label = torch.tensor([0.0, 1.0])  # keeps the target's name
    assert list(named.labels) == ["click"] and named.label.tolist() == [0.0, 1.0] and len(named) == 2


def test_a_batch_carries_every_target_through_select_concat_and_to():
    batch = two_targets()
    picked = batch.select(torch.tensor([2, 0]))
    assert {k: v.tolist() for k, v in picked.labels.items()} == {"click": [1.0, 1.0], "like": [0.0, 1.0]}
    both = Batch.concat([batch, batch.to("cpu")])
    assert both.labels["like"].tolist() == [1.0, 0.0, 0.0] * 2
    with pytest.raises(ValueError, match=r"2 targets \(click, like\): read batch.labels\[name\]"):
        batch.label
    with pytest.raises(ValueError, match="not both"):
        Batch(label=torch.ones(2), labels={"click": torch.ones(2)})


TWO_TARGET_SCHEMA = {
    "targets": [{"name": "click"}, {"name": "dwell", "kind": "regression"}],
    "features": [{"name": "item", "kind": "categorical"}],
}


def test_the_preprocessor_fills_every_target(tmp_path):
    path = write_text(tmp_path / "t.csv", "item,click,dwell\na,1,3.5\nb,0,0\nc,1,12.25\n")
    pre, source = fit(TWO_TARGET_SCHEMA, path)
    batch = read_all(pre, source)
    assert batch.labels["click"].tolist() == [1.0, 0.0, 1.0] and batch.labels["dwell"].tolist() == [3.5, 0.0, 12.25]
    assert pre.input_columns(with_label=False) == ["item"]
    assert read_all(pre, source, with_label=False).labels == {}


def test_a_missing_target_column_names_the_target_and_file(tmp_path):
    train = write_text(tmp_path / "train.csv", "item,click,dwell\na,1,3.5\n")
    partial = write_text(tmp_path / "partial.csv", "item,click\na,1\n")
    with pytest.raises(DataError, match=r"target 'dwell': its column is missing") as error:
        fit(TWO_TARGET_SCHEMA, train, partial)
    assert (error.value.path, error.value.column) == (partial, "dwell")
    pre, _ = fit(TWO_TARGET_SCHEMA, train)
    with pytest.raises(DataError, match=r"target 'dwell': its column is missing") as error:
        pre.transform(Chunk(pa.record_batch({"item": ["a"], "click": ["1"]}), partial, 1))
    assert (error.value.path, error.value.column) == (partial, "dwell")


def test_each_target_is_checked_by_its_kind(tmp_path):
    path = write_text(tmp_path / "t.csv", "item,click,dwell\na,1,3.5\nb,2,1\n")
    with pytest.raises(DataError, match=r"target 'click': the label is '2'; expected 0 or 1") as error:
        fit(TWO_TARGET_SCHEMA, path)
    assert (error.value.path, error.value.row, error.value.column) == (path, 2, "click")
    bad_dwell = write_text(tmp_path / "d.csv", "item,click,dwell\na,1,inf\n")
    with pytest.raises(DataError, match=r"target 'dwell': the label is inf; expected a finite number"):
        fit(TWO_TARGET_SCHEMA, bad_dwell)
