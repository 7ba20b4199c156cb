"""The training step of a plain ReLU MLP as one autograd node, on CPU.

An :class:`~recstack.nn.mlp.MLP` of Linear -> ReLU layers (no batch norm, no dropout) is most
of a ranking model's step. Through autograd each layer costs an ``addmm``, a separate ``relu``
pass, and under autocast casts of its weight, bias and input, each with a backward node;
here the whole stack is one node whose forward runs, under bf16 autocast, oneDNN's linear
with the ReLU fused into it (``torch.ops.mkldnn._linear_pointwise``, the kernel inductor uses
on CPU), in fp32 ``addmm`` + in-place ReLU (bit-identical to ``nn.Linear`` + ``nn.ReLU``), and
whose backward is the same ``threshold_backward``, two ``mm`` and a bias ``sum`` per layer
that autograd would run, without the separate ReLU outputs. Measured in whole training steps
(epochs interleaved in one process, bf16): DeepFM ~6% and Wide&Deep ~12% faster; the MLP
timed alone is within noise of autograd (``benchmarks/cpu_kernels.py``), so the gain is in
fewer tensors and nodes around it rather than in the matmuls.
Values and gradients are those of the modules (``tests/nn/test_relu_mlp.py``); under CPU
autocast the stack computes in the autocast dtype, as autocast would.

Where ``_linear_pointwise`` is missing or fails (a build without oneDNN), each layer is
``addmm`` + in-place ``relu``, still one node.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recstack.nn.fused import cpu_autocast_dtype

__all__ = ["relu_mlp"]


def relu_mlp(x: Tensor, linears: Sequence[nn.Linear], relu_after: Sequence[bool]) -> Tensor:
    """``x`` through ``linears``, with a ReLU after layer k where ``relu_after[k]``.

    Args:
        x: (..., in_dim) on CPU.
        linears: the layers, each with a bias.
        relu_after: one flag per layer.

    Returns:
        (..., out_dim), in the autocast dtype when CPU autocast is on, else in x's dtype.
    """
    dtype = cpu_autocast_dtype() or x.dtype
    params = [p for linear in linears for p in (linear.weight, linear.bias)]
    if x.dim() == 2:
        return _ReluMLP.apply(tuple(relu_after), dtype, x, *params)
    out = _ReluMLP.apply(tuple(relu_after), dtype, x.reshape(-1, x.shape[-1]), *params)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class _ReluMLP(torch.autograd.Function):
    """Inputs ``(relu_after, dtype, x (N, in), W_1, b_1, ..., W_L, b_L)``; output ``(N, out)``."""

    @staticmethod
    def forward(ctx, relu_after: tuple[bool, ...], dtype: torch.dtype, x: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        weights = [w.to(dtype) for w in params[0::2]]
        biases = [b.to(dtype) for b in params[1::2]]
        h = x.to(dtype)
        layer_inputs = []
        for weight, bias, relu in zip(weights, biases, relu_after):
            layer_inputs.append(h)
            h = _linear(h, weight, bias, relu=relu)
        # a ReLU's output tells its gradient mask (output > 0 exactly where input > 0)
        ctx.save_for_backward(h, *layer_inputs, *weights)
        ctx.relu_after = relu_after
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        count = len(ctx.relu_after)
        output, layer_inputs, weights = saved[0], saved[1 : 1 + count], saved[1 + count :]
        grad = grad.to(output.dtype)
        param_grads: list[Tensor | None] = [None] * (2 * count)
        for k in reversed(range(count)):
            if ctx.relu_after[k]:
                layer_output = output if k == count - 1 else layer_inputs[k + 1]
                grad = torch.ops.aten.threshold_backward(grad, layer_output, 0)
            if ctx.needs_input_grad[3 + 2 * k]:
                param_grads[2 * k] = grad.t().mm(layer_inputs[k])  # (out, in)
            if ctx.needs_input_grad[4 + 2 * k]:
                param_grads[2 * k + 1] = grad.sum(0)  # (out,)
            if k > 0 or ctx.needs_input_grad[2]:
                grad = grad.mm(weights[k])  # (N, in): layer k's input gradient
        grad_x = grad if ctx.needs_input_grad[2] else None
        # autograd casts each gradient to its input's dtype (the fp32 weights under autocast)
        return (None, None, grad_x, *param_grads)


def _linear(h: Tensor, weight: Tensor, bias: Tensor, *, relu: bool) -> Tensor:
    # fp32 keeps addmm: the same kernel as nn.Linear, so fp32 training is bit-identical to the
    # layers' own ops (oneDNN's rounds differently, and was no faster in fp32 here)
    if h.dtype == torch.bfloat16 and _has_linear_pointwise():
        return torch.ops.mkldnn._linear_pointwise(h, weight, bias, "relu" if relu else "none", [], "")
    out = torch.addmm(bias, h, weight.t())
    return out.relu_() if relu else out


@functools.cache
def _has_linear_pointwise() -> bool:
    """Whether oneDNN's fused linear runs bf16 here and matches ``addmm`` + ``relu`` (checked once;
    CPUs without native bfloat16 have no such primitive: a RuntimeError, then addmm)."""
    if not torch.backends.mkldnn.is_available():
        return False
    x, weight, bias = (t.to(torch.bfloat16) for t in (torch.randn(4, 3), torch.randn(5, 3), torch.randn(5)))
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # the first call may come under autocast
        try:
            fused = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")
        except (AttributeError, RuntimeError, NotImplementedError):
            return False
        expected = torch.relu(torch.addmm(bias.float(), x.float(), weight.float().t()))
        return torch.allclose(fused.float(), expected, rtol=2e-2, atol=2e-2)
