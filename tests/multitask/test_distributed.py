"""Sharded evaluation of a multi-task run: every rank's per-target metrics equal one process's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .helpers import SMALL_PARAMS, schema, write_data


def _rank(rank: int, init_method: str, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    try:
        from recstack.data.loader import BatchStream, LoaderConfig
        from recstack.data.preprocessor import Preprocessor
        from recstack.data.sources import DataSource
        from recstack.evaluation.ranking_evaluator import evaluate_ranking
        from recstack.models import build_model
        from recstack.tasks.multi_task import MultiTaskTask
        from recstack.workflows.distributed import evaluate_sharded

        source = DataSource.from_config({"paths": [f"{folder}/test.parquet"], "parquet_batch_rows": 100})
        pre = Preprocessor(schema()).fit(DataSource.from_config(f"{folder}/train.parquet"))
        torch.manual_seed(7)  # the same weights on both ranks
        model = build_model("mmoe", pre.feature_map(), {**SMALL_PARAMS["mmoe"], "targets": ["click", "like"]})
        task = MultiTaskTask().with_schema_targets(schema().targets)
        gathered = evaluate_sharded(model, task, pre, source, batch_size=64)
        whole = BatchStream(source=source, preprocessor=pre, config=LoaderConfig(batch_size=4096), rank=0, world_size=1)
        torch.save({"gathered": gathered, "single": evaluate_ranking(model, task, whole)}, Path(folder) / f"eval{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_multi_task_metrics_equal_one_process(tmp_path: Path) -> None:
    write_data(tmp_path, rows=(1000, 200, 700))
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(tmp_path / "test.parquet"), tmp_path / "test.parquet", row_group_size=100)  # 7 shards
    for attempt in (1, 2):  # once more only where a rank died by a signal (tests/distributed/ddp_workers.spawn)
        init_method = f"file://{tmp_path / f'rendezvous{attempt}'}"
        try:
            mp.spawn(_rank, args=(init_method, str(tmp_path)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException as error:
            if attempt == 2 or error.signal_name is None:
                raise
    results = [torch.load(tmp_path / f"eval{rank}.pt") for rank in range(2)]
    single = results[0]["single"]
    assert single["click_count"] == 700 and "click_and_like_auc" in single
    for result in results:
        for name, value in single.items():
            assert result["gathered"][name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
