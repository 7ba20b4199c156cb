import torch

from recstack.nn import ResidualUnit


def _unit(w0, b0, w1, b1) -> ResidualUnit:
    unit = ResidualUnit(dim=len(b1), hidden_dim=len(b0))
    with torch.no_grad():
        unit.inner.weight.copy_(torch.tensor(w0))
        unit.inner.bias.copy_(torch.tensor(b0))
        unit.outer.weight.copy_(torch.tensor(w1))
        unit.outer.bias.copy_(torch.tensor(b1))
    return unit


def test_formula_on_hand_computed_example():
    # W0 = I, b0 = 0 -> ReLU(W0 x) = [0, 2]; W1 = -I, b1 = 0 -> residual [0, -2]
    # x + residual = [-1, 0] -> ReLU -> [0, 0]
    unit = _unit([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [[-1.0, 0.0], [0.0, -1.0]], [0.0, 0.0])
    assert unit(torch.tensor([[-1.0, 2.0]])).tolist() == [[0.0, 0.0]]


def test_relu_comes_after_the_addition():
    # Inner branch is zero, so out = ReLU(x + b1). With ReLU before the addition
    # (x + ReLU(...)) the first output would be -0.5 instead of 0.
    unit = _unit([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]], [0.5, 0.0])
    assert unit(torch.tensor([[-1.0, 2.0]])).tolist() == [[0.0, 2.0]]


def test_shape_and_non_negative_output():
    unit = ResidualUnit(dim=6, hidden_dim=16)
    out = unit(torch.randn(5, 6))
    assert out.shape == (5, 6)
    assert (out >= 0).all()
