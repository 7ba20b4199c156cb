"""SparseInputs on TorchRec tables, one process: models unchanged give the same outputs, the
jagged inputs leave padding out, frozen tables get no gradient, and a missing TorchRec or a bad
``distributed:`` section is a clear ConfigError."""

from __future__ import annotations

import sys

import pytest
import torch

from recstack.config import RunConfig
from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.nn.sharded_inputs import TABLES_ATTRIBUTE, TorchRecSparseInputs, unpooled_features, use_torchrec_tables
from recstack.nn.sparse_inputs import SparseInputs
from recstack.nn.torchrec_tables import _jagged, require_torchrec
from recstack.tasks.binary import BinaryClassificationTask
from torchrec_workers import model_helpers, plain_model, world

RANKING = ["lr", "fm", "embedding_mlp", "deep_crossing", "wide_deep", "deepfm", "dcn", "dcn_v2", "din"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    feature_map, batch, _ = world(tmp_path_factory.mktemp("world"))
    return feature_map, batch


def _converted(name, feature_map, batch):
    model = plain_model(name, feature_map)
    task = BinaryClassificationTask()
    unpooled = unpooled_features(model, lambda: task.loss(model, batch))
    tables = use_torchrec_tables(model, unpooled=unpooled)
    return model, tables


@pytest.mark.parametrize("name", RANKING)
def test_every_ranking_model_gives_its_outputs_on_torchrec_tables(data, name):
    feature_map, batch = data
    plain = plain_model(name, feature_map).eval()
    model, tables = _converted(name, feature_map, batch)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), plain(batch), rtol=0, atol=1e-6)
    assert isinstance(getattr(model, TABLES_ATTRIBUTE), type(tables))
    inputs = [m for m in model.modules() if isinstance(m, TorchRecSparseInputs)]
    assert inputs and all(isinstance(i, SparseInputs) for i in inputs)


def test_gradients_reach_trainable_tables_and_not_frozen_ones(data):
    feature_map, batch = data
    model, tables = _converted("deepfm", feature_map, batch)
    BinaryClassificationTask().loss(model, batch).backward()
    grads = {name.rsplit(".", 2)[-2]: p.grad for name, p in tables.named_parameters()}
    frozen = [n for n, s in tables.specs.items() if not s.trainable]
    assert frozen == ["pre"]  # the pretrained table; its 1-wide linear twin trains
    assert grads["pre"] is None or not grads["pre"].any()  # its lookups are detached
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in tables.specs if n not in frozen)


def test_din_reads_shared_item_table_unpooled_and_the_rest_pooled(data):
    feature_map, batch = data
    model, tables = _converted("din", feature_map, batch)
    assert tables.specs["item"].unpooled and tables.specs["genre"].unpooled  # DIN's histories
    assert {f.name for f in tables.specs["item"].features} == {"item_id", "hist_item_ids"}  # one table
    assert not tables.specs["user"].unpooled and not tables.specs["tag"].unpooled


def test_dins_mini_batch_l2_on_torchrec_tables_equals_the_plain_one(data):
    feature_map, batch = data
    from recstack.models import build_model

    torch.manual_seed(0)
    plain = build_model("din", feature_map, model_helpers().model_params("din", l2_reg=0.01))
    torch.manual_seed(0)
    model = build_model("din", feature_map, model_helpers().model_params("din", l2_reg=0.01))
    task = BinaryClassificationTask()
    unpooled = unpooled_features(model, lambda: task.loss(model, batch))
    assert {"user_id", "item_id", "tags"} <= unpooled  # every feature the L2 term reads
    use_torchrec_tables(model, unpooled=unpooled)
    expected = plain.embeddings.mini_batch_l2(batch)
    torch.testing.assert_close(model.embeddings.mini_batch_l2(batch), expected, rtol=1e-6, atol=0)
    assert expected > 0


