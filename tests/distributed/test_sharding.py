"""Lockstep batches: every row once per epoch across ranks, and the same step count on each."""

import torch

from ddp_workers import record_row_ids, spawn, write_config


def _steps(tmp_path, **config):
    path = write_config(tmp_path, **config)
    spawn(record_row_ids, str(path), str(tmp_path), 2)
    return [torch.load(tmp_path / f"rows{rank}.pt") for rank in range(2)]


def test_every_row_is_trained_on_exactly_once_per_epoch(tmp_path):
    # 2,000 rows in 20 row groups of 100: 10 steps of 100 rows on each rank
    per_rank = _steps(tmp_path)
    for epoch in range(2):
        seen = [row for steps in per_rank for ids, padding in steps[epoch] if not padding for row in ids]
        assert sorted(seen) == list(range(2000))  # no row twice, none missing
        assert set(per_rank[0][epoch][0][0]).isdisjoint(per_rank[1][epoch][0][0])


def test_uneven_shards_are_padded_so_ranks_take_the_same_steps(tmp_path):
    # 2,000 rows in row groups of 300: rank 0 gets 4 groups (1,100 rows with the short last
    # one), rank 1 gets 3 (900 rows); with batches of 100 that is 11 steps against 9
    per_rank = _steps(tmp_path, row_group_rows=300, loader={"batch_size": 100})
    counts = [len(steps[0]) for steps in per_rank]
    assert counts == [11, 11]
    assert [sum(padding for _, padding in steps[0]) for steps in per_rank] == [0, 2]
    seen = [row for steps in per_rank for ids, padding in steps[0] if not padding for row in ids]
    assert sorted(seen) == list(range(2000))
