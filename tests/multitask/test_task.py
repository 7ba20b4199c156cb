"""The multi_task task: weighted per-target losses, conditions, ESMM's entire-space loss, the spec."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Batch
from recstack.errors import ConfigError
from recstack.schema import Schema
from recstack.tasks import build_task, parse_task_section
from recstack.tasks.multi_task import ConditionedLoss, MultiTaskTask, TargetParams, _entire_space_loss

CLICK = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
LIKE = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])  # row 3: a like where click = 0 (ignored)
TARGETS = (TargetParams(name="click"), TargetParams(name="like", weight=0.5, condition="click"))


class Fixed(nn.Module):
    """Returns the given logits (as leaves, so their gradients can be read)."""

    def __init__(self, **logits: list[float]) -> None:
        super().__init__()
        self.logits = {k: torch.tensor(v, requires_grad=True) for k, v in logits.items()}
        self.targets = tuple(logits)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return dict(self.logits)


class EntireSpace(Fixed):
    entire_space = True


def batch(**labels: torch.Tensor) -> Batch:
    return Batch(dense={"x": torch.zeros(5, 1)}, labels=labels or {"click": CLICK, "like": LIKE})


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


ZC, ZL = [0.5, -1.0, 2.0, 0.0, 1.5], [1.0, 0.3, -2.0, 4.0, -0.5]


def test_loss_is_the_weighted_sum_of_per_target_losses_by_hand() -> None:
    model = Fixed(click=ZC, like=ZL)
    click = sum(bce(z, y) for z, y in zip(ZC, CLICK.tolist())) / 5
    like = sum(bce(ZL[i], LIKE[i].item()) for i in (0, 1, 4)) / 3  # only where click = 1
    loss = MultiTaskTask(targets=TARGETS).loss(model, batch())
    assert loss.item() == pytest.approx(click + 0.5 * like, rel=1e-6)


def test_a_regression_target_adds_its_squared_error() -> None:
    targets = (TargetParams(name="click"), TargetParams(name="secs", kind="regression", weight=2.0))
    model = Fixed(click=ZC, secs=[1.0, 2.0, 3.0, 4.0, 5.0])
    secs = torch.tensor([1.5, 2.0, 2.0, 4.0, 7.0])
    expected = sum(bce(z, y) for z, y in zip(ZC, CLICK.tolist())) / 5 + 2.0 * (0.25 + 0 + 1 + 0 + 4) / 5
    assert MultiTaskTask(targets=targets).loss(model, batch(click=CLICK, secs=secs)).item() == pytest.approx(expected, rel=1e-6)


def test_a_condition_masks_the_loss_and_its_gradient_to_rows_where_it_holds() -> None:
    model = Fixed(click=ZC, like=ZL)
    task = MultiTaskTask(targets=TARGETS)
    flipped = LIKE.clone()
    flipped[[2, 3]] = 1 - flipped[[2, 3]]  # labels where click = 0 change nothing
    assert task.loss(model, batch()).item() == pytest.approx(task.loss(model, batch(click=CLICK, like=flipped)).item())
    task.loss(model, batch()).backward()
    grad = model.logits["like"].grad
    assert grad[[2, 3]].abs().sum() == 0 and (grad[[0, 1, 4]] != 0).all()


def test_entire_space_trains_the_conditional_tower_only_through_the_joint_probability() -> None:
    model = EntireSpace(click=ZC, like=ZL)
    task = MultiTaskTask(targets=TARGETS)
    loss = task.loss(model, batch())
    joint = [bce_prob(sig(zc) * sig(zl), c * l) for zc, zl, c, l in zip(ZC, ZL, CLICK.tolist(), LIKE.tolist())]
    click = sum(bce(z, y) for z, y in zip(ZC, CLICK.tolist())) / 5
    assert loss.item() == pytest.approx(click + 0.5 * sum(joint) / 5, rel=1e-5)
    loss.backward()
    # d/dz_cvr of 0.5 * mean BCE(pCTR * pCVR, y): the CVR logit's only gradient, on EVERY row
    zc, zl = torch.tensor(ZC), torch.tensor(ZL, requires_grad=True)
    reference = 0.5 * F.binary_cross_entropy(torch.sigmoid(zc) * torch.sigmoid(zl), CLICK * LIKE)
    reference.backward()
    assert torch.allclose(model.logits["like"].grad, zl.grad, atol=1e-6)
    assert (model.logits["like"].grad[[2, 3]] != 0).all()  # non-clicked rows train CVR too (entire space)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def bce_prob(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_entire_space_loss_stays_finite_at_extreme_logits() -> None:
    model = EntireSpace(click=[30.0, -30.0, 30.0, 0.0, 0.0], like=[30.0, 30.0, -30.0, 0.0, 0.0])
    loss = MultiTaskTask(targets=TARGETS).loss(model, batch(click=torch.tensor([0.0, 1, 1, 0, 1]), like=torch.tensor([0.0, 1, 1, 0, 0])))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(t.grad).all() for t in model.logits.values())


def test_heads_are_probabilities_and_the_joint_is_at_most_the_condition() -> None:
    model = Fixed(click=ZC, like=ZL)
    task = MultiTaskTask(targets=TARGETS)
    heads = task.predict_heads(model, batch())
    assert task.heads == ("click", "like", "click_and_like") and list(heads) == list(task.heads)
    assert torch.allclose(heads["click_and_like"], torch.sigmoid(torch.tensor(ZC)) * torch.sigmoid(torch.tensor(ZL)))
    assert (heads["click_and_like"] <= heads["click"]).all()
    with pytest.raises(ValueError, match="several heads"):
        task.predict(model, batch())


def test_spec_round_trip_and_key_naming_errors() -> None:
    spec = parse_task_section({"type": "multi_task", "conditioned_loss": "masked", "targets": [{"name": "click"}, {"name": "like", "condition": "click"}],
                               "weighted_metric": [{"metric": "click_auc", "weight": 0.5}]})  # fmt: skip
    task = build_task(spec)
    assert isinstance(task, MultiTaskTask) and task.params.conditioned_loss is ConditionedLoss.MASKED
    assert build_task(spec.to_dict()) == task
    with pytest.raises(ConfigError, match=r"task.conditioned_los: unknown parameter \(did you mean 'conditioned_loss'\?\)"):
        parse_task_section({"type": "multi_task", "conditioned_los": "masked"})
    with pytest.raises(ConfigError, match=r"task.targets\[1\].condition: 'buy' is not a target"):
        parse_task_section({"type": "multi_task", "targets": [{"name": "click"}, {"name": "like", "condition": "buy"}]})
    with pytest.raises(ConfigError, match=r"task.targets\[0\].kind"):
        parse_task_section({"type": "multi_task", "targets": [{"name": "click", "kind": "ordinal"}]})


def test_targets_come_from_the_schema_and_must_be_its_own() -> None:
    schema = Schema.from_dict({"targets": [{"name": "click"}, {"name": "like", "weight": 0.5, "condition": "click"}], "features": [{"name": "a", "kind": "categorical"}]})
    task = MultiTaskTask().with_schema_targets(schema.targets)
    assert task.targets == TARGETS
    with pytest.raises(ConfigError, match="'buy' is not one of the schema's targets"):
        MultiTaskTask(targets=[TargetParams(name="buy")]).with_schema_targets(schema.targets)


def test_a_restated_target_keeps_the_schemas_kind_and_condition_and_may_reweight() -> None:
    schema = Schema.from_dict({"targets": [{"name": "click"}, {"name": "like", "condition": "click"}], "features": [{"name": "a", "kind": "categorical"}]})
    reweighted = (TargetParams(name="click"), TargetParams(name="like", weight=0.1, condition="click"))
    assert MultiTaskTask(targets=reweighted).with_schema_targets(schema.targets).targets == reweighted
    with pytest.raises(ConfigError, match=r"task.targets\[1\].condition: the schema declares target 'like' with condition 'click', the task gives None"):
        MultiTaskTask(targets=[TargetParams(name="click"), TargetParams(name="like", weight=0.1)]).with_schema_targets(schema.targets)
    with pytest.raises(ConfigError, match=r"task.targets\[0\].kind: the schema declares target 'click' with kind 'binary'"):
        MultiTaskTask(targets=[TargetParams(name="click", kind="regression")]).with_schema_targets(schema.targets)


def test_model_and_task_must_agree() -> None:
    task = MultiTaskTask(targets=TARGETS)
    with pytest.raises(ConfigError, match=r"the model scores \['click'\] but the task trains \['click', 'like'\]"):
        task.check_model(Fixed(click=ZC))
    with pytest.raises(ConfigError, match="masked contradicts it"):
        MultiTaskTask(targets=TARGETS, conditioned_loss="masked").check_model(EntireSpace(click=ZC, like=ZL))
    with pytest.raises(ConfigError, match="over the entire space needs binary targets with a condition"):
        MultiTaskTask(targets=(TargetParams(name="click"), TargetParams(name="like"))).check_model(EntireSpace(click=ZC, like=ZL))


def test_entire_space_loss_matches_the_bce_of_the_product_across_the_logit_range() -> None:
    # float64 BCE of sigmoid(a) * sigmoid(b) is exact enough up to |z| = 15 (1 - p >= 1e-13)
    grid = torch.linspace(-15, 15, 13)
    a, b = (t.reshape(-1) for t in torch.meshgrid(grid, grid, indexing="ij"))
    for y in (torch.zeros_like(a), torch.ones_like(a)):
        for row in range(len(a)):
            za, zb = a[row : row + 1], b[row : row + 1]
            loss = _entire_space_loss(za, zb, y[row : row + 1])
            p = torch.sigmoid(za.double()) * torch.sigmoid(zb.double())
            expected = -(y[row].double() * torch.log(p) + (1 - y[row].double()) * torch.log1p(-p))
            assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6), (za.item(), zb.item(), y[row].item())


# -- loss_weighting: uncertainty (Kendall, Gal & Cipolla 2018) --------------------------------


class Uncertain(Fixed):
    """Fixed logits plus the learned log-variances a multi-task ranker holds under uncertainty weighting."""

    def __init__(self, log_variance: list[float], **logits: list[float]) -> None:
        super().__init__(**logits)
        from recstack.nn.task_uncertainty import TaskUncertainty

        self.task_uncertainty = TaskUncertainty(self.targets)
        with torch.no_grad():
            self.task_uncertainty.log_variance.copy_(torch.tensor(log_variance))


def test_uncertainty_weighting_is_the_papers_loss_by_hand() -> None:
    """binary: exp(-s) L + s/2 (eq. 10); regression: exp(-s) L / 2 + s/2 (eq. 7); declared weights multiply L."""
    targets = (TargetParams(name="click", weight=2.0), TargetParams(name="secs", kind="regression"))
    s_click, s_secs = 0.4, -0.7
    model = Uncertain([s_click, s_secs], click=ZC, secs=[1.0, 2.0, 3.0, 4.0, 5.0])
    secs = torch.tensor([1.5, 2.0, 2.0, 4.0, 7.0])
    click = sum(bce(z, y) for z, y in zip(ZC, CLICK.tolist())) / 5
    mse = (0.25 + 0 + 1 + 0 + 4) / 5
    expected = 2.0 * math.exp(-s_click) * click + s_click / 2 + 0.5 * math.exp(-s_secs) * mse + s_secs / 2
    task = MultiTaskTask(targets=targets, loss_weighting="uncertainty")
    loss = task.loss(model, batch(click=CLICK, secs=secs))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # d/ds_k = -c_k exp(-s_k) L_k + 1/2: the log-variances train with the model
    grad = model.task_uncertainty.log_variance.grad
    assert grad.tolist() == pytest.approx([-2.0 * math.exp(-s_click) * click + 0.5, -0.5 * math.exp(-s_secs) * mse + 0.5], rel=1e-5)
    weights = task.loss_weights(model)
    assert weights["click"]["log_variance"] == pytest.approx(s_click) and weights["click"]["weight"] == pytest.approx(2.0 * math.exp(-s_click))
    assert weights["secs"]["weight"] == pytest.approx(0.5 * math.exp(-s_secs))


def test_learned_weights_settle_at_one_over_twice_each_loss() -> None:
    """With the losses held fixed, gradient descent on s_k reaches exp(-s_k) c_k = 1 / (2 L_k):
    the target with the larger loss ends with the smaller weight."""
    from recstack.nn.task_uncertainty import TaskUncertainty

    weigh = TaskUncertainty(["easy", "hard"])
    losses = [torch.tensor(0.1), torch.tensor(2.0)]
    optimizer = torch.optim.Adam(weigh.parameters(), lr=0.05)
    for _ in range(2000):
        optimizer.zero_grad()
        weigh.combine(losses, scales=[1.0, 1.0]).backward()
        optimizer.step()
    learned = weigh.weights([1.0, 1.0])
    assert learned["easy"] == pytest.approx(1 / (2 * 0.1), rel=1e-2) and learned["hard"] == pytest.approx(1 / (2 * 2.0), rel=1e-2)


def test_a_loss_weighting_the_model_does_not_match_is_an_error() -> None:
    uncertain = MultiTaskTask(targets=TARGETS, loss_weighting="uncertainty")
    with pytest.raises(ConfigError, match="model has no learned task weights"):
        uncertain.check_model(Fixed(click=ZC, like=ZL))
    with pytest.raises(ValueError, match="model has no learned task weights"):
        uncertain.loss(Fixed(click=ZC, like=ZL), batch())
    with pytest.raises(ConfigError, match="holds learned task weights that this loss would never train"):
        MultiTaskTask(targets=TARGETS).check_model(Uncertain([0.0, 0.0], click=ZC, like=ZL))
    assert MultiTaskTask(targets=TARGETS).loss_weights(Fixed(click=ZC, like=ZL)) is None
    with pytest.raises(ValueError, match="'sometimes'"):
        MultiTaskTask(targets=TARGETS, loss_weighting="sometimes")


# -- loss_weighting: gradnorm (Chen et al. 2018) ------------------------------------------------


def _two_losses(shared: torch.Tensor) -> list[torch.Tensor]:
    x1, x2 = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, -0.5, 3.0])
    return [(shared @ x1).pow(2).sum(), 0.1 * (shared @ x2).pow(2).sum()]  # gradients of different sizes


@pytest.mark.parametrize("through_graph", [False, True])
def test_gradnorm_trains_the_network_on_the_weighted_sum_and_the_weights_on_the_norm_gap(through_graph: bool) -> None:
    """Both ways give the same gradients: per-target gradients handed over by the surrogate, or
    (parameters None: fused tables that train inside the graph's backward) that backward itself."""
    from recstack.nn.gradnorm import GradNormWeights

    torch.manual_seed(0)
    shared = torch.randn(2, 3, requires_grad=True)
    weigh = GradNormWeights(["a", "b"])
    with torch.no_grad():
        weigh.weights.copy_(torch.tensor([1.2, 0.8]))
    losses = _two_losses(shared)
    norms = [torch.autograd.grad(loss, shared, retain_graph=True)[0].norm().item() for loss in losses]
    total = weigh.combine(losses, None if through_graph else [shared], [shared], alpha=1.5)
    assert total.item() == pytest.approx(1.2 * losses[0].item() + 0.8 * losses[1].item(), rel=1e-6)  # the value: sum w L
    assert weigh.initial_losses.tolist() == pytest.approx([loss.item() for loss in losses])  # L(0) from the first step
    total.backward()
    expected_shared = 1.2 * torch.autograd.grad(_two_losses(shared)[0], shared)[0] + 0.8 * torch.autograd.grad(_two_losses(shared)[1], shared)[0]
    torch.testing.assert_close(shared.grad, expected_shared)  # the network: the weights held fixed
    scaled = [1.2 * norms[0], 0.8 * norms[1]]
    mean = sum(scaled) / 2  # at the first step every training rate ratio is 1: the target is the mean
    expected_weights = [math.copysign(norms[k], scaled[k] - mean) for k in range(2)]
    assert weigh.weights.grad.tolist() == pytest.approx(expected_weights, rel=1e-5)


def test_gradnorm_renormalises_the_weights_and_evens_out_the_gradient_norms() -> None:
    from recstack.nn.gradnorm import GradNormWeights

    weigh = GradNormWeights(["a", "b"])
    with torch.no_grad():
        weigh.weights.copy_(torch.tensor([3.0, 1.0]))
    shared = torch.randn(2, 3, requires_grad=True)
    weigh.combine(_two_losses(shared), [shared], [shared], alpha=0.0)
    assert weigh.weights.detach().tolist() == pytest.approx([1.5, 0.5])  # summing to T = 2 before use
    torch.manual_seed(1)
    fixed = torch.randn(2, 3, requires_grad=True)  # the network held still: only the weights learn
    weigh = GradNormWeights(["a", "b"])
    optimizer = torch.optim.Adam(weigh.parameters(), lr=0.005)
    norms = torch.tensor([torch.autograd.grad(loss, fixed)[0].norm() for loss in _two_losses(fixed)])  # ~24x apart
    for _ in range(600):
        optimizer.zero_grad()
        weigh.combine(_two_losses(fixed), [fixed], [fixed], alpha=0.0).backward()
        optimizer.step()
    balanced = torch.tensor(list(weigh.normalized().values())) * norms
    assert (balanced.max() / balanced.min()).item() < 1.2 and (norms.max() / norms.min()).item() > 10
    assert sum(weigh.normalized().values()) == pytest.approx(2.0)


# -- loss_weighting: metabalance (He et al. 2022) -----------------------------------------------


def _metabalance_losses(shared: torch.Tensor, private: torch.Tensor) -> list[torch.Tensor]:
    x1, x2 = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, -0.5, 3.0])
    main = (shared @ x1).pow(2).sum()
    auxiliary = 0.1 * (shared @ x2).pow(2).sum() + (private * x2).sum().pow(2)  # private: the auxiliary target's alone
    return [main, auxiliary]