def test_the_probe_leaves_buffers_and_rng_as_they_were(data):
    feature_map, batch = data
    model = plain_model("din", feature_map)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    state = torch.get_rng_state()
    unpooled_features(model, lambda: BinaryClassificationTask().loss(model, batch))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_jagged_inputs_leave_padding_out_row_by_row_with_empty_rows_after():
    from recstack.schema import Schema

    features = Schema.from_dict({"features": [
        {"name": "item_id", "kind": "categorical"},
        {"name": "hist", "kind": "sequence", "maxlen": 3, "weights": "pairs", "pooling": "weighted_sum"},
    ]}).features
    batch = Batch(
        ids={"item_id": torch.tensor([7, 3, 0])},
        sequences={"hist": torch.tensor([[5, 9, 0], [0, 0, 0], [4, 0, 0]])},
        weights={"hist": torch.tensor([[0.5, 2.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])},
    )
    keys = [("item_id@item", features[0]), ("hist@item", features[1])]
    jagged, where = _jagged(batch, keys, 3, 4, weighted=True)  # padded to 4 rows (another rank's batch)
    assert jagged.values().tolist() == [7, 3, 5, 9, 4]
    assert jagged.lengths().tolist() == [1, 1, 0, 0, 2, 0, 1, 0]
    assert jagged.weights().tolist() == [1.0, 1.0, 0.5, 2.0, 1.5]  # ids unweighted: 1
    assert where["hist@item"].tolist() == [0, 1, 6]  # flat (B * L) positions of the values


def test_weighted_and_mean_pooling_match_the_plain_collection(data):
    feature_map, batch = data
    from recstack.nn.embedding import build_sparse_inputs

    torch.manual_seed(0)
    plain = build_sparse_inputs(feature_map)
    holder = torch.nn.Module()
    holder.embeddings = plain
    torch.manual_seed(0)
    reference = build_sparse_inputs(feature_map)
    use_torchrec_tables(holder)
    for name in ["tags", "hist_item_ids", "hist_genres", "user_id", "item_pre", "price"]:  # weighted_sum, mean, ids, frozen, bucketised
        torch.testing.assert_close(holder.embeddings.pooled(batch, name), reference.pooled(batch, name), rtol=0, atol=1e-6)
    torch.testing.assert_close(holder.embeddings.concat(batch, ["user_id", "age", "vec"]), reference.concat(batch, ["user_id", "age", "vec"]))


def test_drawn_rows_do_not_depend_on_the_sharding():
    from recstack.nn.torchrec_tables import INIT_CHUNK_ROWS, fill_normal

    rows, dim = INIT_CHUNK_ROWS + 100, 8  # two chunks
    whole = torch.empty(rows, dim)
    fill_normal(whole, row=0, col=0, dim=dim, std=0.01, seed=3, table="item")
    pieces = torch.empty(rows, dim)
    for row, size in [(0, 40_000), (40_000, rows - 40_000)]:  # row-wise halves (one across chunks),
        for c in (0, 4):  # each split column-wise too
            part = torch.empty(size, 4)
            fill_normal(part, row=row, col=c, dim=dim, std=0.01, seed=3, table="item")
            pieces[row : row + size, c : c + 4] = part
    assert torch.equal(whole, pieces)
    assert not whole[0].any() and whole[1:].std().item() == pytest.approx(0.01, rel=0.05)  # padding row zero


def test_deferred_tables_are_built_on_meta_and_drawn_when_placed(data):
    from recstack.models import build_model
    from recstack.nn.embedding import deferred_tables

    feature_map, batch = data
    with deferred_tables():
        model = build_model("din", feature_map, model_helpers().model_params("din"))
    plain_tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert {m.weight.is_meta for m in plain_tables} == {True, False}  # the pretrained table is read
    task = BinaryClassificationTask()
    unpooled = unpooled_features(model, lambda: task.loss(model, batch))  # zeros stand in for meta rows
    assert unpooled == {"hist_item_ids", "hist_genres"}
    tables = use_torchrec_tables(model, unpooled=unpooled, seed=0)
    weights = tables.full_weights()
    assert weights["item"][1:].std().item() == pytest.approx(0.01, rel=0.1) and not weights["item"][0].any()
    assert torch.isfinite(task.loss(model, batch))


def test_missing_torchrec_is_a_config_error_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec raises ImportError
    with pytest.raises(ConfigError, match=r"distributed.embeddings: sharded needs TorchRec.*pip install fbgemm-gpu-cpu==1.8.0"):
        require_torchrec()


def test_a_sharded_run_without_torchrec_fails_before_training(tmp_path, monkeypatch):
    from ddp_workers import write_config
    from recstack.workflows.train import train_run

    config = RunConfig.from_yaml(write_config(tmp_path, distributed={"embeddings": "sharded"}))
    monkeypatch.setitem(sys.modules, "torchrec", None)
    with pytest.raises(ConfigError, match="distributed.embeddings: sharded needs TorchRec"):
        train_run(config, log=lambda _: None)
    assert not (tmp_path / "run").exists()  # the partial run folder was discarded


def test_a_sharded_run_in_one_process_says_how_to_launch(tmp_path):
    from ddp_workers import write_config
    from recstack.workflows.train import train_run

    config = RunConfig.from_yaml(write_config(tmp_path, distributed={"embeddings": "sharded"}))
    with pytest.raises(ConfigError, match=r"needs several processes: recstack train CONFIG --nproc N"):
        train_run(config, log=lambda _: None)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"embedings": "sharded"}, "distributed.embedings: unknown setting (did you mean 'embeddings'?)"),
        ({"embeddings": "split"}, "distributed.embeddings: expected one of ['replicated', 'sharded']"),
        ({"memory_budget_mb": 0}, "distributed.memory_budget_mb: must be > 0"),
        ({"table_optimizer": "lamb"}, "distributed.table_optimizer: expected one of"),
        ({"tables": {"item": {"sharding": "diagonal"}}}, "distributed.tables.item.sharding[0]: expected one of"),
        ({"tables": {"item": {"kernel": "fused"}}}, "distributed.tables.item.kernel: unknown setting"),
    ],
)
def test_bad_distributed_sections_name_the_key(tmp_path, section, message):
    from ddp_workers import write_config

    with pytest.raises(ConfigError) as error:
        RunConfig.from_yaml(write_config(tmp_path, distributed=section))
    assert message in str(error.value)


def test_the_default_is_replicated(tmp_path):
    from ddp_workers import write_config

    config = RunConfig.from_yaml(write_config(tmp_path))
    assert not config.distributed.sharded


@pytest.mark.parametrize(
    "section, message",
    [
        ({"tables": {"items": {"sharding": "row_wise"}}}, r"distributed.tables: \['items'\] not among the model's tables"),
        ({"table_optimizer": "adam"}, r"distributed.table_optimizer: adam runs on GPUs only; fbgemm's CPU kernels have \['rowwise_adagrad', 'adagrad', 'sgd'\]"),
    ],
)
def test_shard_model_refuses_unknown_tables_and_gpu_only_optimisers_before_planning(data, section, message):
    from recstack.training.sharded import shard_model
    from recstack.training.sharding_config import DistributedConfig

    feature_map, batch = data
    model, _ = _converted("deepfm", feature_map, batch)
    config = DistributedConfig.from_dict({"embeddings": "sharded", **section})
    with pytest.raises(ConfigError, match=message):
        shard_model(model, config, lr=0.1, device=torch.device("cpu"))
