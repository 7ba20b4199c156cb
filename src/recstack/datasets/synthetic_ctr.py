"""Synthetic CTR data with a planted logit that rewards interactions and sequence attention.

The label of a row is ``Bernoulli(sigmoid(logit))`` with::

    logit = bias
          + user_bias[u] + item_bias[i] + sum_j w_j(cat_j)          # linear (LR can learn)
          + sum_k c_k * f_k(num_k) + sum_t weight_t * w(tag_t)       # skewed numerics, weighted tags
          + s_ui * <user_factor[u], item_factor[i]>                 # user x item (FM, DCN, two towers)
          + s_cc * <e0[cat_0], e1[cat_1]>                           # field x field (FM, DCN)
          + s_seq * log1p(#history items in the candidate's category)  # target attention (DIN)

Item categories are a fixed function of ``item_id``; item factors cluster by category; users
have two favourite categories that their histories (and half their candidates) come from.
``bias`` is calibrated so the positive rate is ``target_rate``.

Columns: user_id, item_id, item_cat, cat_0..cat_{K-1} (int64), num_0..num_{M-1} (float32),
tags ("id:weight,..." string), hist_item_ids, hist_cat (list<int64>, oldest first), label
(float32 0/1) and, with ``include_logit``, the oracle ``logit`` (float32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recstack.datasets._sampling import (
    auc,
    calibrate_bias,
    hashed_normal,
    ragged_offsets,
    sigmoid,
    weighted_pairs,
    write_chunks,
    zipf_ids,
)

NUMERIC_KINDS = ("lognormal", "normal", "count", "uniform")  # cycled over num_0..num_{M-1}
NUMERIC_COEFFICIENTS = (0.5, 0.3, 0.3, 0.0)  # the uniform column is pure noise
CALIBRATION_ROWS = 20_000
FAVOURITE_SHARE = 0.8  # history items drawn from the user's favourite categories
CANDIDATE_FAVOURITE_SHARE = 0.5  # candidates drawn like history items (else by popularity)


@dataclass(frozen=True)
class CtrConfig:
    """Sizes and term scales of the planted CTR model (see the module docstring)."""

    num_users: int = 20_000
    num_items: int = 10_000
    num_item_cats: int = 50
    cat_vocab_sizes: tuple[int, ...] = (20, 50, 1_000, 10_000)
    num_numeric: int = 4
    num_tags: int = 1_000
    max_tags: int = 5
    max_hist_len: int = 30
    factor_dim: int = 8
    target_rate: float = 0.3
    scale_linear: float = 0.3
    scale_user_item: float = 0.8
    scale_cat_pair: float = 0.8
    scale_sequence: float = 0.8


@dataclass(frozen=True)
class CtrWorld:
    """The planted parameters, drawn once per seed. Index arrays are by ``id - 1``."""

    config: CtrConfig
    item_cat: np.ndarray  # (I,) category 1..C of each item
    items_by_cat: np.ndarray  # (I,) item indices sorted by category
    cat_starts: np.ndarray  # (C + 1,) offsets of each category in items_by_cat
    user_favourites: np.ndarray  # (U, 2) favourite categories 1..C
    user_factor: np.ndarray  # (U, D)
    item_factor: np.ndarray  # (I, D), clustered by category
    user_bias: np.ndarray  # (U,)
    item_bias: np.ndarray  # (I,)
    pair_left: np.ndarray  # (V0, 4) embedding of cat_0
    pair_right: np.ndarray  # (V1, 4) embedding of cat_1


def generate_ctr(
    path: str | Path,
    *,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 200_000,
    num_users: int = 20_000,
    num_items: int = 10_000,
    num_item_cats: int = 50,
    cat_vocab_sizes: tuple[int, ...] = (20, 50, 1_000, 10_000),
    num_numeric: int = 4,
    max_hist_len: int = 30,
    target_rate: float = 0.3,
    include_logit: bool = False,
) -> dict[str, Any]:
    """Write ``rows`` planted-signal CTR rows to the Parquet file ``path`` and describe the model.

    Chunk ``k`` is drawn from ``(seed, k)``, so the same arguments always give the same file.

    Returns:
        the config, calibrated ``bias``, the formula, and on a calibration sample the
        ``positive_rate`` and ``oracle_auc`` (AUC of the true logit: a ceiling for models).
    """
    if len(cat_vocab_sizes) < 2:
        raise ValueError("cat_vocab_sizes needs at least two fields (cat_0 x cat_1 is planted)")
    config = CtrConfig(
        num_users=num_users, num_items=num_items, num_item_cats=num_item_cats,
        cat_vocab_sizes=tuple(cat_vocab_sizes), num_numeric=num_numeric,
        max_hist_len=max_hist_len, target_rate=target_rate,
    )  # fmt: skip
    world = make_world(config, seed)
    calibration = draw_rows(world, np.random.default_rng([seed, 99]), CALIBRATION_ROWS)
    raw_logit = planted_logit(world, calibration)
    bias = calibrate_bias(raw_logit, target_rate)
    calibration_labels = np.random.default_rng([seed, 98]).random(len(raw_logit)) < sigmoid(raw_logit + bias)

    def make_chunk(rng: np.random.Generator, count: int) -> pa.Table:
        draws = draw_rows(world, rng, count)
        logit = planted_logit(world, draws) + bias
        label = rng.random(count) < sigmoid(logit)
        return to_table(draws, label, logit if include_logit else None)

    write_chunks(path, rows=rows, chunk_rows=chunk_rows, seed=seed, stream=1, make_chunk=make_chunk)
    return {
        "layout": "ctr",
        "path": str(path),
        "rows": rows,
        "seed": seed,
        "chunk_rows": chunk_rows,
        "config": {**asdict(config), "cat_vocab_sizes": list(config.cat_vocab_sizes)},
        "bias": round(bias, 6),
        "formula": __doc__.split("::")[1].split("Item categories")[0].strip(),
        "numeric_kinds": [NUMERIC_KINDS[k % len(NUMERIC_KINDS)] for k in range(num_numeric)],
        "calibration": {
            "rows": CALIBRATION_ROWS,
            "positive_rate": round(float(calibration_labels.mean()), 4),
            "oracle_auc": round(auc(calibration_labels, raw_logit), 4),
        },
    }


def make_world(config: CtrConfig, seed: int) -> CtrWorld:
    """Draw the planted parameters from ``(seed, 0)``."""
    rng = np.random.default_rng([seed, 0])
    users, items, cats, dim = config.num_users, config.num_items, config.num_item_cats, config.factor_dim
    item_cat = rng.integers(1, cats + 1, size=items)
    items_by_cat = np.argsort(item_cat, kind="stable")
    cat_starts = np.searchsorted(item_cat[items_by_cat], np.arange(1, cats + 2))
    centres = rng.normal(0.0, 1.0 / np.sqrt(dim), size=(cats + 1, dim))
    return CtrWorld(
        config=config,
        item_cat=item_cat,
        items_by_cat=items_by_cat,
        cat_starts=cat_starts,
        user_favourites=rng.integers(1, cats + 1, size=(users, 2)),
        user_factor=rng.normal(0.0, 1.0, size=(users, dim)),
        item_factor=centres[item_cat] + rng.normal(0.0, 0.5 / np.sqrt(dim), size=(items, dim)),
        user_bias=rng.normal(0.0, config.scale_linear, size=users),
        item_bias=rng.normal(0.0, config.scale_linear, size=items),
        pair_left=rng.normal(0.0, 0.5, size=(config.cat_vocab_sizes[0], 4)),
        pair_right=rng.normal(0.0, 0.5, size=(config.cat_vocab_sizes[1], 4)),
    )


def draw_rows(world: CtrWorld, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Draw the observable columns of ``count`` rows (ids, fields, numerics, tags, history)."""
    config = world.config
    users = zipf_ids(rng, count, config.num_users, 1.0)
    hist_lengths = rng.integers(0, config.max_hist_len + 1, size=count)
    hist_offsets, hist_rows = ragged_offsets(hist_lengths)
    hist_items = _items_like_user(world, rng, users[hist_rows], FAVOURITE_SHARE)
    liked_style = rng.random(count) < CANDIDATE_FAVOURITE_SHARE
    popular = zipf_ids(rng, count, config.num_items, 1.05)
    candidates = np.where(liked_style, _items_like_user(world, rng, users, 1.0), popular)
    tag_lengths = rng.integers(0, config.max_tags + 1, size=count)
    tag_offsets, _ = ragged_offsets(tag_lengths)
    tag_total = int(tag_offsets[-1])
    draws = {
        "user_id": users,
        "item_id": candidates,
        "item_cat": world.item_cat[candidates - 1],
        "hist_offsets": hist_offsets,
        "hist_item_ids": hist_items,
        "hist_cat": world.item_cat[hist_items - 1],
        "tag_offsets": tag_offsets,
        "tag_ids": zipf_ids(rng, tag_total, config.num_tags, 1.1),
        "tag_weights": np.round(rng.uniform(0.01, 1.0, size=tag_total), 2),
    }
    for field, vocab in enumerate(config.cat_vocab_sizes):
        draws[f"cat_{field}"] = zipf_ids(rng, count, vocab, 1.1)
    for column in range(config.num_numeric):
        draws[f"num_{column}"] = _numeric(rng, NUMERIC_KINDS[column % len(NUMERIC_KINDS)], count)
    return draws


