"""What each spawned rank runs in the TorchRec tests (importable by the children).

The data is the model tests' full schema (tests/models/helpers.py): ids, shared tables
(``item_id`` and ``hist_item_ids``), weighted var-len tags, a frozen pretrained table, a
bucketised numeric, dense values.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

_HELPERS = Path(__file__).resolve().parents[1] / "models" / "helpers.py"


def model_helpers() -> Any:
    """tests/models/helpers.py under its own module name (no clash with other helpers.py)."""
    name = "recstack_tests_model_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HELPERS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def world(folder: Path, rows: int = 64) -> tuple[Any, Any, Any]:
    """(feature map, whole batch, preprocessor) of the full schema."""
    helpers = model_helpers()
    path, _ = helpers.write_pretrained(folder)
    records = helpers.full_records(rows)
    preprocessor = helpers.fit(helpers.full_schema(path), records)
    return preprocessor.feature_map(), preprocessor.transform(records), preprocessor


def plain_model(name: str, feature_map: Any) -> torch.nn.Module:
    from recstack.models import build_model

    torch.manual_seed(0)  # the same initial weights on every rank and in the reference
    return build_model(name, feature_map, model_helpers().model_params(name))


def _shard(model: torch.nn.Module, batch: Any, sharding: str | None, *, table_optimizer: str = "sgd", lr: float = 0.1, budget_mb: float | None = None) -> Any:
    from recstack.nn.sharded_inputs import table_weights, unpooled_features, use_torchrec_tables
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.training.sharded import shard_model
    from recstack.training.sharding_config import DistributedConfig

    task = BinaryClassificationTask()
    unpooled = unpooled_features(model, lambda: task.loss(model, batch))
    weights = {k: v.detach().clone() for k, v in table_weights(model).items()}
    tables = use_torchrec_tables(model, unpooled=unpooled, device="meta")
    constraints = {} if sharding is None else {n: {"sharding": [sharding]} for n, s in tables.specs.items() if s.dim % 4 == 0}
    config = DistributedConfig.from_dict(
        {"embeddings": "sharded", "table_optimizer": table_optimizer, "tables": constraints, "memory_budget_mb": budget_mb}
    )
    return shard_model(model, config, lr=lr, device=torch.device("cpu"), weights=weights)


CASES = [("deepfm", "table_wise"), ("deepfm", "row_wise"), ("deepfm", "column_wise"), ("din", "row_wise")]


def compare_all(rank: int, folder: str) -> None:
    """Every case of :data:`CASES` and the DCP round trip in one process group (one start-up)."""
    out = Path(folder)
    results = {case: compare_sharded(out, rank, *case) for case in CASES}
    results["dcp"] = checkpoint_round_trip(out, rank)
    results["budget"] = budget_error(out, rank)
    results["lr"] = scheduled_lr_reaches_the_kernels(out, rank)
    torch.save(results, out / f"results{rank}.pt")


def compare_sharded(out: Path, rank: int, model_name: str, sharding: str) -> dict[str, Any]:
    """The sharded model vs the plain one on the same weights: outputs; after one SGD step of
    both (fused table SGD + torch SGD on the dense part, each rank on its half of the batch; the
    plain model on the whole batch) the weights; and the gathered replica's outputs."""
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.workflows.sharded import load_replica

    feature_map, batch, _ = world(out / f"data{rank}")
    task = BinaryClassificationTask()
    plain = plain_model(model_name, feature_map)
    sharded = _shard(plain_model(model_name, feature_map), batch, sharding)
    half = _half(batch, rank)

    sharded.dmp.eval()
    plain.eval()
    with torch.no_grad():
        outputs = (sharded.dmp(half) - plain(half)).abs().max().item()
    sharded.dmp.train()
    plain.train()
    dense = torch.optim.SGD(sharded.dense_parameters(), lr=0.1)
    task.loss(sharded.dmp, half).backward()
    dense.step()
    reference = torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.1)
    task.loss(plain, batch).backward()
    reference.step()
    replica = plain_model(model_name, feature_map)
    load_replica(replica, sharded)
    stepped = {k: (v - replica.state_dict()[k]).abs().max().item() for k, v in plain.state_dict().items()}
    sharded.dmp.eval()
    with torch.no_grad():
        exported = (sharded.dmp(half) - replica.eval()(half)).abs().max().item()
    return {"outputs": outputs, "stepped": stepped, "exported": exported, "plan": sharded.report}


