"""Per-user chronological sequences from an event table, split for next-item retrieval.

Events (``user``, ``item``, ``timestamp`` and optional side columns, one row each) are sorted by
user then time (ties keep file order), and each user's items become one sequence. Two splits:

Leave-one-out (``SequenceSplitSpec(how="leave_one_out")``), per user with n >= 3 events::

    #  sequence     x1   x2   x3   x4   x5        (n = 5)
    #  split        tr   tr   tr   va   te
    #  train row    inputs  [x1, x2]   targets [x2, x3]     every position is an example
    #  valid row    input   [x1, x2, x3]          -> x4
    #  test row     input   [x1, x2, x3, x4]      -> x5     (holds only earlier items)

Users with fewer than 3 events keep them all in training and are not evaluated.

Global time split (``how="time"``): events before ``valid_start`` train; each user's first event
in ``[valid_start, test_start)`` is its validation target and its first event at or after
``test_start`` its test target, each with every earlier event of the user as input. The
boundaries are timestamps (or quantiles of the event times: ``valid_frac`` / ``test_frac``).

Training rows are sequence-to-sequence: inputs ``x_1..x_{m-1}``, targets ``x_2..x_m`` (lists of
equal length, aligned position by position), so a model learns from every position. An input
longer than ``max_len`` keeps its most recent ``max_len`` items; a long training sequence becomes
consecutive ``max_len`` windows (``all_positions``, the default) or only its most recent one. Rows
cut and positions dropped are counted in :class:`SequenceStats`, never silently. Every step is a column operation on
sorted arrays (``np.lexsort``, per-user starts and sizes, gathered windows): no Python loop per
row.

Larger than memory. :func:`write_sequence_split` streams the event file in record batches and,
with ``partitions > 1``, first writes each batch's rows into ``partitions`` Parquet files by a
hash of the user id (every event of a user lands in one file), then splits one partition at a
time and appends its rows to the outputs: peak memory is one partition's events, not the table.
"""

from __future__ import annotations

import enum
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recstack.data.sources import DataSource
from recstack.datasets._features import attach
from recstack.datasets._sequences import window_lists
from recstack.errors import ConfigError, DataError

__all__ = [
    "INPUT_COLUMN",
    "SEQUENCE_FILES",
    "TARGET_COLUMN",
    "SequenceSplit",
    "SequenceSplitSpec",
    "SequenceStats",
    "SplitHow",
    "split_sequences",
    "write_sequence_split",
]

INPUT_COLUMN = "hist_item_ids"  # the input sequence (oldest first), every split
TARGET_COLUMN = "target_item_ids"  # training rows: the next item at each input position
SEEN_COLUMN = "seen_item_ids"
MIN_EVALUATED = 3  # leave-one-out: a user needs train, valid and test items
SEQUENCE_FILES = [f"{name}.parquet" for name in ("train", "valid", "test", "seen")]


class SplitHow(str, enum.Enum):
    LEAVE_ONE_OUT = "leave_one_out"
    TIME = "time"


@dataclass(frozen=True, kw_only=True)
class SequenceSplitSpec:
    """How to cut sequences.

    Attributes:
        how: leave-one-out or a global time split.
        max_len: N, the longest input kept (most recent N items).
        user_column / item_column / time_column: the event table's columns.
        side_columns: per-event columns carried as ``hist_<column>`` lists aligned with the input.
        all_positions: a training sequence longer than ``max_len`` becomes consecutive windows
            of ``max_len`` (every position trains); False: only its most recent window (SASRec's
            own code), the older positions dropped and counted.
        valid_start / test_start: time split boundaries (timestamps); None: from the fractions.
        valid_frac / test_frac: time split: the share of events at or after each boundary.
    """

    how: SplitHow = SplitHow.LEAVE_ONE_OUT
    max_len: int = 50
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    side_columns: tuple[str, ...] = ()
    all_positions: bool = True
    valid_start: int | None = None
    test_start: int | None = None
    valid_frac: float = 0.1
    test_frac: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "how", SplitHow(self.how))
        object.__setattr__(self, "side_columns", tuple(self.side_columns))
        if self.max_len < 1:
            raise ConfigError(f"max_len: must be >= 1, got {self.max_len}")
        if not (0 < self.valid_frac and 0 < self.test_frac and self.valid_frac + self.test_frac < 1):
            raise ConfigError(f"valid_frac, test_frac: must be > 0 with a sum < 1, got {self.valid_frac}, {self.test_frac}")

    @property
    def columns(self) -> list[str]:
        return [self.user_column, self.item_column, self.time_column, *self.side_columns]