def planted_logit(world: CtrWorld, draws: dict[str, np.ndarray]) -> np.ndarray:
    """The planted logit without ``bias``, ``(N,)`` float64."""
    config = world.config
    user, item = draws["user_id"] - 1, draws["item_id"] - 1
    count = len(user)
    logit = world.user_bias[user] + world.item_bias[item]
    for field in range(len(config.cat_vocab_sizes)):
        logit += config.scale_linear * hashed_normal(draws[f"cat_{field}"], salt=field + 1)
    for column in range(config.num_numeric):
        kind = NUMERIC_KINDS[column % len(NUMERIC_KINDS)]
        logit += NUMERIC_COEFFICIENTS[column % len(NUMERIC_COEFFICIENTS)] * _numeric_signal(kind, draws[f"num_{column}"])
    tag_rows = np.repeat(np.arange(count), np.diff(draws["tag_offsets"]))
    tag_terms = draws["tag_weights"] * config.scale_linear * hashed_normal(draws["tag_ids"], salt=1_000)
    logit += np.bincount(tag_rows, weights=tag_terms, minlength=count)
    user_item = np.einsum("nd,nd->n", world.user_factor[user], world.item_factor[item])  # (N,)
    logit += config.scale_user_item * user_item
    pair = np.einsum("nd,nd->n", world.pair_left[draws["cat_0"] - 1], world.pair_right[draws["cat_1"] - 1])
    logit += config.scale_cat_pair * pair / 0.5  # e0 . e1 has std 0.5: rescale to unit std
    hist_rows = np.repeat(np.arange(count), np.diff(draws["hist_offsets"]))
    same_cat = draws["hist_cat"] == draws["item_cat"][hist_rows]
    matches = np.bincount(hist_rows[same_cat], minlength=count)
    logit += config.scale_sequence * (np.log1p(matches) - 1.0)
    return logit