def _half(batch: Any, rank: int) -> Any:
    from recstack.data.batch import Batch

    rows = slice(rank * 32, rank * 32 + 32)
    return Batch(
        ids={k: v[rows] for k, v in batch.ids.items()},
        sequences={k: v[rows] for k, v in batch.sequences.items()},
        weights={k: v[rows] for k, v in batch.weights.items()},
        dense={k: v[rows] for k, v in batch.dense.items()},
        labels={k: v[rows] for k, v in batch.labels.items()},
    )


def checkpoint_round_trip(out: Path, rank: int) -> dict[str, float]:
    """DCP save of a trained sharded model and its table optimiser, load into a fresh one:
    identical outputs, and the next step identical too (the row-wise Adagrad state came back)."""
    import torch.distributed.checkpoint as dcp

    from recstack.tasks.binary import BinaryClassificationTask

    feature_map, batch, _ = world(out / f"data{rank}")
    half = _half(batch, rank)
    task = BinaryClassificationTask()

    def trained(steps: int) -> Any:
        sharded = _shard(plain_model("deepfm", feature_map), batch, "row_wise", table_optimizer="rowwise_adagrad")
        for _ in range(steps):
            task.loss(sharded.dmp, half).backward()
        return sharded

    first = trained(3)
    state = {"model": first.dmp.state_dict(), "optim": first.fused_optimizer.state_dict()}
    dcp.save(state, checkpoint_id=str(out / "dcp"))
    second = trained(0)
    loaded = {"model": second.dmp.state_dict(), "optim": second.fused_optimizer.state_dict()}
    dcp.load(loaded, checkpoint_id=str(out / "dcp"))
    second.dmp.load_state_dict(loaded["model"])
    second.fused_optimizer.load_state_dict(loaded["optim"])
    with torch.no_grad():
        before = (first.dmp(half) - second.dmp(half)).abs().max().item()
    for sharded in (first, second):  # one more step each: the optimiser state must match too
        task.loss(sharded.dmp, half).backward()
    with torch.no_grad():
        after = (first.dmp(half) - second.dmp(half)).abs().max().item()
    return {"before": before, "after": after}


def budget_error(out: Path, rank: int) -> str:
    """The planner's refusal of a per-rank budget smaller than the tables, as recstack words it."""
    from recstack.errors import ConfigError

    feature_map, batch, _ = world(out / f"data{rank}")
    try:
        _shard(plain_model("deepfm", feature_map), batch, None, budget_mb=0.001)
    except ConfigError as error:
        return str(error)
    return ""


def train_run_and_save(rank: int, config_path: str, out_dir: str, resume: bool) -> None:
    """``train_run`` (resumed or not) in this rank; saves the run folder's weights and metrics."""
    from recstack.config import RunConfig
    from recstack.export.run_folder import load_run
    from recstack.workflows.train import train_run

    from recstack.training import TrainerCallback

    class Evaluations(TrainerCallback):
        def __init__(self) -> None:
            self.found: list[dict[str, float]] = []

        def on_evaluate(self, state: Any, control: Any, metrics: dict[str, float]) -> None:
            self.found.append(dict(metrics))

    config = RunConfig.from_yaml(config_path)
    evaluations = Evaluations()
    metrics = train_run(config, resume=resume, log=lambda _: None, callbacks=[evaluations])
    dist.barrier()  # rank 0 has published the run folder
    state = {k: v.clone() for k, v in load_run(config.output).model.state_dict().items()}
    torch.save({"state": state, "metrics": metrics, "evaluations": evaluations.found}, Path(out_dir) / f"rank{rank}.pt")


def scheduled_lr_reaches_the_kernels(out: Path, rank: int) -> float:
    """What a scheduler does (the fused optimiser's group lr set to 0 between steps) holds for
    the next backward: the largest change of any table entry (0 expected)."""
    from recstack.tasks.binary import BinaryClassificationTask
    from recstack.training.sharded import full_tables

    feature_map, batch, _ = world(out / f"data{rank}")
    sharded = _shard(plain_model("deepfm", feature_map), batch, "row_wise", lr=0.1)
    task = BinaryClassificationTask()
    task.loss(sharded.dmp, _half(batch, rank)).backward()  # a step at lr 0.1
    for group in sharded.fused_optimizer.param_groups:
        group["lr"] = 0.0
    before = full_tables(sharded)
    task.loss(sharded.dmp, _half(batch, rank)).backward()
    after = full_tables(sharded)
    return max((after[name] - before[name]).abs().max().item() for name in before if name in sharded.tables.specs and sharded.tables.specs[name].dim % 4 == 0)


