"""Criteo-shaped synthetic data: 13 count features, 26 categorical fields, a planted label.

Columns ``label`` (float32), ``I1..I13`` (int64 counts >= 0, nullable), ``C1..C26`` (int64 ids,
Zipf frequencies, vocabularies from 3 to 1M like Criteo's). The label is
``Bernoulli(sigmoid(bias + sum_j s_j * w(C_j) + s_pair * w(C1, C2) + sum_k c_k * z(log1p(I_k))))``
with hashed per-value weights ``w`` (no stored tables), so 1M-value fields cost no memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from recstack.datasets._sampling import auc, calibrate_bias, hashed_normal, sigmoid, write_chunks, zipf_ids

# Criteo 1TB/Kaggle cardinalities, capped at 1M values
CRITEO_VOCAB_SIZES = (
    1460, 583, 1_000_000, 1_000_000, 305, 24, 12517, 633, 3, 93145, 5683, 1_000_000, 3194,
    27, 14992, 1_000_000, 10, 5652, 2173, 4, 1_000_000, 18, 15, 286181, 105, 142572,
)  # fmt: skip
NULL_RATES = (0.45, 0.0, 0.2, 0.2, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.2)
COUNT_MEDIANS = (2.0, 5.0, 10.0, 4.0, 3000.0, 100.0, 10.0, 10.0, 50.0, 1.0, 3.0, 1.0, 5.0)
NUM_DENSE, NUM_SPARSE = 13, 26
CALIBRATION_ROWS = 20_000


def generate_criteo_like(
    path: str | Path,
    *,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 200_000,
    vocab_sizes: Sequence[int] | None = None,
    target_rate: float = 0.25,
) -> dict[str, Any]:
    """Write ``rows`` Criteo-shaped rows to the Parquet file ``path``; return the planted model.

    Args:
        vocab_sizes: 26 vocabulary sizes (default ``CRITEO_VOCAB_SIZES``).
        target_rate: positive rate the bias is calibrated to (Criteo's is about 0.25).
    """
    vocab = tuple(vocab_sizes) if vocab_sizes is not None else CRITEO_VOCAB_SIZES
    if len(vocab) != NUM_SPARSE:
        raise ValueError(f"vocab_sizes needs {NUM_SPARSE} sizes, got {len(vocab)}")
    scales = _field_scales(vocab, seed)
    calibration = _draw(np.random.default_rng([seed, 99]), CALIBRATION_ROWS, vocab)
    raw_logit = _logit(calibration, scales)
    bias = calibrate_bias(raw_logit, target_rate)
    labels = np.random.default_rng([seed, 98]).random(CALIBRATION_ROWS) < sigmoid(raw_logit + bias)

    def make_chunk(rng: np.random.Generator, count: int) -> pa.Table:
        draws = _draw(rng, count, vocab)
        label = rng.random(count) < sigmoid(_logit(draws, scales) + bias)
        return _table(draws, label)

    write_chunks(path, rows=rows, chunk_rows=chunk_rows, seed=seed, stream=2, make_chunk=make_chunk)
    return {
        "layout": "criteo",
        "path": str(path),
        "rows": rows,
        "seed": seed,
        "chunk_rows": chunk_rows,
        "vocab_sizes": list(vocab),
        "field_scales": [round(float(s), 4) for s in scales["fields"]],
        "pair_scale": scales["pair"],
        "dense_coefficients": [round(float(c), 4) for c in scales["dense"]],
        "bias": round(bias, 6),
        "calibration": {
            "rows": CALIBRATION_ROWS,
            "positive_rate": round(float(labels.mean()), 4),
            "oracle_auc": round(auc(labels, raw_logit), 4),
        },
    }


def _field_scales(vocab: Sequence[int], seed: int) -> dict[str, Any]:
    """Per-field weight scales (about half the fields matter), pair scale, dense coefficients."""
    rng = np.random.default_rng([seed, 0])
    informative = rng.random(len(vocab)) < 0.5
    fields = np.where(informative, rng.uniform(0.2, 0.5, size=len(vocab)), 0.0)
    dense = np.where(rng.random(NUM_DENSE) < 0.5, rng.normal(0.0, 0.3, size=NUM_DENSE), 0.0)
    return {"fields": fields, "pair": 0.5, "dense": dense}


def _draw(rng: np.random.Generator, count: int, vocab: Sequence[int]) -> dict[str, np.ndarray]:
    draws: dict[str, np.ndarray] = {}
    for k in range(NUM_DENSE):
        sigma = 1.0 + 0.1 * k
        counts = np.floor(rng.lognormal(np.log(COUNT_MEDIANS[k]), sigma, size=count))
        draws[f"I{k + 1}"] = counts.astype(np.int64)
        draws[f"I{k + 1}_null"] = rng.random(count) < NULL_RATES[k]
    for j, size in enumerate(vocab):
        draws[f"C{j + 1}"] = zipf_ids(rng, count, size, 1.05 + 0.1 * (j % 3))
    return draws


def _logit(draws: dict[str, np.ndarray], scales: dict[str, Any]) -> np.ndarray:
    """The planted logit without bias, ``(N,)``."""
    count = len(draws["C1"])
    logit = np.zeros(count)
    for j, scale in enumerate(scales["fields"]):
        if scale:
            logit += scale * hashed_normal(draws[f"C{j + 1}"], salt=j + 1)
    pair_key = draws["C1"] * 1_000_003 + draws["C2"]  # a C1 x C2 cross feature
    logit += scales["pair"] * hashed_normal(pair_key, salt=777)
    for k, coefficient in enumerate(scales["dense"]):
        if coefficient:
            z = (np.log1p(draws[f"I{k + 1}"]) - np.log1p(COUNT_MEDIANS[k])) / (1.0 + 0.1 * k)
            logit += coefficient * np.where(draws[f"I{k + 1}_null"], 0.0, z)
    return logit


def _table(draws: dict[str, np.ndarray], label: np.ndarray) -> pa.Table:
    columns: dict[str, pa.Array] = {"label": pa.array(label.astype(np.float32))}
    for k in range(1, NUM_DENSE + 1):
        columns[f"I{k}"] = pa.array(draws[f"I{k}"], pa.int64(), mask=draws[f"I{k}_null"])
    for j in range(1, NUM_SPARSE + 1):
        columns[f"C{j}"] = pa.array(draws[f"C{j}"], pa.int64())
    return pa.table(columns)
