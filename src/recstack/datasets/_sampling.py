"""Random building blocks of the synthetic generators: Zipf ids, hashed weights, chunked writing."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ID_SCRAMBLE = 1_000_003  # a prime above every vocabulary size, so rank -> id is a bijection


def zipf_ids(rng: np.random.Generator, size: int, vocab: int, exponent: float = 1.1) -> np.ndarray:
    """Ids in ``1..vocab`` with frequency ~ rank^-exponent, scrambled so id order is not rank order.

    Inverse-CDF sampling of a bounded power law (no per-vocabulary table, so 1M values are free).
    """
    ranks = zipf_ranks(rng, size, vocab, exponent)
    return (ranks * ID_SCRAMBLE) % vocab + 1


def zipf_ranks(rng: np.random.Generator, size: int, vocab: int, exponent: float = 1.1) -> np.ndarray:
    """Ranks in ``0..vocab-1``, rank 0 the most frequent, ``(size,)`` int64."""
    uniform = rng.random(size)
    top = float(vocab + 1)
    if abs(exponent - 1.0) < 1e-9:
        values = np.power(top, uniform)
    else:
        power = 1.0 - exponent
        values = np.power((top**power - 1.0) * uniform + 1.0, 1.0 / power)
    return np.minimum(values.astype(np.int64) - 1, vocab - 1)


def hashed_normal(values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random N(0, 1)-like weight per (value, salt), with no stored table.

    splitmix64 gives two uniforms; Box-Muller turns them into a normal.
    """
    with np.errstate(over="ignore"):
        state = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
        first, second = _splitmix(state), _splitmix(state ^ np.uint64(0xD1B54A32D192ED03))
    u1 = (first >> np.uint64(11)).astype(np.float64) / float(1 << 53) + 1e-12
    u2 = (second >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _splitmix(state: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = state + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def calibrate_bias(logits: np.ndarray, target_rate: float) -> float:
    """The constant ``b`` with ``mean(sigmoid(logits + b)) == target_rate`` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if sigmoid(logits + middle).mean() < target_rate else (low, middle)
    return (low + high) / 2


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks)."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positives = labels.astype(bool)
    count_pos, count_neg = positives.sum(), (~positives).sum()
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - count_pos * (count_pos + 1) / 2) / (count_pos * count_neg))


def weighted_pairs(offsets: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> pa.Array:
    """Rows of ``"id:weight"`` pairs joined by ``","`` (``""`` for an empty row), built in Arrow.

    Args:
        offsets: ``(N + 1,)`` row boundaries into ``ids`` and ``weights``.
        ids: ``(V,)`` int64; weights: ``(V,)`` float, written with Arrow's shortest repr.
    """
    pairs = pc.binary_join_element_wise(pa.array(ids).cast(pa.string()), pa.array(weights).cast(pa.string()), ":")
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pairs)
    return pc.binary_join(lists, ",")


def ragged_offsets(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``(N + 1,)`` and the row of every value ``(sum,)`` for the given lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.repeat(np.arange(len(lengths)), lengths)


def write_chunks(
    path: str | Path,
    *,
    rows: int,
    chunk_rows: int,
    seed: int,
    stream: int,
    make_chunk: Callable[[np.random.Generator, int], pa.Table],
) -> None:
    """Write ``rows`` rows to one Parquet file, ``chunk_rows`` at a time (bounded memory).

    Chunk ``k`` draws from ``default_rng([seed, stream, k])``: the same arguments give the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer: pq.ParquetWriter | None = None
    try:
        for index, start in enumerate(range(0, rows, chunk_rows)):
            table = make_chunk(np.random.default_rng([seed, stream, index]), min(chunk_rows, rows - start))
            writer = writer or pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # rows == 0: still write an empty file with the right schema
        pq.write_table(make_chunk(np.random.default_rng([seed, stream, 0]), 0), partial)
    partial.replace(path)
