"""nn/experts.py: batched experts equal separate MLPs; gates are distributions; mix weighs them."""

from __future__ import annotations

import torch

from recstack.nn.experts import CGCLayer, ExpertGroup, Gate, mix


def test_each_expert_is_its_own_relu_mlp() -> None:
    group = ExpertGroup(in_dim=6, num_experts=3, hidden_dims=(5, 4))
    x = torch.randn(7, 6)
    out = group(x)
    assert out.shape == (7, 3, 4)
    for e in range(3):
        hidden = torch.relu(x @ group.weights[0][e] + group.biases[0][e])
        expected = torch.relu(hidden @ group.weights[1][e] + group.biases[1][e])
        assert torch.allclose(out[:, e], expected, atol=1e-6)


def test_gates_are_distributions_and_mix_weighs_the_experts() -> None:
    gate, x = Gate(in_dim=6, num_experts=3), torch.randn(7, 6)
    weights = gate(x)
    assert torch.allclose(weights.sum(-1), torch.ones(7)) and (weights > 0).all()
    experts = torch.randn(7, 3, 4)
    assert torch.allclose(mix(experts, weights), torch.einsum("be,bed->bd", weights, experts), atol=1e-6)


def test_a_gate_with_batch_norm_normalises_its_logits_before_the_softmax() -> None:
    gate, x = Gate(in_dim=6, num_experts=3, batch_norm=True), torch.randn(16, 6) * 4 + 2
    weights = gate.train()(x)
    logits = torch.nn.functional.batch_norm(gate.linear(x), None, None, training=True)  # batch statistics
    assert torch.allclose(weights, torch.softmax(logits, dim=-1), atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(16)) and gate.norm.num_batches_tracked == 1
    weights.pow(2).sum().backward()
    assert gate.linear.weight.grad is not None and gate.norm.weight.grad is not None
    layer = CGCLayer(in_dim=6, num_tasks=2, num_shared=1, num_specific=1, hidden_dims=(4,), shared_output=True, gate_batch_norm=True)
    assert all(g.norm is not None for g in [*layer.task_gates, layer.shared_gate]) and Gate(in_dim=6, num_experts=3).norm is None


def test_cgc_task_outputs_mix_own_and_shared_experts_with_their_gate() -> None:
    layer = CGCLayer(in_dim=6, num_tasks=2, num_shared=2, num_specific=1, hidden_dims=(4,), shared_output=True)
    inputs, shared = [torch.randn(5, 6), torch.randn(5, 6)], torch.randn(5, 6)
    outputs, shared_out = layer(inputs, shared)
    own = layer.specific[1](inputs[1])
    expected = mix(torch.cat([own, layer.shared(shared)], dim=1), layer.task_gates[1](inputs[1]))
    assert torch.allclose(outputs[1], expected, atol=1e-6)
    every = torch.cat([layer.specific[0](inputs[0]), own, layer.shared(shared)], dim=1)
    assert torch.allclose(shared_out, mix(every, layer.shared_gate(shared)), atol=1e-6)


def test_batch_norm_normalises_each_experts_units_on_their_own() -> None:
    """With batch_norm each expert is Linear -> BatchNorm -> ReLU, its norm its own (training
    mode: batch statistics), as torch-rechub's expert MLPs; the state trains and is saved."""
    group = ExpertGroup(in_dim=6, num_experts=3, hidden_dims=(5, 4), batch_norm=True)
    x = torch.randn(32, 6) * 3 + 1
    out = group.train()(x)
    for e in range(3):
        pre = x @ group.weights[0][e] + group.biases[0][e]  # (B, 5)
        hidden = torch.relu(torch.nn.functional.batch_norm(pre, None, None, training=True))
        pre = hidden @ group.weights[1][e] + group.biases[1][e]
        expected = torch.relu(torch.nn.functional.batch_norm(pre, None, None, training=True))
        assert torch.allclose(out[:, e], expected, atol=1e-5)
    assert {"norms.0.running_mean", "norms.1.running_var"} <= set(group.state_dict())
    group.eval()
    assert torch.isfinite(group(x[:1])).all()  # one row scores with the running statistics
    assert ExpertGroup(in_dim=6, num_experts=3, hidden_dims=(5,)).norms is None
