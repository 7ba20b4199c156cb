"""Batch: tensors per feature name, with row selection and concatenation that keep rows whole."""

from __future__ import annotations

import numpy as np
import torch

from recstack.data.batch import Batch


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
