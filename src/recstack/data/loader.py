"""Batches streamed from files: shard, transform, shuffle in a bounded buffer, re-batch.

The stream is split into shards, one per (distributed rank, DataLoader worker) pair, so every
row is read by exactly one worker of one rank per epoch: Parquet by row group where there are
enough of them (a shard then decodes only its own), otherwise by record batch
(``DataSource.chunks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from recstack.data.batch import Batch
from recstack.data.preprocessor import Preprocessor
from recstack.data.sources import DataSource
from recstack.parallel import rank_and_world


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are formed.

    Args:
        batch_size: rows per batch.
        shuffle_buffer: rows held and shuffled together (0 = keep file order); bounds memory.
        drop_last: drop each shard's final short batch.
        num_workers: DataLoader worker processes (0 = read in the training process).
        seed: the shuffle seed; each epoch and shard derive their own from it.
        cache: keep the transformed chunks in memory after the first epoch, so later epochs
            only shuffle and slice (the batches are identical to streaming ones). None (auto)
            caches when batches are read in this process and the transformed tensors of one
            pass stay within ``cache_max_mb`` (past it the pass's copy is dropped and every
            epoch streams); True always caches; False always streams, in bounded memory.
        cache_max_mb: the auto cache's limit, MiB of transformed tensors.
    """

    batch_size: int = 1024
    shuffle_buffer: int = 0
    drop_last: bool = False
    num_workers: int = 0
    seed: int = 0
    cache: bool | None = None
    cache_max_mb: int = 1024


