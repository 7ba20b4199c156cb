"""``distributed.embeddings: sharded`` end to end in 2 gloo processes: a DeepFM and a DSSM learn
their planted signal with TorchRec-sharded tables, the run folder is the ordinary one (the
exported run evaluates as it did in training), and a resumed run reaches the uninterrupted
run's weights."""

from __future__ import annotations

import json

import pytest
import torch

from ddp_workers import spawn, write_config
from torchrec_workers import train_run_and_save

SHARDED = {"embeddings": "sharded", "table_optimizer": "rowwise_adagrad", "tables": {"item_id": {"sharding": "row_wise"}}}
CTR = {"train_rows": 4000, "row_group_rows": 200, "loader": {"batch_size": 200, "shuffle_buffer": 0}}


@pytest.fixture(scope="module")
def deepfm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepfm")
    config = write_config(folder, trainer={"epochs": 2, "lr": 0.01}, distributed=SHARDED, **CTR)
    spawn(train_run_and_save, str(config), str(folder), False)
    return folder, [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow
def test_sharded_deepfm_learns_the_planted_signal(deepfm):
    _, ranks = deepfm
    metrics = ranks[0]["metrics"]
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2
    assert metrics["valid"]["auc"] > 0.7  # the planted user/item/category effects (0.5: chance)
    assert ranks[1]["metrics"]["valid"] == metrics["valid"]


@pytest.mark.slow
def test_validation_in_shards_equals_the_gathered_replicas(deepfm):
    # each epoch's validation ran on the sharded model (no table gathered); the final metrics on a
    # replica with the gathered tables, holding the best epoch's weights: the same numbers
    _, ranks = deepfm
    metrics = ranks[0]["metrics"]
    best = ranks[0]["evaluations"][metrics["best_epoch"] - 1]
    for name in ("auc", "logloss", "gauc", "count"):
        assert best[name] == pytest.approx(metrics["valid"][name], abs=1e-6), name
    assert ranks[1]["evaluations"] == ranks[0]["evaluations"]


@pytest.mark.slow
def test_the_run_folder_is_the_plain_one_with_the_plan_beside_it(deepfm):
    from recstack.data.sources import DataSource
    from recstack.workflows.predict import evaluate_run

    folder, ranks = deepfm
    run = folder / "run"
    plan = json.loads((run / "sharding_plan.json").read_text())
    assert plan["tables"]["item_id"]["sharding_type"] == "row_wise"
    assert [s["rank"] for s in plan["tables"]["item_id"]["shards"]] == [0, 1]
    assert sorted(p.name for p in (run / "checkpoints").glob("sharded-*"))  # DCP shards
    # one process, the ordinary evaluate: the gathered tables score as the sharded model did
    again = evaluate_run(run, DataSource(paths=(str(folder / "valid.parquet"),)), write=False)
    for name in ("auc", "logloss", "gauc"):
        assert again[name] == pytest.approx(ranks[0]["metrics"]["valid"][name], abs=1e-6)


@pytest.mark.slow
def test_resumed_sharded_run_reaches_the_uninterrupted_weights(deepfm, tmp_path):
    _, whole = deepfm
    first = write_config(tmp_path, trainer={"epochs": 1, "lr": 0.01}, distributed=SHARDED, **CTR)
    spawn(train_run_and_save, str(first), str(tmp_path), False)
    both = write_config(tmp_path, trainer={"epochs": 2, "lr": 0.01}, distributed=SHARDED, **CTR)
    spawn(train_run_and_save, str(both), str(tmp_path), True)
    resumed = torch.load(tmp_path / "rank0.pt")
    assert resumed["metrics"]["epochs_run"] == 2
    for name, value in whole[0]["state"].items():
        torch.testing.assert_close(resumed["state"][name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_resuming_on_another_number_of_ranks_is_a_clear_error(deepfm, tmp_path):
    import shutil

    folder, _ = deepfm
    shutil.copytree(folder / "run", tmp_path / "run")  # a 2-rank sharded run, resumed by 1 rank
    config = write_config(tmp_path, trainer={"epochs": 3, "lr": 0.01}, distributed=SHARDED, **CTR)
    with pytest.raises(Exception, match=r"written by 2 ranks, resumed with 1; resume with --nproc 2"):
        spawn(train_run_and_save, str(config), str(tmp_path), True, world_size=1)


@pytest.mark.slow
def test_sharded_dssm_learns_the_planted_clusters(tmp_path):
    import pyarrow.parquet as pq
    import yaml

    from recstack.datasets import generate_retrieval

    data = tmp_path / "data"
    generate_retrieval(data, num_users=300, num_items=200, interactions_per_user=12, num_clusters=10, seed=0)
    train = pq.read_table(data / "train.parquet")  # row groups of 256: record batches for both ranks
    pq.write_table(train, data / "train.parquet", row_group_size=256)
    config = {
        "name": "dssm_sharded",
        "seed": 0,
        "data": {split: str(data / f"{split}.parquet") for split in ("train", "valid", "test", "seen")}
        | {"catalog": str(data / "items.parquet")},
        "schema": {
            "label": None,
            "group": "user_id",
            "tables": {"item": {"dim": 16}},
            "features": [
                {"name": "user_id", "kind": "categorical", "side": "user", "dim": 16},
                {"name": "segment", "kind": "categorical", "side": "user", "dim": 8},
                {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 20, "pooling": "mean", "side": "user"},
                {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
                {"name": "genre", "kind": "categorical", "side": "item", "dim": 8},
            ],
        },
        "task": {"type": "retrieval", "loss": "in_batch_softmax", "temperature": 0.1},
        "model": {"name": "dssm", "params": {"hidden_dims": [32], "output_activation": "identity"}},
        "loader": {"batch_size": 128, "shuffle_buffer": 0},
        "trainer": {"epochs": 3, "lr": 0.01, "progress": False, "monitor": "recall@10", "device": "cpu"},
        "evaluation": {"ks": [10, 50], "exclude_columns": []},
        "distributed": {"embeddings": "sharded", "table_optimizer": "rowwise_adagrad"},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    spawn(train_run_and_save, str(path), str(tmp_path), False)
    metrics = torch.load(tmp_path / "rank0.pt")["metrics"]
    plan = json.loads((tmp_path / "run" / "sharding_plan.json").read_text())
    assert {f for f in plan["tables"]} >= {"item", "user_id", "segment", "genre"}  # item: one table, both towers
    assert metrics["valid"]["recall@50"] > 3 * 50 / 200  # far above a random ranking of 200 items


@pytest.mark.slow
def test_sharded_mmoe_under_gradnorm_trains_its_tables_and_keeps_the_ranks_equal(tmp_path):
    """GradNorm's norms come from partial backwards beside TorchRec's: the tables still train in
    the backward through the graph (they move between the first and the second epoch), the dense
    part stays equal on both ranks (its DDP runs without static_graph), and the sharding's probe
    forward, without gradients, passes through the loss."""
    from ddp_workers import train_and_save, write_multitask_config, write_multitask_data

    data = write_multitask_data(tmp_path / "data", 2000)
    tables = {}
    for epochs in (1, 2):
        folder = tmp_path / f"epochs{epochs}"
        sharded = {"embeddings": "sharded", "table_optimizer": "rowwise_adagrad"}
        config = write_multitask_config(folder, data, weighting="gradnorm", epochs=epochs, distributed=sharded)
        spawn(train_and_save, str(config), str(folder))  # each rank's own model, in memory
        ranks = [torch.load(folder / f"rank{rank}.pt")["state"] for rank in range(2)]
        for name, value in ranks[0].items():
            if not name.startswith("embeddings.") and name != "task_gradnorm.initial_losses":  # per rank: TorchRec broadcasts no buffers
                assert torch.equal(value, ranks[1][name]), name
        assert ranks[0]["task_gradnorm.weights"][0] != pytest.approx(1.0)  # trained
        saved = torch.load(folder / "run" / "model.pt", weights_only=True)  # the gathered tables
        tables[epochs] = {k: v for k, v in saved.items() if k.startswith("embeddings.tables.")}
    assert tables[1] and all(not torch.equal(tables[1][k], tables[2][k]) for k in tables[1])
