"""One gate and one switch for every fast path: RECSTACK_FUSED=0 / fused_paths(False) turn all
of them off, the outputs and gradients stay those of the modules' own ops."""

import subprocess
import sys

import pytest
import torch

from recstack.nn import MLP, CrossNetwork, Embedding, FactorizationMachine, fast_path_applies, fused_paths, lookup_fields
from recstack.nn.fused import FUSED_ENV, fused_paths_enabled


def test_the_gate_is_open_for_eager_cpu_training_only():
    x = torch.ones(2, 3)
    assert fast_path_applies(x)
    with torch.no_grad():
        assert not fast_path_applies(x)
        assert not fast_path_applies(x, any_device=True)
    with fused_paths(False):
        assert not fast_path_applies(x) and not fast_path_applies(x, any_device=True)
    assert fast_path_applies(x)  # the previous setting is back


def test_compiling_closes_the_cpu_nodes_but_not_the_layouts(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.ones(2, 3)
    assert not fast_path_applies(x)
    assert fast_path_applies(x, any_device=True)


def test_the_switch_comes_back_after_an_error():
    with pytest.raises(RuntimeError), fused_paths(False):
        raise RuntimeError("boom")
    assert fused_paths_enabled()


@pytest.mark.parametrize("value, expected", [("0", "False"), ("off", "False"), ("1", "True"), ("", "True")])
def test_the_environment_variable_sets_the_process_default(value, expected):
    code = "import torch, recstack.nn as n; print(n.fast_path_applies(torch.ones(1)))"
    env = {FUSED_ENV: value, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == expected


def _step(module_fn, inputs):
    """Output and every gradient of one forward/backward."""
    inputs = [i.detach().clone().requires_grad_(i.is_floating_point()) for i in inputs]
    module, out = module_fn(inputs)
    out.float().pow(2).sum().backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return [out.detach(), *grads, *(i.grad for i in inputs if i.grad is not None)], out.grad_fn


@pytest.mark.parametrize("case", ["mlp with head", "cross network", "fm", "tables"])
def test_every_fast_path_is_switched_off_and_gives_the_same_values(case):
    torch.manual_seed(0)
    if case == "mlp with head":
        module = MLP(in_dim=6, hidden_dims=(8, 4), head_dim=1)
        inputs = [torch.randn(16, 6)]
        run = lambda i: (module, module(i[0]))  # noqa: E731
        fused_node = "_ReluMLPBackward"
    elif case == "cross network":
        module = CrossNetwork(in_dim=6, num_layers=2)
        inputs = [torch.randn(16, 6)]
        run = lambda i: (module, module(i[0]))  # noqa: E731
        fused_node = None
    elif case == "fm":
        module = FactorizationMachine()
        inputs = [torch.randn(16, 5, 4)]
        run = lambda i: (module, module(i[0]))  # noqa: E731
        fused_node = None
    else:
        module = torch.nn.ModuleList([Embedding(50, 4, padding_idx=0), Embedding(30, 4, padding_idx=0)])
        inputs = [torch.randint(0, 30, (16,)), torch.randint(0, 30, (16,))]
        run = lambda i: (module, lookup_fields(list(module), i))  # noqa: E731
        fused_node = "_StackedLookupsBackward"
    fast, fast_node = _step(run, inputs)
    module.zero_grad(set_to_none=True)
    with fused_paths(False):
        plain, plain_node = _step(run, inputs)
    if fused_node is not None:
        assert type(fast_node).__name__ == fused_node
    assert type(plain_node).__name__ != type(fast_node).__name__
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_long_table_lookup_asks_the_same_gate(monkeypatch):
    # nn/table.py used to check only grad mode and tracing: under torch.compile it still took
    # its autograd Function; now the one gate keeps inductor's own path there
    table = Embedding(100, 4, padding_idx=0)
    ids = torch.randint(0, 100, (64, 80))  # 5,120 ids: over the one-table threshold
    assert type(table(ids).grad_fn).__name__ != "EmbeddingBackward0"
    with fused_paths(False):
        assert type(table(ids).grad_fn).__name__ == "EmbeddingBackward0"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert type(table(ids).grad_fn).__name__ == "EmbeddingBackward0"