def _shared_and_private() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    shared, private = torch.randn(2, 3, generator=generator, requires_grad=True), torch.randn(3, generator=generator, requires_grad=True)
    return shared, private, _metabalance_losses(shared, private)


def test_metabalance_rescales_the_auxiliary_gradient_on_shared_tensors_only_by_hand() -> None:
    """Step 1: m_k = (1 - beta) ||G_k||, so the auxiliary gradient on the shared tensor becomes
    (r ||G_main|| / ||G_aux|| + 1 - r) G_aux; the private tensor keeps its plain gradient."""
    from recstack.nn.metabalance import MetaBalance

    shared, private, losses = _shared_and_private()
    g_main, g_aux = (torch.autograd.grad(loss, shared, retain_graph=True)[0] for loss in losses)
    g_private = torch.autograd.grad(losses[1], private, retain_graph=True)[0]
    balance = MetaBalance(["click", "like"])
    total = balance.combine(losses, [shared, private], main=0, relax_factor=0.7, beta=0.9)
    assert total.item() == pytest.approx(losses[0].item() + losses[1].item(), rel=1e-6)  # the value: the plain sum
    total.backward()
    ratio = (g_main.norm() / g_aux.norm()).item()
    assert ratio > 3  # the auxiliary gradient is much smaller here: it grows
    torch.testing.assert_close(shared.grad, g_main + (0.7 * ratio + 0.3) * g_aux)
    torch.testing.assert_close(private.grad, g_private)  # one target's tensor: untouched
    torch.testing.assert_close(balance.norms[:, 0], 0.1 * torch.stack([g_main.norm(), g_aux.norm()]))
    assert balance.norms[:, 1].tolist() == [0.0, 0.0]  # not shared: no average kept
    assert balance.gradient_scales(main=0, relax_factor=0.7) == {"click": 1.0, "like": pytest.approx(0.7 * ratio + 0.3, rel=1e-5)}