def to_table(draws: dict[str, np.ndarray], label: np.ndarray, logit: np.ndarray | None) -> pa.Table:
    """Arrow columns of one chunk (see the module docstring)."""
    columns: dict[str, pa.Array] = {name: pa.array(draws[name], pa.int64()) for name in ("user_id", "item_id", "item_cat")}
    for name in sorted((n for n in draws if n.startswith("cat_")), key=lambda n: int(n[4:])):
        columns[name] = pa.array(draws[name], pa.int64())
    for name in sorted((n for n in draws if n.startswith("num_")), key=lambda n: int(n[4:])):
        columns[name] = pa.array(draws[name].astype(np.float32))
    columns["tags"] = weighted_pairs(draws["tag_offsets"], draws["tag_ids"], draws["tag_weights"])
    hist_offsets = pa.array(draws["hist_offsets"].astype(np.int32))
    columns["hist_item_ids"] = pa.ListArray.from_arrays(hist_offsets, pa.array(draws["hist_item_ids"], pa.int64()))
    columns["hist_cat"] = pa.ListArray.from_arrays(hist_offsets, pa.array(draws["hist_cat"], pa.int64()))
    columns["label"] = pa.array(label.astype(np.float32))
    if logit is not None:
        columns["logit"] = pa.array(logit.astype(np.float32))
    return pa.table(columns)


def _items_like_user(world: CtrWorld, rng: np.random.Generator, users: np.ndarray, favourite_share: float) -> np.ndarray:
    """Item ids drawn uniformly within a category: a favourite of the user with probability
    ``favourite_share``, otherwise any category."""
    count, config = len(users), world.config
    favourite = world.user_favourites[users - 1, rng.integers(0, 2, size=count)]
    any_category = rng.integers(1, config.num_item_cats + 1, size=count)
    category = np.where(rng.random(count) < favourite_share, favourite, any_category)
    start, stop = world.cat_starts[category - 1], world.cat_starts[category]
    slot = np.minimum(start + (rng.random(count) * (stop - start)).astype(np.int64), config.num_items - 1)
    any_item = rng.integers(0, config.num_items, size=count)
    return np.where(stop > start, world.items_by_cat[slot], any_item) + 1  # empty category: any item


def _numeric(rng: np.random.Generator, kind: str, count: int) -> np.ndarray:
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.5, size=count)  # heavy right tail: needs log or batch norm
    if kind == "normal":
        return rng.normal(0.0, 1.0, size=count)
    if kind == "count":
        return np.floor(rng.exponential(20.0, size=count))
    return rng.uniform(0.0, 1.0, size=count)


def _numeric_signal(kind: str, values: np.ndarray) -> np.ndarray:
    """The standardised transform the planted logit uses for each numeric kind."""
    if kind == "lognormal":
        return np.log(values) / 1.5
    if kind == "count":
        return (np.log1p(values) - 2.5) / 1.1
    if kind == "normal":
        return values
    return np.zeros_like(values)