class BatchStream(IterableDataset):
    """An iterable of :class:`Batch` over a data source, sharded across ranks and workers."""

    def __init__(
        self,
        *,
        source: DataSource,
        preprocessor: Preprocessor,
        config: LoaderConfig = LoaderConfig(),
        rank: int | None = None,
        world_size: int | None = None,
        with_label: bool = True,
        features: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.preprocessor = preprocessor
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.with_label = with_label
        self.features = None if features is None else tuple(features)
        self.epoch = 0
        self._cached: dict[tuple[int, int], list[Batch]] = {}
        self._cached_whole: dict[tuple[int, int], Batch] = {}

    def set_epoch(self, epoch: int) -> None:
        """Changes the shuffle order; call before iterating each epoch (as DistributedSampler)."""
        self.epoch = epoch

    def __length_hint__(self) -> int:
        """Batches one epoch gives in this process, estimated without reading (progress bars):
        from the cached rows after a complete pass, else the source's row count (Parquet
        metadata) split evenly over the shards; 0 (unknown) for CSV before a complete pass."""
        shard_index, num_shards = self._shard()
        cached = self._cached.get((shard_index, num_shards))
        if cached is not None:
            rows = sum(len(batch) for batch in cached)
        else:
            total = self.source.num_rows()
            if total is None:
                return 0
            rows = -(-total // num_shards)
        size = self.config.batch_size
        return rows // size if self.config.drop_last else -(-rows // size)

    def prepare(self) -> bool:
        """Read and transform this process's shard now, into the cache its first epoch would
        fill, so that every epoch only shuffles and slices; True when the shard is cached.

        Reads nothing when the stream does not cache, or when DataLoader workers read it (each
        worker holds its own cache). In auto mode (``cache: None``) the pass stops as soon as the
        shard, at the bytes per row transformed so far, would pass ``cache_max_mb``: epochs then
        stream, and at most one chunk was read ahead.
        """
        if self.config.num_workers or not self._should_cache():
            return False
        key = self._shard()
        for _ in self._transformed(*key, stop_when_uncacheable=True):
            pass
        return key in self._cached

    def _shard(self) -> tuple[int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            rank, world = rank_and_world()
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        return rank * workers + worker_id, world * workers

    def __iter__(self) -> Iterator[Batch]:
        shard_index, num_shards = self._shard()
        cfg = self.config
        whole = self._cached_whole.get((shard_index, num_shards))
        if whole is not None and cfg.shuffle_buffer:  # the shard fits one buffer: gather batches directly
            generator = torch.Generator().manual_seed(hash((cfg.seed, self.epoch, shard_index)) & 0x7FFFFFFF)
            yield from self._from_whole(whole, generator)
            return
        transformed = self._transformed(shard_index, num_shards)
        if not cfg.shuffle_buffer:
            yield from _rebatch(transformed, cfg.batch_size, cfg.drop_last)
            return
        generator = torch.Generator().manual_seed(hash((cfg.seed, self.epoch, shard_index)) & 0x7FFFFFFF)
        buffer: list[Batch] = []
        buffered = 0
        for batch in transformed:
            buffer.append(batch)
            buffered += len(batch)
            if buffered >= max(cfg.shuffle_buffer, cfg.batch_size):
                rows = Batch.concat(buffer)
                if cfg.shuffle_buffer:
                    rows = rows.select(torch.randperm(len(rows), generator=generator))
                full = len(rows) - len(rows) % cfg.batch_size
                yield from _split(rows.select(slice(0, full)), cfg.batch_size)
                rest = rows.select(slice(full, len(rows)))
                buffer, buffered = ([rest], len(rest)) if len(rest) else ([], 0)
        if buffered:
            rows = Batch.concat(buffer)
            if cfg.shuffle_buffer:
                rows = rows.select(torch.randperm(len(rows), generator=generator))
            for batch in _split(rows, cfg.batch_size):
                if len(batch) == cfg.batch_size or not cfg.drop_last:
                    yield batch


    def _transformed(self, shard_index: int, num_shards: int, *, stop_when_uncacheable: bool = False) -> Iterator[Batch]:
        """This shard's chunks as batches: from the cache, or read and transformed (and cached).
        ``stop_when_uncacheable``: end the pass once the shard is known not to fit the cache."""
        key = (shard_index, num_shards)
        if key in self._cached:
            yield from self._cached[key]
            return
        pre = self.preprocessor
        columns = pre.input_columns(with_label=self.with_label, features=self.features)
        chunks = self.source.chunks(columns=columns, types=pre.csv_types(), shard_index=shard_index, num_shards=num_shards)
        keep: list[Batch] | None = [] if self._should_cache() else None
        limit = None if self.config.cache else self.config.cache_max_mb << 20
        total_rows = None if limit is None else self.source.num_rows()  # Parquet metadata; None for CSV
        shard_rows = None if total_rows is None else -(-total_rows // num_shards)
        kept_bytes = kept_rows = 0
        for chunk in chunks:
            batch = pre.transform(chunk, skip_bad_rows=self.source.skip_bad_rows, with_label=self.with_label, features=self.features)
            if keep is not None:
                keep.append(batch)
                kept_bytes += batch.nbytes()
                kept_rows += len(batch)
                # auto: too large to hold (or, with a known row count, projected to be): stream every epoch
                projected = kept_bytes if shard_rows is None or not kept_rows else kept_bytes * max(shard_rows, kept_rows) // kept_rows
                if limit is not None and max(kept_bytes, projected) > limit:
                    keep = None
            if keep is None and stop_when_uncacheable:
                return
            yield batch
        if keep is not None:  # only a complete pass is cached
            self._cached[key] = keep
            cfg = self.config
            if keep and sum(len(b) for b in keep) < max(cfg.shuffle_buffer, cfg.batch_size):
                self._cached_whole[key] = Batch.concat(keep)

    def _from_whole(self, rows: Batch, generator: torch.Generator) -> Iterator[Batch]:
        """The batches the shuffle buffer forms when every row sits in its final buffer (the
        same permutation, the same slices) without copying the whole shard each epoch."""
        cfg = self.config
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(rows), cfg.batch_size):
            stop = min(start + cfg.batch_size, len(rows))
            if stop - start < cfg.batch_size and cfg.drop_last:
                return
            yield rows.select(order[start:stop])

    def _should_cache(self) -> bool:
        if self.config.cache is not None:
            return self.config.cache
        return get_worker_info() is None  # a worker's cache dies with the worker


def _rebatch(batches: Iterator[Batch], batch_size: int, drop_last: bool) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows in order; only rows that straddle two inputs are copied."""
    pending: list[Batch] = []  # fewer than batch_size rows
    pending_rows = 0
    for batch in batches:
        start = 0
        if pending:
            start = min(batch_size - pending_rows, len(batch))
            pending.append(batch.select(slice(0, start)))
            pending_rows += start
            if pending_rows < batch_size:
                continue
            yield Batch.concat(pending)
            pending, pending_rows = [], 0
        full_end = start + (len(batch) - start) // batch_size * batch_size
        for begin in range(start, full_end, batch_size):
            yield batch.select(slice(begin, begin + batch_size))  # views, no copy
        if full_end < len(batch):
            pending, pending_rows = [batch.select(slice(full_end, len(batch)))], len(batch) - full_end
    if pending_rows and not drop_last:
        yield Batch.concat(pending)


def _split(rows: Batch, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(rows), batch_size):
        yield rows.select(slice(start, start + batch_size))


def make_loader(stream: BatchStream) -> DataLoader | BatchStream:
    """The stream itself, or a DataLoader running it in worker processes."""
    if stream.config.num_workers == 0:
        return stream
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=stream.config.num_workers,
        persistent_workers=False,
        prefetch_factor=2,
    )