def test_metabalance_keeps_moving_averages_and_relax_zero_is_the_plain_sum() -> None:
    from recstack.nn.metabalance import MetaBalance

    shared, private, losses = _shared_and_private()
    first = torch.stack([torch.autograd.grad(loss, shared, retain_graph=True)[0].norm() for loss in losses])
    balance = MetaBalance(["click", "like"])
    balance.combine(losses, [shared, private], main=1, relax_factor=0.5, beta=0.8)
    with torch.no_grad():
        shared.mul_(0.5)  # the next step: other gradients
    losses = _metabalance_losses(shared, private)
    second = torch.stack([torch.autograd.grad(loss, shared, retain_graph=True)[0].norm() for loss in losses])
    total = balance.combine(losses, [shared, private], main=1, relax_factor=0.5, beta=0.8)
    averages = 0.8 * (0.2 * first) + 0.2 * second
    torch.testing.assert_close(balance.norms[:, 0], averages)
    total.backward()  # main = 1: now the first target is the auxiliary one, scaled by m_1 / m_0
    g = [torch.autograd.grad(loss, shared, retain_graph=True)[0] for loss in _metabalance_losses(shared, private)]
    factor = 0.5 * (averages[1] / averages[0]).item() + 0.5
    torch.testing.assert_close(shared.grad, factor * g[0] + g[1])

    shared, private, losses = _shared_and_private()
    MetaBalance(["click", "like"]).combine(losses, [shared, private], main=0, relax_factor=0.0, beta=0.9).backward()
    torch.testing.assert_close(shared.grad, torch.autograd.grad(sum(_metabalance_losses(shared, private)), shared)[0])


