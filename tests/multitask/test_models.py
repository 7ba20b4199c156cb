"""shared_bottom, esmm, mmoe, ple: outputs per target, the papers' structure, learning, save -> load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recstack.errors import ConfigError
from recstack.export.run_folder import RunPaths, save_model
from recstack.models import build_model
from recstack.models.multi_task_base import is_multi_task_model
from recstack.models.registry import model_class

from .helpers import MODELS, SMALL_PARAMS, fitted, head_aucs, task_for, train, write_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return fitted(write_data(tmp_path_factory.mktemp("mt")))


def build(name: str, feature_map, **overrides):
    return build_model(name, feature_map, {**SMALL_PARAMS[name], "targets": ["click", "like"], **overrides})


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm"])
@pytest.mark.parametrize("name", MODELS)
def test_one_logit_per_target_and_every_parameter_gets_gradient(name: str, batch_norm: bool, data) -> None:
    pre, train_batch, _ = data
    model = build(name, pre.feature_map(), batch_norm=batch_norm)
    if batch_norm and name in ("mmoe", "ple"):  # the experts' layers are normalised, not only the towers'
        assert any(".norms." in key for key in model.state_dict())
    assert is_multi_task_model(model_class(name))
    part = train_batch.select(slice(0, 64))
    logits = model(part)
    assert list(logits) == ["click", "like"] and all(v.shape == (64,) for v in logits.values())
    task_for(model).loss(model, part).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing


def test_esmm_cvr_tower_learns_only_through_pctcvr(data) -> None:
    pre, train_batch, _ = data
    model = build("esmm", pre.feature_map())
    part = train_batch.select(slice(0, 256))
    task = task_for(model)
    assert task._entire_space(model)  # ESMM's default: the paper's entire-space loss
    cvr_weight = next(model.cvr_bottom.parameters())
    # the CVR network's whole gradient is the pCTCVR term's (the CTR loss does not reach it) ...
    ctcvr_term = task.target_losses(model(part), part, entire_space=True)["like"]
    (from_ctcvr,) = torch.autograd.grad(ctcvr_term, [cvr_weight])
    (from_total,) = torch.autograd.grad(task.loss(model, part), [cvr_weight])
    assert torch.allclose(from_ctcvr, from_total, atol=1e-6)
    # ... and rows without a click train it too (the entire space), where a masked loss would not
    nonclicked = part.select(part.labels["click"] == 0)
    (grad,) = torch.autograd.grad(task.loss(model, nonclicked), [cvr_weight])
    assert grad.abs().sum() > 0
    heads = task.predict_heads(model, part)
    assert (heads["click_and_like"] <= heads["click"]).all()  # pCTCVR <= pCTR


def test_esmm_needs_two_targets_and_says_which() -> None:
    with pytest.raises(ConfigError, match=r"esmm needs two targets: a click target and a conversion target with condition: <click>, got \['click'\]"):
        model_class("esmm").Params.from_dict({"targets": ["click"]})


def test_mmoe_has_one_gate_per_target_summing_to_one_over_experts(data) -> None:
    pre, train_batch, _ = data
    model = build("mmoe", pre.feature_map(), num_experts=5)
    gates = model.gates(train_batch.select(slice(0, 32)))
    assert list(gates) == ["click", "like"]
    for weights in gates.values():
        assert weights.shape == (32, 5) and torch.allclose(weights.sum(-1), torch.ones(32)) and (weights >= 0).all()
    assert gates["click"].data_ptr() != gates["like"].data_ptr()


def test_ple_levels_gates_see_own_and_shared_experts_and_the_last_has_no_shared_gate(data) -> None:
    pre, train_batch, _ = data
    model = build("ple", pre.feature_map(), num_levels=3, num_shared_experts=2, num_specific_experts=3, hidden_dims=[12])
    outputs = model.level_outputs(model.features(train_batch.select(slice(0, 16))))
    assert len(outputs) == 3
    for level, (layer, (task_out, shared_out)) in enumerate(zip(model.levels, outputs)):
        assert [t.shape for t in task_out] == [(16, 12), (16, 12)]
        assert [g.linear.out_features for g in layer.task_gates] == [3 + 2, 3 + 2]  # own 3 + shared 2
        last = level == 2
        assert (shared_out is None) == last and (layer.shared_gate is None) == last
        if not last:
            assert shared_out.shape == (16, 12) and layer.shared_gate.linear.out_features == 2 * 3 + 2  # all experts


def test_ple_task_gate_ignores_the_other_tasks_experts(data) -> None:
    pre, train_batch, _ = data
    model = build("ple", pre.feature_map(), num_levels=1)
    features = model.features(train_batch.select(slice(0, 8)))
    before = model.level_outputs(features)[-1][0]
    with torch.no_grad():
        for p in model.levels[0].specific[1].parameters():  # the like target's own experts
            p.add_(1.0)
    after = model.level_outputs(features)[-1][0]
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])


@pytest.mark.parametrize("name", MODELS)
def test_learns_both_planted_targets(name: str, data) -> None:
    pre, train_batch, test_batch = data
    model = build(name, pre.feature_map())
    task = task_for(model)
    train(model, task, train_batch, epochs=5, lr=0.005)
    aucs = head_aucs(model, task, test_batch)
    assert aucs["click"] > 0.66 and aucs["like"] > 0.64, aucs  # chance 0.5; the oracle ~0.82 on both


@pytest.mark.parametrize("name", MODELS)
def test_save_load_gives_identical_outputs(name: str, data, tmp_path: Path) -> None:
    from recstack.export.run_folder import load_run

    pre, train_batch, _ = data
    model = build(name, pre.feature_map())
    task = task_for(model)
    train(model, task, train_batch.select(slice(0, 512)), epochs=1)
    paths = RunPaths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    pre.save(paths.preprocessor)
    save_model(paths, model, name=name, params={**SMALL_PARAMS[name], "targets": ["click", "like"]}, task=task.spec.to_dict())
    run = load_run(tmp_path)
    model.eval()
    part = train_batch.select(slice(0, 100))
    from recstack.export.run_folder import task_from_run

    loaded_task = task_from_run(run)
    assert loaded_task == task
    expected, got = task.predict_heads(model, part), loaded_task.predict_heads(run.model, part)
    assert all(torch.equal(expected[h], got[h]) for h in task.heads)
