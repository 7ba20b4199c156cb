"""``distributed.memory_budget_mb`` on a replicated (DDP) run: tables that do not fit one rank's
budget are refused before any table is allocated, naming the tables, the budget and the fix."""

from __future__ import annotations

import pytest
import torch

from ddp_workers import write_config
from recstack.data.feature_map import FeatureMap, TableInfo
from recstack.errors import ConfigError
from recstack.models import build_model
from recstack.nn.embedding import deferred_tables
from recstack.schema import Schema
from recstack.training.config import TrainerConfig
from recstack.training.replicated_budget import check_replicated_budget, replicated_table_bytes
from recstack.training.sharding_config import DistributedConfig


def _meta_deepfm(big_rows: int, dim: int = 64) -> torch.nn.Module:
    schema = Schema.from_dict({"label": "label", "features": [{"name": n, "kind": "categorical", "dim": dim} for n in ("big", "small")]})
    tables = {"big": TableInfo(name="big", num_rows=big_rows, dim=dim), "small": TableInfo(name="small", num_rows=1000, dim=dim)}
    with deferred_tables():
        return build_model("deepfm", FeatureMap(schema=schema, tables=tables), {"hidden_dims": [16]})


def test_a_20m_row_table_over_a_4gb_budget_is_refused_naming_tables_budget_and_fix():
    model = _meta_deepfm(20_000_002)  # on meta: nothing allocated
    assert all(p.is_meta for n, p in model.named_parameters() if "tables" in n)
    trainer = TrainerConfig(optimizer="adagrad", sparse_embeddings=True)
    with pytest.raises(ConfigError) as error:
        check_replicated_budget(model, DistributedConfig(memory_budget_mb=4096), trainer)
    text = str(error.value)
    assert "4096 MB per rank" in text and "embeddings.big 20,000,002 x 64 (4.77 GB)" in text
    assert "distributed.embeddings: sharded" in text and "adagrad state" in text
    assert "4.84 GB of weights + adagrad state = 9.69 GB per rank" in text  # + the linear part; one Adagrad accumulator per entry (sparse gradients)


def test_the_estimate_counts_gradients_and_optimizer_state():
    model = _meta_deepfm(10_000)
    weights = sum(size for _, _, size in replicated_table_bytes(model).values())
    assert weights == sum(rows * dim * 4 for rows, dim, _ in replicated_table_bytes(model).values())
    assert {"embeddings.big", "embeddings.small"} <= set(replicated_table_bytes(model))
    unbounded = DistributedConfig()
    assert check_replicated_budget(model, unbounded, TrainerConfig(optimizer="adam")) == weights * 4  # + grads + 2 moments
    assert check_replicated_budget(model, unbounded, TrainerConfig(optimizer="adam", sparse_embeddings=True)) == weights * 3
    assert check_replicated_budget(model, unbounded, TrainerConfig(optimizer="sgd")) == weights * 2
    assert check_replicated_budget(model, DistributedConfig(memory_budget_mb=weights * 4 / 2**20), TrainerConfig(optimizer="adam")) == weights * 4


def test_train_run_refuses_the_replicated_tables_before_training(tmp_path):
    from recstack.config import RunConfig
    from recstack.workflows.train import train_run

    path = write_config(tmp_path, train_rows=200, valid_rows=100, distributed={"memory_budget_mb": 0.01})
    with pytest.raises(ConfigError, match=r"memory_budget_mb: 0.01 MB per rank cannot hold the replicated embedding tables.*item_id .*distributed.embeddings: sharded"):
        train_run(RunConfig.from_yaml(path), log=lambda _: None)
    assert not (tmp_path / "run").exists()  # nothing published
