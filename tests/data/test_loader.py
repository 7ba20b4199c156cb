"""BatchStream: batches from files, sharded across ranks and DataLoader workers so that every row is
read exactly once per epoch, optionally shuffled in a bounded buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from recstack.data.loader import BatchStream, LoaderConfig, make_loader
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.schema import Schema

from ._files import write_parquet

ROWS = 500
SCHEMA = Schema.from_dict(
    {
        "label": "label",
        "group": "row_id",
        "features": [
            {"name": "item", "kind": "categorical"},
            {"name": "x", "kind": "numeric", "transform": "none"},
        ],
    }
)


@pytest.fixture
def files(tmp_path):
    """Three Parquet files of a shared row_id sequence 0..ROWS-1, read in chunks of 16 rows."""
    bounds = [0, 150, 320, ROWS]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        ids = np.arange(a, b)
        write_parquet(tmp_path / f"part-{i}.parquet", {"row_id": ids, "item": ids % 7, "x": ids.astype(float), "label": ids % 2})
    source = DataSource(paths=(str(tmp_path / "part-*.parquet"),), parquet_batch_rows=16)
    return source, Preprocessor(SCHEMA).fit(source)


def row_ids(batches) -> list[int]:
    return [int(i) for batch in batches for i in batch.group]


def test_batches_follow_file_order_without_shuffling(files):
    source, pre = files
    batches = list(BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64)))
    assert [len(b) for b in batches] == [64] * 7 + [52]
    assert row_ids(batches) == list(range(ROWS))
    assert batches[0].dense["x"].tolist() == [float(i) for i in range(64)]


@pytest.mark.parametrize("batch_size", [1, 7, 16, 64, 1000])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_are_full_across_chunk_and_file_boundaries(files, batch_size, drop_last):
    source, pre = files
    config = LoaderConfig(batch_size=batch_size, drop_last=drop_last)
    batches = list(BatchStream(source=source, preprocessor=pre, config=config))
    full, rest = divmod(ROWS, batch_size)
    assert [len(b) for b in batches] == [batch_size] * full + ([rest] if rest and not drop_last else [])
    assert row_ids(batches) == list(range(len(row_ids(batches))))
    for batch in batches:  # every row stays whole
        assert batch.dense["x"].tolist() == [float(i) for i in batch.group]


def test_drop_last_drops_the_final_short_batch(files):
    source, pre = files
    stream = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, drop_last=True))
    assert [len(b) for b in stream] == [64] * 7


def test_two_ranks_with_two_workers_each_read_every_row_exactly_once(files):
    source, pre = files
    seen: list[int] = []
    per_rank = []
    for rank in range(2):
        config = LoaderConfig(batch_size=32, num_workers=2, shuffle_buffer=64, seed=3)
        stream = BatchStream(source=source, preprocessor=pre, config=config, rank=rank, world_size=2)
        loader = make_loader(stream)
        assert isinstance(loader, DataLoader)
        ids = row_ids(loader)
        per_rank.append(ids)
        seen.extend(ids)
    assert len(seen) == ROWS and sorted(seen) == list(range(ROWS))  # no duplicates, none missing
    assert all(len(ids) > ROWS // 4 for ids in per_rank)  # both ranks get a share


def test_every_shard_is_disjoint_and_together_they_cover_the_data(files):
    source, pre = files
    shards = []
    for index in range(4):
        chunks = source.chunks(shard_index=index, num_shards=4)
        shards.append([int(i) for c in chunks for i in c.records.column("row_id").to_pylist()])
    assert sorted(sum(shards, [])) == list(range(ROWS))
    assert all(shards)


def test_the_shuffle_buffer_permutes_rows_and_keeps_them_all(files):
    source, pre = files
    config = LoaderConfig(batch_size=50, shuffle_buffer=200, seed=1)
    stream = BatchStream(source=source, preprocessor=pre, config=config)
    first = row_ids(stream)
    assert first != list(range(ROWS)) and sorted(first) == list(range(ROWS))
    assert row_ids(stream) == first  # the same epoch and seed: the same order
    stream.set_epoch(1)
    assert row_ids(stream) != first and sorted(row_ids(stream)) == list(range(ROWS))


def test_the_shuffle_keeps_each_row_whole(files):
    source, pre = files
    stream = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=50, shuffle_buffer=200))
    for batch in stream:
        ids = torch.as_tensor(batch.group.astype(np.int64))
        assert batch.dense["x"].equal(ids.float())
        assert batch.label.equal((ids % 2).float())


def test_without_workers_the_stream_is_its_own_loader(files):
    source, pre = files
    stream = BatchStream(source=source, preprocessor=pre)
    assert make_loader(stream) is stream


def test_a_stream_without_labels_for_inference(files):
    source, pre = files
    stream = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=100), with_label=False)
    batches = list(stream)
    assert all(b.label is None for b in batches) and sum(len(b) for b in batches) == ROWS