def test_metabalance_strategies_rescale_only_larger_or_only_smaller_auxiliary_gradients() -> None:
    """Here the auxiliary gradient is smaller than the main one's: ``enlarge`` rescales it as
    ``both`` does, ``shrink`` leaves it; with the roles swapped (it is then larger), the other way."""
    from recstack.nn.metabalance import MetaBalance

    shared, private, losses = _shared_and_private()
    g_main, g_aux = (torch.autograd.grad(loss, shared, retain_graph=True)[0] for loss in losses)
    ratio = (g_main.norm() / g_aux.norm()).item()  # > 1: the auxiliary one is smaller
    for strategy, main, expected in (
        ("enlarge", 0, g_main + (0.7 * ratio + 0.3) * g_aux),
        ("shrink", 0, g_main + g_aux),
        ("shrink", 1, (0.7 / ratio + 0.3) * g_main + g_aux),  # target 1 main: target 0's larger gradient shrinks
        ("enlarge", 1, g_main + g_aux),
    ):
        shared, private, losses = _shared_and_private()
        balance = MetaBalance(["click", "like"])
        balance.combine(losses, [shared, private], main=main, relax_factor=0.7, beta=0.9, strategy=strategy).backward()
        torch.testing.assert_close(shared.grad, expected, msg=f"{strategy}, main {main}")
        auxiliary = "like" if main == 0 else "click"
        changed = not torch.allclose(expected, g_main + g_aux)
        assert (balance.gradient_scales(main, 0.7, strategy)[auxiliary] != pytest.approx(1.0)) == changed


