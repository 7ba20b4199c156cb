"""Lockstep batches: every row once per epoch across ranks, and the same step count on each."""

import pytest
import torch

from ddp_workers import record_row_ids, spawn, write_config


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Per layout, per rank, per epoch: [(row ids, is padding)] of every step (one spawn)."""
    root = tmp_path_factory.mktemp("sharding")
    layouts = {
        # 2,000 rows in 20 row groups of 100: 10 steps of 100 rows on each rank
        "even": write_config(root / "even"),
        # row groups of 300: rank 0 gets 4 (1,100 rows, the last group short), rank 1 gets 3
        # (900 rows); with batches of 100 that is 11 steps against 9
        "uneven": write_config(root / "uneven", row_group_rows=300, loader={"batch_size": 100}),
    }
    spawn(record_row_ids, {name: str(path) for name, path in layouts.items()}, str(root), 2)
    return {name: [torch.load(root / f"rows{rank}.pt")[name] for rank in range(2)] for name in layouts}


@pytest.mark.parametrize("layout", ["even", "uneven"])
def test_every_row_is_trained_on_exactly_once_per_epoch(steps, layout):
    per_rank = steps[layout]
    for epoch in range(2):
        seen = [row for rank in per_rank for ids, padding in rank[epoch] if not padding for row in ids]
        assert sorted(seen) == list(range(2000))  # no row twice, none missing


def test_uneven_shards_are_padded_so_ranks_take_the_same_steps(steps):
    per_rank = steps["uneven"]
    assert [len(rank[0]) for rank in per_rank] == [11, 11]
    assert [sum(padding for _, padding in rank[0]) for rank in per_rank] == [0, 2]
    assert [sum(padding for _, padding in rank[0]) for rank in steps["even"]] == [0, 0]