@dataclass
class SequenceStats:
    """Counts of a split (added up over partitions); ``truncated_*``: rows whose input was longer
    than ``max_len``, ``dropped_positions``: positions those rows lost."""

    users: int = 0
    events: int = 0
    train_rows: int = 0
    train_positions: int = 0
    valid_rows: int = 0
    test_rows: int = 0
    users_without_training_pairs: int = 0  # fewer than 2 training events: no (input, next) pair
    users_not_evaluated: int = 0  # leave-one-out: < 3 events; time: no target or no earlier event
    truncated_train_rows: int = 0  # users whose training sequence is longer than max_len
    truncated_valid_rows: int = 0
    truncated_test_rows: int = 0
    dropped_positions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: "SequenceStats") -> None:
        for name in self.__dataclass_fields__:
            if name != "extra":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "extra"}
        return {**values, **self.extra}


@dataclass(frozen=True)
class SequenceSplit:
    """The tables of a split.

    Attributes:
        train: one row per user with a training pair: user, ``hist_item_ids`` (inputs),
            ``target_item_ids`` (next items), ``item_id`` (the last target) and ``hist_<side>``.
        valid / test: one row per evaluated user: user, ``hist_item_ids``, ``item_id`` (target).
        seen: user, ``seen_item_ids``: every training item of the user (untruncated), for
            excluding consumed items at evaluation.
        stats: the counts.
    """

    train: pa.Table
    valid: pa.Table
    test: pa.Table
    seen: pa.Table
    stats: SequenceStats


def split_sequences(events: pa.Table, spec: SequenceSplitSpec, *, bounds: tuple[int, int] | None = None, path: str | None = None) -> SequenceSplit:
    """Split an in-memory event table (see the module docstring).

    Args:
        bounds: the time split's ``(valid_start, test_start)``, when computed over a larger
            table than ``events`` (a partition); None: from ``spec``.
        path: the file the events came from, for error messages.

    Raises:
        DataError: a column is missing or the user / item / time column has nulls.
    """
    _check_columns(events, spec, path)
    users = _column(events, spec.user_column)
    times = _column(events, spec.time_column).astype(np.int64)
    order = np.lexsort((times, users))  # stable: simultaneous events keep file order
    ordered = events.select(spec.columns).take(pa.array(order))
    users, times = users[order], times[order]
    starts, sizes = _groups(users)  # (U,), (U,)
    user_ids = ordered[spec.user_column].take(pa.array(starts))
    stats = SequenceStats(users=len(starts), events=ordered.num_rows)
    if spec.how is SplitHow.LEAVE_ONE_OUT:
        evaluated = sizes >= MIN_EVALUATED
        train_end = starts + sizes - 2 * evaluated  # (U,) exclusive
        valid_at = np.where(evaluated, starts + sizes - 2, -1)
        test_at = np.where(evaluated, starts + sizes - 1, -1)
    else:
        valid_start, test_start = bounds or _time_bounds(times, spec)
        train_end = starts + _count_before(users, times, starts, valid_start)
        before_test = starts + _count_before(users, times, starts, test_start)
        ends = starts + sizes
        # first event in [valid_start, test_start) / at or after test_start, with an earlier event
        valid_at = np.where((train_end < before_test) & (train_end > starts), train_end, -1)
        test_at = np.where((before_test < ends) & (before_test > starts), before_test, -1)
    items = ordered[spec.item_column].combine_chunks()
    train, train_stats = _train_rows(ordered, spec, user_ids, starts, train_end)
    valid, valid_truncated = _held_rows(ordered, spec, user_ids, starts, valid_at, items)
    test, test_truncated = _held_rows(ordered, spec, user_ids, starts, test_at, items)
    stats.add(train_stats)
    stats.valid_rows, stats.test_rows = valid.num_rows, test.num_rows
    stats.truncated_valid_rows, stats.truncated_test_rows = valid_truncated, test_truncated
    stats.users_not_evaluated = int(((valid_at < 0) & (test_at < 0)).sum())
    seen = pa.table({spec.user_column: user_ids, SEEN_COLUMN: window_lists(items, starts, train_end, np.iinfo(np.int32).max)})
    return SequenceSplit(train=train, valid=valid, test=test, seen=seen, stats=stats)


