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


def test_parquet_shards_by_row_group_and_decode_only_their_own(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.arange(400)
    pq.write_table(pa.table({"row_id": ids, "item": ids % 7, "x": ids.astype(float), "label": ids % 2}), tmp_path / "a.parquet", row_group_size=50)  # 8 groups
    pq.write_table(pa.table({"row_id": ids + 400, "item": ids % 7, "x": ids.astype(float), "label": ids % 2}), tmp_path / "b.parquet", row_group_size=100)  # 4 groups
    source = DataSource(paths=(str(tmp_path / "*.parquet"),), parquet_batch_rows=16)
    decoded: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, row_groups=None, **kwargs):
        decoded.extend(row_groups)
        return real(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    group_starts = [*range(0, 400, 50), *range(400, 800, 100)]  # row_id at the start of global row group k
    shards = []
    for index in range(3):
        decoded.clear()
        chunks = list(source.chunks(shard_index=index, num_shards=3))
        rows = [int(i) for c in chunks for i in c.records.column("row_id").to_pylist()]
        shards.append(rows)
        assert len(decoded) == 4  # 12 row groups in all: this shard decoded its 4, skipped 8
        mine = {start for k, start in enumerate(group_starts) if k % 3 == index}
        assert {r for r in rows if r in set(group_starts)} == mine
        for chunk in chunks:  # first_row still counts every row of the file, skipped groups too
            first_id = chunk.records.column("row_id")[0].as_py()
            assert chunk.first_row == (first_id if first_id < 400 else first_id - 400) + 1
    assert sorted(sum(shards, [])) == list(range(800))


def test_too_few_row_groups_fall_back_to_batch_sharding(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.arange(100)
    pq.write_table(pa.table({"row_id": ids, "label": ids % 2}), tmp_path / "one.parquet")  # one row group
    source = DataSource(paths=(str(tmp_path / "one.parquet"),), parquet_batch_rows=10)
    shards = [[int(i) for c in source.chunks(shard_index=r, num_shards=2) for i in c.records.column("row_id").to_pylist()] for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(100))
    assert len(shards[0]) == len(shards[1]) == 50  # both ranks get a share, not one rank all of it


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


def _reads(monkeypatch, source) -> list[int]:
    """Counts the source's passes (``chunks`` calls)."""
    passes: list[int] = []
    chunks = type(source).chunks

    def counted(self, **kwargs):
        passes.append(1)
        return chunks(self, **kwargs)

    monkeypatch.setattr(type(source), "chunks", counted)
    return passes


@pytest.mark.parametrize("shuffle_buffer", [0, 200, 1000])
def test_the_auto_cache_serves_later_epochs_from_memory_with_the_same_batches(files, monkeypatch, shuffle_buffer):
    source, pre = files
    passes = _reads(monkeypatch, source)
    config = LoaderConfig(batch_size=64, shuffle_buffer=shuffle_buffer, seed=3)
    streamed, cached = (BatchStream(source=source, preprocessor=pre, config=LoaderConfig(**{**config.__dict__, "cache": c})) for c in (False, None))
    for epoch in range(3):
        streamed.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert row_ids(cached) == row_ids(streamed)
    assert len(passes) == 3 + 1  # streaming reads every epoch, the cache once


def test_the_auto_cache_gives_up_past_its_memory_limit(files, monkeypatch):
    source, pre = files
    passes = _reads(monkeypatch, source)
    stream = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, cache_max_mb=0))
    assert row_ids(stream) == row_ids(stream) == list(range(ROWS))
    assert len(passes) == 2 and not stream._cached
    forced = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, cache=True, cache_max_mb=0))
    assert row_ids(forced) == row_ids(forced)
    assert len(passes) == 3  # cache: true holds whatever the size


def _transforms(monkeypatch, pre) -> list[int]:
    """Counts the chunks the preprocessor transforms."""
    calls: list[int] = []
    transform = type(pre).transform

    def counted(self, *args, **kwargs):
        calls.append(1)
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(type(pre), "transform", counted)
    return calls


@pytest.mark.parametrize("shuffle_buffer", [0, 1000])
def test_prepare_caches_the_shard_before_the_first_epoch_with_the_same_batches(files, monkeypatch, shuffle_buffer):
    source, pre = files
    passes = _reads(monkeypatch, source)
    config = LoaderConfig(batch_size=64, shuffle_buffer=shuffle_buffer, seed=3)
    streamed, prepared = (BatchStream(source=source, preprocessor=pre, config=LoaderConfig(**{**config.__dict__, "cache": c})) for c in (False, None))
    assert prepared.prepare() and len(passes) == 1
    assert prepared.prepare() and len(passes) == 1  # already cached: nothing read again
    for epoch in range(2):
        streamed.set_epoch(epoch)
        prepared.set_epoch(epoch)
        assert row_ids(prepared) == row_ids(streamed)
    assert len(passes) == 1 + 2  # the prepared stream never read again


def test_prepare_reads_nothing_when_the_stream_does_not_cache_here(files, monkeypatch):
    source, pre = files
    passes = _reads(monkeypatch, source)
    for config in (LoaderConfig(batch_size=64, cache=False), LoaderConfig(batch_size=64, num_workers=2)):
        assert not BatchStream(source=source, preprocessor=pre, config=config).prepare()
    assert not passes


def test_prepare_stops_after_one_chunk_once_the_auto_cache_cannot_hold_the_shard(files, monkeypatch):
    source, pre = files
    whole = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, cache=True))
    assert whole.prepare() and len(whole._cached[(0, 1)]) > 2, "the fixture needs several chunks"
    calls = _transforms(monkeypatch, pre)
    over = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, cache_max_mb=0))
    assert not over.prepare() and len(calls) == 1 and not over._cached  # the first chunk is already past 0 MiB
    # within 1 MiB so far, but the row count (Parquet metadata) projects the shard past it
    monkeypatch.setattr(type(source), "num_rows", lambda self: 10**9)
    projected = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64, cache_max_mb=1))
    assert not projected.prepare() and len(calls) == 2 and not projected._cached
    assert row_ids(projected) == list(range(ROWS))  # the epochs stream, whole


def test_a_stream_of_some_features_reads_and_transforms_only_those(files, monkeypatch):
    source, pre = files
    columns: list[list[str]] = []
    chunks = type(source).chunks

    def recorded(self, **kwargs):
        columns.append(list(kwargs["columns"]))
        return chunks(self, **kwargs)

    monkeypatch.setattr(type(source), "chunks", recorded)
    batch = next(iter(BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=64), features=["x"])))
    assert columns == [["x", "label", "row_id"]]
    assert set(batch.dense) == {"x"} and not batch.ids and len(batch.label) == 64
