"""Multi-valued features: lists or delimited strings, padded to maxlen, keeping the most recent values.

    #  raw      "7,3,9"      ""        "1,2,3,4,5"   (maxlen 3, values listed oldest first)
    #  ids      [a7,a3,a9]   [0,0,0]   [a3,a4,a5]    left-aligned, 0 = padding
    #  mask     [1,1,1]      [0,0,0]   [1,1,1]
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from recstack.data.batch import OOV_INDEX, PADDING_INDEX
from recstack.errors import DataError

from ._files import fit, read_all, write_parquet, write_text


def seq_schema(**feature: object) -> dict:
    return {
        "label": None,
        "features": [{"name": "hist", "kind": "sequence", "table": "item", "maxlen": 3, **feature}],
    }


def rows_of(pre) -> dict[str, int]:
    return {str(k): 2 + i for i, k in enumerate(pre.lookups["item"].keys)}


@pytest.fixture
def fitted(tmp_path):
    # Every id 1..9 once, so every id has a row.
    return fit(seq_schema(), write_parquet(tmp_path / "fit.parquet", {"hist": ["1,2,3", "4,5,6", "7,8,9"]}))[0]


def test_values_are_left_aligned_oldest_first_and_padded_with_a_mask(fitted):
    row = rows_of(fitted)
    batch = fitted.transform(pa.record_batch({"hist": ["7,3,9", "", "4", None]}))
    ids = batch.sequences["hist"]
    assert ids.dtype == torch.int64 and ids.shape == (4, 3)
    assert ids.tolist() == [
        [row["7"], row["3"], row["9"]],
        [PADDING_INDEX] * 3,
        [row["4"], PADDING_INDEX, PADDING_INDEX],
        [PADDING_INDEX] * 3,
    ]
    assert batch.mask("hist").tolist() == [[True] * 3, [False] * 3, [True, False, False], [False] * 3]


def test_truncation_keeps_the_most_recent_values(fitted):
    row = rows_of(fitted)
    ids = fitted.transform(pa.record_batch({"hist": ["1,2,3,4,5", "8,9"]})).sequences["hist"]
    assert ids.tolist() == [[row["3"], row["4"], row["5"]], [row["8"], row["9"], PADDING_INDEX]]


def test_a_list_column_reads_like_a_delimited_string(fitted):
    as_text = fitted.transform(pa.record_batch({"hist": ["1,2,3,4", "", "5"]}))
    as_list = fitted.transform(pa.record_batch({"hist": pa.array([["1", "2", "3", "4"], [], ["5"]])}))
    as_ints = fitted.transform(pa.record_batch({"hist": pa.array([[1, 2, 3, 4], None, [5]])}))
    assert as_text.sequences["hist"].equal(as_list.sequences["hist"])
    assert as_text.sequences["hist"].equal(as_ints.sequences["hist"])


def test_unknown_values_are_oov_inside_the_sequence(fitted):
    row = rows_of(fitted)
    ids = fitted.transform(pa.record_batch({"hist": ["1,unknown,2"]})).sequences["hist"]
    assert ids.tolist() == [[row["1"], OOV_INDEX, row["2"]]]


def test_empty_tokens_and_spaces_are_ignored(fitted):
    row = rows_of(fitted)
    ids = fitted.transform(pa.record_batch({"hist": [" 1 ,,2,"]})).sequences["hist"]
    assert ids.tolist() == [[row["1"], row["2"], PADDING_INDEX]]


def test_the_delimiter_is_configurable(tmp_path):
    pre, source = fit(seq_schema(delimiter="|"), write_text(tmp_path / "t.csv", "hist\n1|2|3\n3|2\n"))
    row = rows_of(pre)
    assert read_all(pre, source).sequences["hist"].tolist() == [[row["1"], row["2"], row["3"]], [row["3"], row["2"], 0]]


def test_weights_from_id_weight_pairs(tmp_path):
    schema = seq_schema(weights="pairs", pooling="weighted_sum")
    path = write_parquet(tmp_path / "t.parquet", {"hist": ["502:0.34,278:0.09", "", "1:1,2:2,3:3,4:4"]})
    pre, source = fit(schema, path)
    batch = read_all(pre, source)
    row = rows_of(pre)
    assert batch.sequences["hist"].tolist() == [[row["502"], row["278"], 0], [0, 0, 0], [row["2"], row["3"], row["4"]]]
    weights = batch.weights["hist"]
    assert weights.dtype == torch.float32
    assert weights.tolist() == [
        pytest.approx([0.34, 0.09, 0.0]),
        [0.0, 0.0, 0.0],
        [2.0, 3.0, 4.0],  # weights are truncated with their ids
    ]


def test_weights_from_a_parallel_column(tmp_path):
    schema = seq_schema(weights="column", weight_column="hist_w", pooling="weighted_mean")
    path = write_parquet(tmp_path / "t.parquet", {"hist": ["5,6", "7,8,9,5"], "hist_w": ["0.5,1.5", "1,2,3,4"]})
    pre, source = fit(schema, path)
    batch = read_all(pre, source)
    assert batch.weights["hist"].tolist() == [[0.5, 1.5, 0.0], [2.0, 3.0, 4.0]]
    as_lists = pre.transform(pa.record_batch({"hist": pa.array([[5, 6]]), "hist_w": pa.array([[0.5, 1.5]])}))
    assert as_lists.weights["hist"].tolist() == [[0.5, 1.5, 0.0]]


def test_a_weight_column_of_another_length_is_an_error(tmp_path):
    schema = seq_schema(weights="column", weight_column="hist_w")
    path = write_parquet(tmp_path / "t.parquet", {"hist": ["5,6", "7,8"], "hist_w": ["0.5,1.5", "1"]})
    pre, source = fit(schema, path)
    with pytest.raises(DataError) as error:
        read_all(pre, source)
    assert error.value.path == path and error.value.row == 2 and error.value.column == "hist_w"
    assert "expected 2 weights" in str(error.value)


def test_jagged_view_feeds_embedding_bag(fitted):
    batch = fitted.transform(pa.record_batch({"hist": ["1,2", "", "3"]}))
    values, offsets, weights = batch.jagged("hist")
    row = rows_of(fitted)
    assert values.tolist() == [row["1"], row["2"], row["3"]]
    assert offsets.tolist() == [0, 2, 2]
    assert weights is None