def write_sequence_split(
    source: DataSource,
    out_dir: str | Path,
    spec: SequenceSplitSpec,
    *,
    partitions: int = 1,
    extra_tables: dict[str, pa.Table] | None = None,
    item_features: pa.Table | None = None,
) -> SequenceStats:
    """Split the events of ``source`` into ``out_dir/{train,valid,test,seen}.parquet``.

    The file is read in record batches; ``partitions > 1`` bounds memory by one partition (see
    the module docstring). ``extra_tables`` (an item catalogue, users) are written beside them;
    ``item_features`` (keyed by the item column) are joined to each train / valid / test row's
    ``item_id`` (its target), so a schema may declare item-side features (a sequence model's
    ``item_side_features`` read every item's values from the catalogue).
    """
    if partitions < 1:
        raise ConfigError(f"partitions: must be >= 1, got {partitions}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = SequenceStats()
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        if partitions == 1:
            _check_source(source, spec)
            events = pa.Table.from_batches([c.records for c in source.chunks(columns=spec.columns)])
            _append(writers, out, split_sequences(events, spec, path=",".join(source.paths)), stats, item_features, spec.item_column)
        else:
            _check_source(source, spec)
            bounds = _streamed_time_bounds(source, spec) if spec.how is SplitHow.TIME else None
            with tempfile.TemporaryDirectory(dir=out, prefix=".partitions-") as folder:
                files = _partition(source, spec, Path(folder), partitions)
                for path in files:
                    _append(writers, out, split_sequences(pq.read_table(path), spec, bounds=bounds), stats, item_features, spec.item_column)
    finally:
        for writer in writers.values():
            writer.close()
    for name, table in (extra_tables or {}).items():
        pq.write_table(table, out / f"{name}.parquet")
    stats.extra["partitions"] = partitions
    return stats


# ---- training and held-out rows ------------------------------------------------------------------
def _train_rows(ordered: pa.Table, spec: SequenceSplitSpec, user_ids: pa.Array, starts: np.ndarray, train_end: np.ndarray) -> tuple[pa.Table, SequenceStats]:
    """Rows of (inputs x_k..x_{m-1}, targets x_{k+1}..x_m) for users with >= 2 training events.

    A user with more than ``max_len`` pairs gets its most recent ``max_len`` (one row), or with
    ``spec.all_positions`` consecutive windows of ``max_len`` pairs back to the first (several
    rows, newest first; a window's first input has no earlier context) so no position is lost.
    """
    N = spec.max_len
    pairs = train_end - starts - 1  # (U,) positions with a next item
    keep = pairs >= 1
    windows = np.where(keep, -(-pairs // N) if spec.all_positions else 1, 0)  # (U,) rows per user
    owner = np.repeat(np.arange(len(starts)), windows)  # (R,) the user of each row
    back = np.arange(len(owner)) - np.repeat(np.cumsum(windows) - windows, windows)  # (R,) 0 = newest window
    stop = train_end[owner] - back * N  # (R,) exclusive end of the row's targets
    length = np.minimum(N, pairs[owner] - back * N)  # (R,)
    items = ordered[spec.item_column].combine_chunks()
    columns: dict[str, Any] = {spec.user_column: user_ids.take(pa.array(owner))}
    columns[INPUT_COLUMN] = window_lists(items, stop - length - 1, stop - 1, N)
    columns[TARGET_COLUMN] = window_lists(items, stop - length, stop, N)  # aligned: same lengths
    columns[spec.item_column] = items.take(pa.array(stop - 1))  # the last target
    for side in spec.side_columns:
        columns[f"hist_{side}"] = window_lists(ordered[side].combine_chunks(), stop - length - 1, stop - 1, N)
    cut = np.maximum(pairs[keep] - N, 0)
    stats = SequenceStats(users_without_training_pairs=int((~keep).sum()))
    stats.train_rows = len(owner)
    stats.train_positions = int(length.sum())
    stats.truncated_train_rows = int((cut > 0).sum())
    stats.dropped_positions = 0 if spec.all_positions else int(cut.sum())
    return pa.table(columns), stats


def _held_rows(ordered: pa.Table, spec: SequenceSplitSpec, user_ids: pa.Array, starts: np.ndarray, target_at: np.ndarray, items: pa.Array) -> tuple[pa.Table, int]:
    """One row per user with a target: the earlier items (most recent ``max_len``) and the target."""
    keep = target_at >= 0
    first, at = starts[keep], target_at[keep]
    columns: dict[str, Any] = {spec.user_column: user_ids.take(pa.array(np.flatnonzero(keep)))}
    columns[INPUT_COLUMN] = window_lists(items, first, at, spec.max_len)
    columns[spec.item_column] = items.take(pa.array(at))
    for side in spec.side_columns:
        columns[f"hist_{side}"] = window_lists(ordered[side].combine_chunks(), first, at, spec.max_len)
    return pa.table(columns), int(((at - first) > spec.max_len).sum())


# ---- sorted-array helpers -------------------------------------------------------------------------
def _groups(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and size of each run of equal keys in a sorted array, ``(U,)`` int64 each."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    starts = np.flatnonzero(new).astype(np.int64)
    return starts, np.diff(np.r_[starts, len(sorted_keys)]).astype(np.int64)


def _count_before(users: np.ndarray, times: np.ndarray, starts: np.ndarray, bound: int) -> np.ndarray:
    """Per user, how many of its (time-sorted) events are before ``bound``, ``(U,)``."""
    before = np.r_[0, np.cumsum(times < bound)]
    ends = np.r_[starts[1:], len(times)]
    return before[ends] - before[starts]


def _time_bounds(times: np.ndarray, spec: SequenceSplitSpec) -> tuple[int, int]:
    if spec.valid_start is not None and spec.test_start is not None:
        if spec.valid_start > spec.test_start:
            raise ConfigError(f"valid_start {spec.valid_start} is after test_start {spec.test_start}")
        return int(spec.valid_start), int(spec.test_start)
    if len(times) == 0:
        return 0, 0
    ordered = np.sort(times)
    cut = lambda frac: int(ordered[min(len(ordered) - 1, int(round(len(ordered) * (1 - frac))))])  # noqa: E731
    return cut(spec.valid_frac + spec.test_frac), cut(spec.test_frac)


def _streamed_time_bounds(source: DataSource, spec: SequenceSplitSpec) -> tuple[int, int]:
    """The time boundaries over the whole file, reading only its time column."""
    if spec.valid_start is not None and spec.test_start is not None:
        return _time_bounds(np.zeros(0, np.int64), spec)
    times = np.concatenate([_column(c.records, spec.time_column).astype(np.int64) for c in source.chunks(columns=[spec.time_column])])
    return _time_bounds(times, spec)


def _partition(source: DataSource, spec: SequenceSplitSpec, folder: Path, partitions: int) -> list[Path]:
    """Stream ``source`` into ``partitions`` Parquet files by a hash of the user id."""
    paths = [folder / f"part-{p:04d}.parquet" for p in range(partitions)]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for chunk in source.chunks(columns=spec.columns):
            records = pa.Table.from_batches([chunk.records]).select(spec.columns)
            part = _user_hash(_column(records, spec.user_column)) % np.uint64(partitions)
            order = np.argsort(part, kind="stable")
            starts = np.searchsorted(part[order], np.arange(partitions + 1, dtype=np.uint64))
            for p in np.flatnonzero(np.diff(starts)):  # one write per non-empty partition
                piece = records.take(pa.array(order[starts[p] : starts[p + 1]]))
                if p not in writers:
                    writers[p] = pq.ParquetWriter(paths[p], piece.schema)
                writers[p].write_table(piece)
    finally:
        for writer in writers.values():
            writer.close()
    return [paths[p] for p in sorted(writers)]


def _user_hash(users: np.ndarray) -> np.ndarray:
    """A stable (run-independent) uint64 hash of int or string ids, vectorised."""
    if users.dtype.kind in "iu":
        x = users.astype(np.uint64)
    else:
        raw = np.asarray(users.astype(str), dtype="S")  # (N,) fixed-width bytes
        width = raw.dtype.itemsize
        codes = raw.view(np.uint8).reshape(len(raw), width).astype(np.uint64)  # (N, width)
        powers = np.uint64(1099511628211) ** np.arange(width, dtype=np.uint64)  # FNV prime powers, wrapping
        x = (codes * powers).sum(axis=1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # splitmix64 finaliser: spreads consecutive ids
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _append(
    writers: dict[str, pq.ParquetWriter], out: Path, split: SequenceSplit, stats: SequenceStats, item_features: pa.Table | None, item_column: str
) -> None:
    stats.add(split.stats)
    for name in ("train", "valid", "test", "seen"):
        table: pa.Table = getattr(split, name)
        if item_features is not None and name != "seen":
            table = attach(table, item_features, item_column)
        if name not in writers:
            writers[name] = pq.ParquetWriter(out / f"{name}.parquet", table.schema)
        writers[name].write_table(table.cast(writers[name].schema))


def _check_columns(events: pa.Table, spec: SequenceSplitSpec, path: str | None) -> None:
    missing = [c for c in spec.columns if c not in events.column_names]
    if missing:
        raise DataError(f"the event table has no column(s) {missing} (columns: {events.column_names})", path=path, column=missing[0])
    for name in (spec.user_column, spec.item_column, spec.time_column):
        if events[name].null_count:
            raise DataError(f"{events[name].null_count} null value(s) in column {name!r}", path=path, column=name)


def _check_source(source: DataSource, spec: SequenceSplitSpec) -> None:
    """DataError naming the file and the column when a file lacks one of the spec's columns."""
    for path in source.files():
        available = source.columns_of(path)
        missing = [c for c in spec.columns if c not in available]
        if missing:
            raise DataError(f"the event file has no column(s) {missing} (columns: {available})", path=path, column=missing[0])


def _column(table: pa.Table | pa.RecordBatch, name: str) -> np.ndarray:
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    return column.to_numpy(zero_copy_only=False) if isinstance(column, pa.Array) else column.to_numpy()


def sequence_params(spec: SequenceSplitSpec, **extra: Any) -> dict[str, Any]:
    """Plain values of a spec (for ``stats.json`` and caching)."""
    values = {k: (v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}
    return {**values, **extra}
