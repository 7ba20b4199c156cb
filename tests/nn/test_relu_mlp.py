"""A plain ReLU MLP trains as one fused node: same values and gradients as its layers' own ops."""

import pytest
import torch

from recstack.nn import MLP
from recstack.nn import relu_mlp as relu_mlp_module


@pytest.fixture(params=["oneDNN linear", "addmm"])
def kernel(request, monkeypatch):
    """Every test runs on both kernels: oneDNN's fused linear and the addmm fallback."""
    if request.param == "addmm":
        monkeypatch.setattr(relu_mlp_module, "_has_linear_pointwise", lambda: False)
    elif not relu_mlp_module._has_linear_pointwise():
        pytest.skip("oneDNN has no bf16 fused linear on this CPU (no native bfloat16): the addmm case covers it")
    return request.param


def _reference(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """The layers' own ops, one by one, as autograd records them."""
    for layer in mlp.layers:
        x = layer.linear(x)
        if isinstance(layer.activation, torch.nn.ReLU):
            x = torch.relu(x)
    return x


def _grads(mlp: MLP, x: torch.Tensor, forward) -> list[torch.Tensor]:
    mlp.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = forward(mlp, x)
    torch.manual_seed(1)
    (out.float() * torch.randn(out.shape)).sum().backward()
    return [out.detach(), *(p.grad.clone() for p in mlp.parameters())] + ([x.grad] if x.requires_grad else [])


@pytest.mark.parametrize("shape", [(16, 6), (4, 5, 6)])
@pytest.mark.parametrize("output_activation", [None, "identity"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_fused_training_matches_the_layers(kernel, shape, output_activation, input_grad):
    torch.manual_seed(0)
    mlp = MLP(in_dim=6, hidden_dims=(8, 7, 3), output_activation=output_activation)
    x = torch.randn(shape).requires_grad_(input_grad)
    fused = _grads(mlp, x, lambda m, v: m(v))
    expected = _grads(mlp, x, _reference)
    assert len(fused) == len(expected)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # fp32: the same kernels, bit for bit
    with torch.enable_grad():
        assert type(mlp(x).grad_fn).__name__ in {"_ReluMLPBackward", "ViewBackward0"}


def test_an_mlp_with_its_own_head_matches_the_head_after_the_layers(kernel):
    torch.manual_seed(0)
    mlp = MLP(in_dim=6, hidden_dims=(8, 4), head_dim=1)
    head = mlp.head
    assert mlp.out_dim == 1 and mlp.hidden_dim == 4
    x = torch.randn(16, 6, requires_grad=True)
    fused = mlp(x)  # (16, 1)
    assert type(fused.grad_fn).__name__ == "_ReluMLPBackward"  # the head is in the MLP's node
    expected = head(_reference(mlp, x))
    params = [x, *mlp.parameters()]
    torch.testing.assert_close(fused, expected)
    for got, want in zip(torch.autograd.grad(fused.sum(), params), torch.autograd.grad(expected.sum(), params)):
        torch.testing.assert_close(got, want)


def test_fused_training_under_bf16_autocast_computes_in_bf16_with_fp32_weight_gradients(kernel):
    torch.manual_seed(0)
    mlp = MLP(in_dim=6, hidden_dims=(8, 3))
    x = torch.randn(32, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _grads(mlp, x, lambda m, v: m(v))
        expected = _grads(mlp, x, _reference)
    assert fused[0].dtype is torch.bfloat16
    assert all(g.dtype is torch.float32 for g in fused[1:])  # fp32 weights and input get fp32 grads
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


def test_layers_with_batch_norm_dropout_or_other_activations_keep_their_own_ops():
    x = torch.randn(8, 6)
    for kwargs in ({"batch_norm": True}, {"dropout": 0.1}, {"activation": "dice"}, {"activation": "tanh"}):
        out = MLP(in_dim=6, hidden_dims=(4, 2), **kwargs)(x)
        assert type(out.grad_fn).__name__ != "_ReluMLPBackward", kwargs


def test_evaluation_and_tracing_use_the_layers_own_ops():
    torch.manual_seed(0)
    mlp = MLP(in_dim=6, hidden_dims=(4, 2)).eval()
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), _reference(mlp, x))
    with pytest.warns(DeprecationWarning):  # torch.jit.trace is what the ONNX exporter runs
        graph = str(torch.jit.trace(mlp.train(), x).inlined_graph)
    assert "_linear_pointwise" not in graph and "aten::linear" in graph