RETRIEVAL_SCHEMA = {
    "label": None,
    "group": "user_id",
    "tables": {"item": {"dim": 16}},
    "features": [
        {"name": "user_id", "kind": "categorical", "side": "user", "dim": 16},
        {"name": "hist_item_ids", "kind": "sequence", "table": "item", "maxlen": 20, "pooling": "mean", "side": "user"},
        {"name": "item_id", "kind": "categorical", "table": "item", "side": "item"},
        {"name": "genre", "kind": "categorical", "side": "item", "dim": 8},
    ],
}


def item_vectors_in_shards(rank: int, folder: str) -> None:
    """A DSSM, its item table row-wise over the ranks: item vectors written shard by shard
    (``write_item_vector_shards``, never gathered), then, as the reference, the same model
    gathered (``load_replica``) and its catalogue embedded whole. Rank 0 streams the parts into
    FAISS and Milvus Lite and searches both beside an exact index of the gathered vectors."""
    from recstack.data.preprocessor import Preprocessor
    from recstack.data.sources import DataSource
    from recstack.models import build_model
    from recstack.nn.embedding import deferred_tables
    from recstack.nn.sharded_inputs import table_weights, unpooled_features, use_torchrec_tables
    from recstack.retrieval.index import create_index
    from recstack.schema import Schema
    from recstack.training.sharded import shard_model
    from recstack.training.sharding_config import DistributedConfig
    from recstack.workflows.retrieval import embed_items, embed_users
    from recstack.workflows.sharded import load_replica
    from recstack.workflows.sharded_index import index_vector_shards, write_item_vector_shards

    out = Path(folder)
    data = out / "data"
    preprocessor = Preprocessor(Schema.from_dict(RETRIEVAL_SCHEMA))
    preprocessor.fit(DataSource(paths=(str(data / "train.parquet"),)))
    catalog = DataSource(paths=(str(data / "items.parquet"),))
    feature_map = preprocessor.feature_map()
    params = {"hidden_dims": [32], "output_activation": "identity"}
    with deferred_tables():
        model = build_model("dssm", feature_map, params)
    probe = preprocessor.transform(next(DataSource(paths=(str(data / "train.parquet"),)).chunks()).records.slice(0, 64))
    unpooled = unpooled_features(model, lambda: model(probe))  # as shard_run_model: tables on meta
    weights = {k: v.detach() for k, v in table_weights(model).items()}
    use_torchrec_tables(model, unpooled=unpooled, device="meta", seed=0)
    config = DistributedConfig.from_dict({"embeddings": "sharded", "tables": {"item": {"sharding": "row_wise"}}})
    sharded = shard_model(model, config, lr=0.1, device=torch.device("cpu"), weights=weights, seed=3)
    shard = write_item_vector_shards(sharded, preprocessor, catalog, out / "vectors", device=torch.device("cpu"), batch_size=16 + 16 * rank)

    torch.manual_seed(0)
    replica = build_model("dssm", feature_map, params)
    load_replica(replica, sharded)  # the reference only: the gathered tables
    item_ids, item_vectors = embed_items(replica, preprocessor, catalog)
    _, users = embed_users(replica, preprocessor, DataSource(paths=(str(data / "valid.parquet"),)))
    result: dict[str, Any] = {"shard": shard.to_dict()}
    dist.barrier()  # every rank's parts are written
    if rank == 0:
        exact = create_index("exact", dim=item_vectors.shape[1])
        exact.add(item_ids, item_vectors)
        result["exact"] = exact.search(users, 10)
        faiss = create_index("faiss", dim=item_vectors.shape[1], kind="flat")
        result["faiss_added"] = index_vector_shards(out / "vectors", faiss, batch_rows=50)
        result["faiss"] = faiss.search(users, 10)
        with create_index("milvus", dim=item_vectors.shape[1], uri=str(out / "milvus.db"), collection="items", index_type="FLAT") as milvus:
            result["milvus_added"] = index_vector_shards(out / "vectors", milvus, batch_rows=50)
            result["milvus"] = milvus.search(users, 10)
        result["catalogue"] = len(item_ids)
        result["gathered"] = (item_ids, item_vectors, users)  # the reference's vectors
    torch.save(result, out / f"vectors{rank}.pt")



def train_run_metrics(rank: int, config_path: str, out_dir: str) -> None:
    """``train_run`` in this rank; saves its metrics (a run folder without ``model.pt`` too)."""
    from recstack.config import RunConfig
    from recstack.workflows.train import train_run

    metrics = train_run(RunConfig.from_yaml(config_path), log=lambda _: None)
    torch.save({"metrics": metrics}, Path(out_dir) / f"rank{rank}.pt")
