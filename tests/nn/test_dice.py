import re

import torch

from recstack.nn import Dice


def _expected(x, mean, var, alpha, eps=1e-9):
    p = torch.sigmoid((x - mean) / torch.sqrt(var + eps))
    return p * x + (1 - p) * alpha * x


def test_training_uses_batch_statistics():
    dice = Dice(num_features=3).train()
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.25, -0.5]))
    x = torch.randn(16, 3) * 2 + 1
    expected = _expected(x, x.mean(dim=0), x.var(dim=0, unbiased=False), dice.alpha)
    torch.testing.assert_close(dice(x), expected)


def test_evaluation_uses_running_statistics():
    dice = Dice(num_features=3)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, 0.2, 0.3]))
        dice.norm.running_mean.copy_(torch.tensor([1.0, -1.0, 0.0]))
        dice.norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    dice.eval()
    x = torch.randn(16, 3)
    expected = _expected(x, dice.norm.running_mean, dice.norm.running_var, dice.alpha)
    torch.testing.assert_close(dice(x), expected)
    # one sample alone in eval mode does not depend on the rest of the batch
    torch.testing.assert_close(dice(x[:1]), expected[:1])


def test_training_updates_running_statistics():
    dice = Dice(num_features=2, momentum=0.5).train()
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    dice(x)
    # new = 0.5 * old + 0.5 * batch (unbiased variance, as BatchNorm)
    torch.testing.assert_close(dice.norm.running_mean, torch.tensor([1.0, 10.0]))
    torch.testing.assert_close(dice.norm.running_var, torch.tensor([1.5, 100.5]))


def test_alpha_starts_at_zero_and_learns():
    dice = Dice(num_features=4)
    assert dice.alpha.tolist() == [0.0] * 4
    dice(torch.randn(8, 4)).sum().backward()
    assert dice.alpha.grad is not None and dice.alpha.grad.abs().sum() > 0
    assert not any(name.startswith("norm.") for name, _ in dice.named_parameters())


def test_alpha_one_is_identity():
    dice = Dice(num_features=3)
    with torch.no_grad():
        dice.alpha.fill_(1.0)
    x = torch.randn(5, 3)
    torch.testing.assert_close(dice(x), x)


def test_three_dimensional_input_uses_statistics_over_batch_and_length():
    dice = Dice(num_features=3).train()
    x = torch.randn(4, 6, 3)  # (B, L, D)
    flat = x.reshape(24, 3)
    expected = _expected(flat, flat.mean(dim=0), flat.var(dim=0, unbiased=False), 0.0)
    torch.testing.assert_close(dice(x), expected.reshape(4, 6, 3))


def test_mask_keeps_padding_out_of_statistics():
    x = torch.randn(4, 6, 3)  # (B, L, D)
    mask = torch.rand(4, 6) > 0.4
    polluted = x.masked_fill(~mask.unsqueeze(-1), 1e3)  # padding holds garbage
    masked, reference = Dice(num_features=3).train(), Dice(num_features=3).train()

    out = masked(polluted, mask)
    expected = reference(x[mask])  # (N_valid, D): only real positions, as a 2-D batch
    torch.testing.assert_close(out[mask], expected)
    torch.testing.assert_close(masked.norm.running_mean, reference.norm.running_mean)
    torch.testing.assert_close(masked.norm.running_var, reference.norm.running_var)


def test_valid_rows_keep_trailing_padding_out_of_statistics():
    x = torch.randn(10, 3)
    polluted = torch.cat([x[:7], torch.full((3, 3), 1e3)])  # rows 7.. are padding
    padded, reference = Dice(num_features=3).train(), Dice(num_features=3).train()

    out = padded(polluted, valid_rows=7)
    torch.testing.assert_close(out[:7], reference(x[:7]))
    assert out.shape == (10, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(padded.norm.running_mean, reference.norm.running_mean)
    torch.testing.assert_close(padded.norm.running_var, reference.norm.running_var)


def test_valid_rows_needs_a_two_dimensional_input_without_mask():
    import pytest

    dice = Dice(num_features=3).train()
    with pytest.raises(ValueError, match="valid_rows"):
        dice(torch.randn(2, 4, 3), valid_rows=5)
    with pytest.raises(ValueError, match="valid_rows"):
        dice(torch.randn(8, 3), torch.ones(8, dtype=torch.bool), valid_rows=5)


def test_default_momentum_is_the_documented_one():
    # the docstring once said 0.01 (TensorFlow's 0.99) while the code used 0.1: they must agree
    dice = Dice(num_features=2).train()
    documented = float(re.search(r"The default ([0-9.]+)", Dice.__doc__).group(1))
    assert dice.norm.momentum == documented == 0.1
    x = torch.tensor([[2.0, -4.0], [4.0, -8.0]])
    dice(x)
    # running = (1 - momentum) * 0 + momentum * batch mean
    torch.testing.assert_close(dice.norm.running_mean, documented * x.mean(dim=0))
