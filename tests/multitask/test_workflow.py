"""recstack train / evaluate / predict on a multi-task run: per-target metrics everywhere, early
stopping on a target's metric, config errors before any data is read."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from recstack.config import RunConfig
from recstack.errors import ConfigError
from recstack.training.callbacks.base import TrainerCallback
from recstack.workflows.predict import evaluate_run, predict_run
from recstack.data.sources import DataSource
from recstack.workflows.train import train_run

from .helpers import SCHEMA, SMALL_PARAMS, write_data

ROOT = Path(__file__).resolve().parents[2]


def config(folder: Path, out: Path, *, model: str = "mmoe", schema: dict | None = None, **trainer: Any) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "mt",
            "data": {split: str(folder / f"{split}.parquet") for split in ("train", "valid", "test")},
            "schema": schema or SCHEMA,
            "task": {"type": "multi_task"},
            "model": {"name": model, "params": SMALL_PARAMS[model]},
            "loader": {"batch_size": 256, "shuffle_buffer": 10000},
            "trainer": {"epochs": 2, "lr": 0.005, "monitor": "click_and_like_auc", "progress": False, **trainer},
            "output": str(out),
            "threads": 1,
        }
    )


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.evaluations: list[dict[str, float]] = []

    def on_evaluate(self, state, control, metrics) -> None:  # type: ignore[override]
        self.evaluations.append(dict(metrics))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_data(tmp_path_factory.mktemp("mt"), rows=(4000, 1000, 1000))


def test_train_writes_per_target_metrics_tensorboard_and_curves_then_evaluate_and_predict(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train_run(config(data, run), log=lambda _: None)
    for split in ("valid", "test"):
        assert {"click_auc", "click_gauc", "click_logloss", "like_auc", "like_gauc", "like_logloss", "click_and_like_auc"} <= set(metrics[split])
        assert metrics[split]["click_auc"] > 0.6 and metrics[split]["like_auc"] > 0.6
    assert json.loads((run / "metrics.json").read_text())["test"] == metrics["test"]
    assert (run / "learning_curve.png").stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"eval/click_auc", "eval/like_auc", "eval/click_and_like_auc"} <= set(events.Tags()["scalars"])
    assert evaluate_run(run, DataSource.from_config(str(data / "test.parquet")), write=False)["like_auc"] == pytest.approx(metrics["test"]["like_auc"])
    assert predict_run(run, DataSource.from_config(str(data / "test.parquet")), tmp_path / "scores.parquet") == 1000
    scores = pq.read_table(tmp_path / "scores.parquet")
    assert scores.column_names == ["click", "like", "click_and_like"]


def test_early_stopping_and_the_best_epoch_follow_a_target_metric(data: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    metrics = train_run(config(data, tmp_path / "run", epochs=6, lr=0.05, patience=1, monitor="like_logloss", monitor_mode="min"),
                        log=lambda _: None, callbacks=[recorder])  # fmt: skip
    history = [m["like_logloss"] for m in recorder.evaluations]
    best = min(range(len(history)), key=history.__getitem__)
    assert metrics["best_epoch"] == best + 1
    if metrics["stopped_early"]:
        assert len(history) == best + 2  # one evaluation without improvement (patience 1)
    assert metrics["valid"]["like_logloss"] == pytest.approx(history[best], rel=1e-5)  # the best epoch's weights


def test_a_weighted_metric_can_be_monitored(data: Path, tmp_path: Path) -> None:
    cfg = config(data, tmp_path / "run", epochs=1, monitor="weighted_metric")
    raw = dict(cfg.raw)
    raw["task"] = {"type": "multi_task", "weighted_metric": [{"metric": "click_auc", "weight": 0.5}, {"metric": "like_auc", "weight": 0.5}]}
    metrics = train_run(RunConfig.from_dict(raw), log=lambda _: None)
    assert metrics["test"]["weighted_metric"] == pytest.approx(0.5 * metrics["test"]["click_auc"] + 0.5 * metrics["test"]["like_auc"])


@pytest.mark.parametrize("model", ["mmoe", "esmm"])
def test_uncertainty_weighting_learns_the_task_weights_and_the_saved_model_reloads(data: Path, tmp_path: Path, model: str) -> None:
    run = tmp_path / "run"
    raw = dict(config(data, run, model=model, epochs=2).raw)
    raw["task"] = {"type": "multi_task", "loss_weighting": "uncertainty"}
    metrics = train_run(RunConfig.from_dict(raw), log=lambda _: None)
    assert metrics["test"]["click_auc"] > 0.6 and metrics["test"]["click_and_like_auc"] > 0.6
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved["loss_weights"]) == {"click", "like"}
    for learned in saved["loss_weights"].values():  # trained away from their start (s = 0, weight 1)
        assert learned["log_variance"] != 0 and learned["weight"] == pytest.approx(math.exp(-learned["log_variance"]), rel=1e-5)
    spec = json.loads((run / "model.json").read_text())
    assert spec["params"]["loss_weighting"] == "uncertainty" and spec["task"]["params"]["loss_weighting"] == "uncertainty"
    reloaded = evaluate_run(run, DataSource.from_config(str(data / "test.parquet")), write=False)
    assert reloaded["click_and_like_auc"] == pytest.approx(metrics["test"]["click_and_like_auc"])


@pytest.mark.parametrize("model", ["shared_bottom", "ple", "esmm"])
def test_gradnorm_learns_weights_summing_to_the_targets_and_the_saved_model_reloads(data: Path, tmp_path: Path, model: str) -> None:
    run = tmp_path / "run"
    raw = dict(config(data, run, model=model, epochs=2).raw)
    raw["task"] = {"type": "multi_task", "loss_weighting": "gradnorm", "gradnorm_alpha": 0.5}
    metrics = train_run(RunConfig.from_dict(raw), log=lambda _: None)
    assert metrics["test"]["click_auc"] > 0.6 and metrics["test"]["click_and_like_auc"] > 0.6
    learned = json.loads((run / "metrics.json").read_text())["loss_weights"]
    weights = [learned[name]["weight"] for name in ("click", "like")]
    assert sum(weights) == pytest.approx(2.0) and weights[0] != pytest.approx(1.0)  # trained, renormalised
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    curve = [event.value for event in events.Scalars("train/loss_weight/click/weight")]  # one point an epoch
    assert len(curve) == 2 and any(value == pytest.approx(weights[0], rel=1e-5) for value in curve)  # the kept epoch's
    reloaded = evaluate_run(run, DataSource.from_config(str(data / "test.parquet")), write=False)
    assert reloaded["click_and_like_auc"] == pytest.approx(metrics["test"]["click_and_like_auc"])


@pytest.mark.parametrize("model", ["esmm", "ple"])
def test_metabalance_trains_reports_gradient_scales_and_the_saved_model_reloads(data: Path, tmp_path: Path, model: str) -> None:
    run = tmp_path / "run"
    raw = dict(config(data, run, model=model, epochs=2).raw)
    raw["task"] = {"type": "multi_task", "loss_weighting": "metabalance", "metabalance_main": "like"}
    metrics = train_run(RunConfig.from_dict(raw), log=lambda _: None)
    assert metrics["test"]["click_auc"] > 0.6 and metrics["test"]["click_and_like_auc"] > 0.6
    scales = json.loads((run / "metrics.json").read_text())["loss_weights"]
    assert scales["like"] == {"gradient_scale": 1.0} and scales["click"]["gradient_scale"] > 0  # like: the main target
    assert scales["click"]["gradient_scale"] != pytest.approx(1.0)
    spec = json.loads((run / "model.json").read_text())
    assert spec["params"]["loss_weighting"] == "metabalance" and spec["task"]["params"]["metabalance_main"] == "like"
    reloaded = evaluate_run(run, DataSource.from_config(str(data / "test.parquet")), write=False)
    assert reloaded["click_and_like_auc"] == pytest.approx(metrics["test"]["click_and_like_auc"])


def test_a_warm_start_carries_the_loss_weighting_state_or_starts_it_fresh_when_it_changed(data: Path, tmp_path: Path) -> None:
    """The parent's MetaBalance averages go on in a child with the same weighting; a child that
    switches to uncertainty weighting starts its log-variances at 0 (no key error)."""
    import torch

    def raw(run: Path, weighting: str) -> dict:
        out = dict(config(data, run, model="mmoe", epochs=1).raw)
        out["task"] = {"type": "multi_task", "loss_weighting": weighting}
        return out

    parent = tmp_path / "parent"
    train_run(RunConfig.from_dict(raw(parent, "metabalance")), log=lambda _: None)
    parent_norms = torch.load(parent / "model.pt", weights_only=True)["task_metabalance.norms"]
    assert parent_norms.shape[0] == 2 and bool((parent_norms > 0).any())
    same = tmp_path / "same"
    train_run(RunConfig.from_dict(raw(same, "metabalance")), init_from=parent, log=lambda _: None)
    child_norms = torch.load(same / "model.pt", weights_only=True)["task_metabalance.norms"]
    assert child_norms.shape == parent_norms.shape
    switched = tmp_path / "switched"
    metrics = train_run(RunConfig.from_dict(raw(switched, "uncertainty")), init_from=parent, log=lambda _: None)
    assert set(metrics["loss_weights"]) == {"click", "like"}
    assert "task_metabalance.norms" not in torch.load(switched / "model.pt", weights_only=True)

    from recstack.models import build_model
    from recstack.training.warm_start import grow_model

    from .helpers import fitted

    pre = fitted(data)[0]
    params = {**SMALL_PARAMS["mmoe"], "targets": ["click", "like"], "loss_weighting": "metabalance"}
    child = build_model("mmoe", pre.feature_map(), params)
    assert child.task_metabalance.norms.shape == (2, 0)  # sized at the first step, or by the parent's
    parent_state = build_model("mmoe", pre.feature_map(), params).state_dict()
    parent_state["task_metabalance.norms"] = torch.rand(2, len(list(child.parameters())))
    grow_model(child, parent_state, parent=pre, child=pre)
    assert torch.equal(child.task_metabalance.norms, parent_state["task_metabalance.norms"])


@pytest.mark.parametrize("weighting", ["metabalance", "gradnorm"])
def test_gradient_based_weightings_train_sparse_embedding_tables(data: Path, tmp_path: Path, weighting: str) -> None:
    """Per-target gradients on sparse tables stay sparse: SparseAdam still trains them."""
    raw = dict(config(data, tmp_path / "run", model="mmoe", epochs=1, sparse_embeddings=True).raw)
    raw["model"] = {"name": "mmoe", "params": {**SMALL_PARAMS["mmoe"], "sparse_embeddings": True}}
    raw["task"] = {"type": "multi_task", "loss_weighting": weighting}
    metrics = train_run(RunConfig.from_dict(raw), log=lambda _: None)
    assert metrics["test"]["click_auc"] > 0.6 and set(metrics["loss_weights"]) == {"click", "like"}


def test_metabalance_options_are_checked_before_any_data_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for task, message in (
        ({"metabalance_relax_factor": 1.5}, r"metabalance_relax_factor: must be in \[0, 1\], got 1.5"),
        ({"metabalance_beta": 1.0}, r"metabalance_beta: must be in \[0, 1\), got 1.0"),
        ({"metabalance_main": "buy"}, r"metabalance_main: 'buy' is not a target \(targets: \['click', 'like'\]\)"),
        ({"metabalance_strategy": "halve"}, r"task.metabalance_strategy: expected one of \['both', 'shrink', 'enlarge'\], got 'halve'"),
    ):
        raw = dict(config(missing, tmp_path / "run").raw)
        raw["task"] = {"type": "multi_task", "loss_weighting": "metabalance", **task}
        with pytest.raises(ConfigError, match=message):
            train_run(RunConfig.from_dict(raw), log=lambda _: None)


def test_metabalance_and_gradnorm_on_tables_alone_are_refused_with_sharded_tables(data: Path) -> None:
    """TorchRec trains sharded tables in fused kernels: MetaBalance, and GradNorm where the tables
    are the only shared layer (ESMM), would see no gradient there; MMoE's shared experts are an
    ordinary layer (GradNorm allowed: tests/distributed/test_torchrec_training.py)."""
    from recstack.models import build_model
    from recstack.workflows.sharded import check_loss_weighting_shardable

    from .helpers import fitted

    pre = fitted(data)[0]
    metabalance = build_model("mmoe", pre.feature_map(), {**SMALL_PARAMS["mmoe"], "targets": ["click", "like"], "loss_weighting": "metabalance"})
    with pytest.raises(ConfigError, match="metabalance rescales each target's gradient on every shared tensor, the embedding tables among them"):
        check_loss_weighting_shardable(metabalance)
    for name, refused in (("esmm", True), ("mmoe", False)):
        model = build_model(name, pre.feature_map(), {**SMALL_PARAMS[name], "targets": ["click", "like"], "loss_weighting": "gradnorm"})
        if refused:
            with pytest.raises(ConfigError, match="ESMM shares only its embedding tables"):
                check_loss_weighting_shardable(model)
        else:
            check_loss_weighting_shardable(model)


def test_config_errors_before_any_data_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"  # no files: the errors come first
    with pytest.raises(ConfigError, match=r"trainer.monitor: 'auc' is not reported by this multi-task run; one of \['click_auc'"):
        train_run(config(missing, tmp_path / "a", monitor="auc"), log=lambda _: None)
    single = {**SCHEMA, "targets": [{"name": "click"}]}
    with pytest.raises(ConfigError, match=r"model.params.targets: esmm needs two targets: a click target and a conversion target with condition: <click>, got \['click'\]"):
        train_run(config(missing, tmp_path / "b", model="esmm", schema=single), log=lambda _: None)
    raw = dict(config(missing, tmp_path / "c").raw)
    raw["model"] = {"name": "deepfm"}
    with pytest.raises(ConfigError, match="the multi_task task needs a multi-task model"):
        train_run(RunConfig.from_dict(raw), log=lambda _: None)
    raw = dict(config(missing, tmp_path / "e").raw)
    raw["task"] = {"type": "multi_task", "loss_weighting": "uncertainty"}
    raw["model"] = {"name": "mmoe", "params": {**SMALL_PARAMS["mmoe"], "loss_weighting": "fixed"}}
    with pytest.raises(ConfigError, match=r"model.params.loss_weighting: 'fixed' differs from task.loss_weighting 'uncertainty'"):
        train_run(RunConfig.from_dict(raw), log=lambda _: None)
    raw["task"] = {"type": "multi_task", "loss_weighting": "learned"}
    with pytest.raises(ConfigError, match="loss_weighting"):
        train_run(RunConfig.from_dict(raw), log=lambda _: None)
    raw["task"] = {"type": "multi_task", "loss_weighting": "gradnorm", "gradnorm_alpha": -1}
    with pytest.raises(ConfigError, match="gradnorm_alpha"):
        train_run(RunConfig.from_dict(raw), log=lambda _: None)
    raw = dict(config(missing, tmp_path / "d").raw)
    raw["task"] = {"type": "binary"}
    with pytest.raises(ConfigError, match=r"model 'mmoe' scores several targets and trains with task: \{type: multi_task\}"):
        train_run(RunConfig.from_dict(raw), log=lambda _: None)


@pytest.mark.slow
def test_cli_datasets_train_evaluate_on_movielens(tmp_path: Path) -> None:
    """recstack datasets movielens-multitask -> recstack train configs/ml100k_mmoe.yaml (1 epoch) -> evaluate."""

    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "recstack.cli", *args, "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    data = tmp_path / "ml100k_multitask"
    stats = cli("datasets", "movielens-multitask", "--out", str(data))
    assert stats["click_rate"]["train"] == pytest.approx(0.5, abs=1e-3)
    run = tmp_path / "mmoe"
    metrics = cli("train", "configs/ml100k_mmoe.yaml", "--set", "trainer.epochs=1", "--set", f"data.dir={data}", "--set", f"output={run}")
    popularity = stats["popularity_auc"]["test"]
    assert metrics["test"]["click_auc"] > popularity["click"] + 0.03 and metrics["test"]["like_auc"] > popularity["like"] + 0.03
    evaluated = cli("evaluate", str(run), "--data", str(data / "test.parquet"))
    assert evaluated["click_and_like_auc"] == pytest.approx(metrics["test"]["click_and_like_auc"])


def test_the_train_summary_prints_learned_loss_weights(tmp_path: Path) -> None:
    from recstack.cli import _train_summary

    metrics = {"best_epoch": 2, "epochs_run": 2, "stopped_early": False, "train_seconds": 3.0,
               "loss_weights": {"click": {"weight": 0.81244}, "like": {"weight": 1.18756}}}  # fmt: skip
    assert "loss weights: click weight 0.8124, like weight 1.188" in _train_summary(metrics, tmp_path).splitlines()
