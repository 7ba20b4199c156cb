"""FusedAdam/FusedAdamW: torch's fused updates, with the step counters in one tensor."""

import io

import pytest
import torch

from recstack.training.fused_adam import FusedAdam, FusedAdamW

SHAPES = [(7, 4), (5,), (3, 2), (1,)]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]


def _set_grads(params, step: int, skip: int | None = None) -> None:
    torch.manual_seed(100 + step)
    for k, p in enumerate(params):
        p.grad = None if k == skip else torch.randn(p.shape)


@pytest.mark.parametrize("ours, theirs", [(FusedAdam, torch.optim.Adam), (FusedAdamW, torch.optim.AdamW)])
def test_updates_equal_torchs_fused_optimizer_missing_gradients_included(ours, theirs):
    mine, reference = _params(), _params()
    kwargs = {"lr": 1e-2, "weight_decay": 0.1, "fused": True}
    opt_mine, opt_reference = ours(mine, **kwargs), theirs(reference, **kwargs)
    for step in range(6):
        skip = 2 if step == 3 else None  # a parameter without a gradient takes torch's own step
        _set_grads(mine, step, skip)
        _set_grads(reference, step, skip)
        opt_mine.step()
        opt_reference.step()
        for p, q in zip(mine, reference):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
            for key in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(opt_mine.state[p][key], opt_reference.state[q][key], rtol=0, atol=0)
    assert opt_mine.state[mine[2]]["step"].item() == 5.0  # skipped once
    assert opt_mine.state[mine[0]]["step"].item() == 6.0


def test_counters_are_one_tensor_after_the_first_step():
    params = _params()
    optimizer = FusedAdam(params, lr=1e-2, fused=True)
    for step in range(3):
        _set_grads(params, step)
        optimizer.step()
    steps = [optimizer.state[p]["step"] for p in params]
    assert len({s.untyped_storage().data_ptr() for s in steps}) == 1
    assert [s.item() for s in steps] == [3.0] * len(params)


def test_state_dict_round_trip_continues_like_an_uninterrupted_run():
    uninterrupted, resumed = _params(), _params()
    opt_a = FusedAdam(uninterrupted, lr=1e-2, fused=True)
    opt_b = FusedAdam(resumed, lr=1e-2, fused=True)
    for step in range(3):
        for params, opt in ((uninterrupted, opt_a), (resumed, opt_b)):
            _set_grads(params, step)
            opt.step()
    buffer = io.BytesIO()
    torch.save(opt_b.state_dict(), buffer)
    buffer.seek(0)
    opt_b = FusedAdam(resumed, lr=1e-2, fused=True)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(3, 6):
        for params, opt in ((uninterrupted, opt_a), (resumed, opt_b)):
            _set_grads(params, step)
            opt.step()
    for p, q in zip(uninterrupted, resumed):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        assert opt_b.state[q]["step"].item() == 6.0