def test_metabalance_finds_the_tensors_several_targets_reach() -> None:
    """ESMM: the CTR tower is shared (pCTCVR = pCTR x pCVR), the CVR tower is not; MMoE: experts
    shared, gates and towers not; PLE (2 levels): the first level's task experts feed the shared
    gate (shared), its task gates feed one target; the last level's task experts and gates one."""
    from recstack.models import build_model
    from recstack.nn.metabalance import shared_parameter_indices

    from .helpers import SMALL_PARAMS, fitted, task_for, write_data
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        pre, train_batch, _ = fitted(write_data(Path(folder), rows=(600, 100, 100)))
    batch = train_batch.select(torch.arange(64))
    expected_private = {
        "esmm": ("cvr_bottom.", "towers.like."),
        "mmoe": ("gate.", "towers."),
        "ple": ("levels.0.task_gates.", "levels.1.specific.", "levels.1.task_gates.", "towers."),
        "shared_bottom": ("towers.",),
    }
    for name, private_prefixes in expected_private.items():
        model = build_model(name, pre.feature_map(), {**SMALL_PARAMS[name], "targets": ["click", "like"]})
        task = task_for(model)
        losses = list(task.target_losses(model(batch), batch, entire_space=task._entire_space(model)).values())
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        shared = {names[i] for i in shared_parameter_indices(losses, [p for p in model.parameters() if p.requires_grad])}
        assert shared == {n for n in names if not n.startswith(private_prefixes)}, name
        assert any(n.startswith("embeddings.") for n in shared)


