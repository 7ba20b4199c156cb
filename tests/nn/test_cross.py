import pytest
import torch

from recstack.nn import (
    CrossNetwork,
    CrossNetworkV2,
    FullRankCrossLayer,
    LowRankCrossLayer,
    MixtureCrossLayer,
)

# ---- DCN v1: x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l -------------------------------------


def test_cross_network_matches_formula_on_hand_computed_example():
    net = CrossNetwork(in_dim=2, num_layers=2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, -1.0], [1.0, 1.0]]))
        net.bias.copy_(torch.tensor([[0.1, 0.2], [0.0, 0.0]]))
    x0 = torch.tensor([[1.0, 2.0]])
    # layer 1: x0 . w = 0.5 - 2 = -1.5 -> x1 = -1.5 * x0 + b + x0 = [-0.4, -0.8]
    # layer 2: x1 . w = -1.2          -> x2 = -1.2 * x0 + 0 + x1 = [-1.6, -3.2]
    torch.testing.assert_close(net(x0), torch.tensor([[-1.6, -3.2]]))


def test_cross_network_has_vector_parameters_only():
    d, layers = 512, 3
    net = CrossNetwork(in_dim=d, num_layers=layers)
    # one weight vector and one bias vector per layer: O(D), never a D x D matrix
    assert sum(p.numel() for p in net.parameters()) == 2 * layers * d
    assert all(p.numel() < d * d for p in net.parameters())
    out = net(torch.randn(4, d))
    assert out.shape == (4, d)


def _plain_cross(net: CrossNetwork, x0: torch.Tensor) -> torch.Tensor:
    x = x0
    for w, b in zip(net.weight, net.bias):
        x = x0 * (x @ w.unsqueeze(1)) + b + x
    return x


def test_cross_network_training_node_has_the_formulas_gradients():
    from recstack.nn.cross import _CrossNetworkFunction

    torch.manual_seed(0)
    x0 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_CrossNetworkFunction.apply, (x0, weight, bias))


def test_cross_network_training_matches_evaluation_path_and_stays_fp32_under_autocast():
    torch.manual_seed(0)
    net = CrossNetwork(in_dim=6, num_layers=3)
    with torch.no_grad():
        net.bias.normal_()
    x0 = torch.randn(8, 6, requires_grad=True)
    upstream = torch.randn(8, 6)
    fused = net(x0)
    assert type(fused.grad_fn).__name__ == "_CrossNetworkFunctionBackward"
    grads = torch.autograd.grad((fused * upstream).sum(), [x0, net.weight, net.bias])
    plain = _plain_cross(net, x0)
    expected = torch.autograd.grad((plain * upstream).sum(), [x0, net.weight, net.bias])
    torch.testing.assert_close(fused, plain)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(net(x0), plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x0).dtype is torch.float32


# ---- DCN-v2: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l ---------------------------------------


def test_full_rank_matches_formula_on_hand_computed_example():
    net = CrossNetworkV2(in_dim=2, num_layers=1)
    layer = net.layers[0]
    assert isinstance(layer, FullRankCrossLayer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        layer.bias.copy_(torch.tensor([1.0, 0.0]))
    x0 = torch.tensor([[1.0, -1.0]])
    # W x0 = [-1, -1]; + b = [0, -1]; x0 * that = [0, 1]; + x0 = [1, 0]
    assert net(x0).tolist() == [[1.0, 0.0]]


def test_low_rank_equals_full_rank_when_w_is_u_v_transposed():
    low = CrossNetworkV2(in_dim=6, num_layers=2, low_rank=2)
    full = CrossNetworkV2(in_dim=6, num_layers=2)
    with torch.no_grad():
        for low_layer, full_layer in zip(low.layers, full.layers):
            assert isinstance(low_layer, LowRankCrossLayer)
            low_layer.bias.normal_()
            full_layer.weight.copy_(low_layer.u @ low_layer.v.T)  # W = U V^T, (D, D)
            full_layer.bias.copy_(low_layer.bias)
    x0 = torch.randn(5, 6)
    torch.testing.assert_close(low(x0), full(x0))
    assert sum(p.numel() for p in low.parameters()) == 2 * (2 * 6 * 2 + 6)


def test_mixture_gates_are_a_distribution_over_experts():
    net = CrossNetworkV2(in_dim=6, num_layers=2, low_rank=3, num_experts=4)
    layer = net.layers[0]
    assert isinstance(layer, MixtureCrossLayer)
    gates = layer.gate_probs(torch.randn(7, 6))
    assert gates.shape == (7, 4)
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(dim=-1), torch.ones(7))


def test_mixture_matches_formula():
    # E_i(x) = x0 * (U_i g(C_i g(V_i^T x)) + b);  x_{l+1} = sum_i G_i(x) E_i(x) + x
    layer = MixtureCrossLayer(in_dim=5, low_rank=2, num_experts=3, activation="tanh")
    with torch.no_grad():
        layer.bias.normal_()
    x0, x = torch.randn(4, 5), torch.randn(4, 5)
    gates = torch.softmax(x @ layer.gate.weight.T, dim=-1)  # (B, K)
    expected = x.clone()
    for i in range(3):
        h = torch.tanh(x @ layer.v[i])  # (B, r)
        h = torch.tanh(h @ layer.c[i].T)  # (B, r)
        expert = x0 * (h @ layer.u[i].T + layer.bias)  # (B, D)
        expected += gates[:, i : i + 1] * expert
    torch.testing.assert_close(layer(x0, x), expected)


def test_mixture_of_identical_linear_experts_reduces_to_low_rank():
    mixture = MixtureCrossLayer(in_dim=5, low_rank=2, num_experts=3, activation="identity")
    low = LowRankCrossLayer(in_dim=5, low_rank=2)
    with torch.no_grad():
        low.bias.normal_()
        mixture.u.copy_(low.u.expand(3, 5, 2))
        mixture.v.copy_(low.v.expand(3, 5, 2))
        mixture.c.copy_(torch.eye(2).expand(3, 2, 2))
        mixture.bias.copy_(low.bias)
    x0, x = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(mixture(x0, x), low(x0, x))


def test_mixture_trains_gates_and_experts():
    net = CrossNetworkV2(in_dim=6, num_layers=2, low_rank=3, num_experts=4)
    net(torch.randn(8, 6)).pow(2).sum().backward()
    for name, param in net.named_parameters():
        if name.endswith("bias"):
            continue  # zero-initialised, still receives a gradient
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_mixture_needs_low_rank():
    with pytest.raises(ValueError, match="low_rank"):
        CrossNetworkV2(in_dim=6, num_layers=1, num_experts=2)