def test_the_gradient_surrogate_hands_each_tensor_its_gradient_and_keeps_sparse_ones_sparse() -> None:
    from recstack.nn.gradient_surrogate import gradient_surrogate

    dense, table = torch.randn(2, 3, requires_grad=True), torch.randn(5, 2, requires_grad=True)
    unused = torch.randn(4, requires_grad=True)
    wanted_dense = torch.randn(2, 3)
    rows, values = torch.tensor([[1, 3, 1]]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]])
    wanted_rows = torch.sparse_coo_tensor(rows, values, (5, 2), check_invariants=True)  # row 1 twice: summed
    loss = gradient_surrogate([dense, table, unused], [wanted_dense, wanted_rows, None])
    assert loss.item() == 0.0
    loss.backward()
    torch.testing.assert_close(dense.grad, wanted_dense)
    assert table.grad.is_sparse
    torch.testing.assert_close(table.grad.to_dense(), wanted_rows.to_dense())
    assert unused.grad is None


def test_gradient_based_weightings_without_gradients_give_the_weighted_loss_and_change_nothing() -> None:
    """A forward under no_grad (the sharded run's probe, an evaluation): no autograd.grad, no state."""
    from recstack.nn.gradnorm import GradNormWeights
    from recstack.nn.metabalance import MetaBalance

    shared, private, _ = _shared_and_private()
    with torch.no_grad():
        losses = _metabalance_losses(shared, private)
        gradnorm, balance = GradNormWeights(["click", "like"]), MetaBalance(["click", "like"])
        assert gradnorm.combine(losses, [shared], [shared], alpha=1.5).item() == pytest.approx(sum(l.item() for l in losses))
        assert balance.combine(losses, [shared, private], main=0, relax_factor=0.7, beta=0.9).item() == pytest.approx(sum(l.item() for l in losses))
    assert bool(torch.isnan(gradnorm.initial_losses).all()) and balance.norms.shape == (2, 0)


def test_metabalance_counts_a_gradient_of_zeros_as_none() -> None:
    """A compiled model's backward returns zeros where eager autograd gives no gradient: such a
    tensor is not shared (else the main target's zero norm would scale the other's own tower)."""
    from recstack.nn.metabalance import shared_parameter_indices

    shared, own = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    losses = [(shared * 2).sum() + (own * 0).sum(), shared.pow(2).sum() + own.pow(2).sum()]
    assert shared_parameter_indices(losses, [shared, own]) == [0]
