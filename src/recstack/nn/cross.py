"""Cross networks: explicit bounded-degree feature crosses of DCN and DCN-v2."""

from __future__ import annotations

import torch
from torch import nn

from recstack.nn.fused import fast_path_applies
from recstack.nn.mlp import Activation, make_activation


class CrossNetwork(nn.Module):
    """DCN v1 cross network (Wang et al., 2017).

    ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l`` with vectors ``w_l, b_l`` of size D.
    ``x_l . w_l`` is one scalar per sample, so a layer costs O(D) parameters and time;
    no D x D matrix is ever built.

    Args:
        in_dim: D, width of the input and the output.
        num_layers: number of cross layers.

    Example:
        >>> cross = CrossNetwork(in_dim=8, num_layers=3)
        >>> cross(torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(self, *, in_dim: int, num_layers: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_layers, in_dim))  # (num_layers, D)
        self.bias = nn.Parameter(torch.zeros(num_layers, in_dim))  # (num_layers, D)
        nn.init.xavier_normal_(self.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Args: x0 (B, D). Returns (B, D)."""
        if fast_path_applies(x0) and x0.dim() == 2:
            # one node, in x0's precision: its O(B*D) work gains nothing from bf16 on CPU, and
            # autocast's casts of x and w at every layer cost more than the layer itself
            return _CrossNetworkFunction.apply(x0, self.weight, self.bias)
        x = x0
        for w, b in zip(self.weight, self.bias):
            xw = x @ w.unsqueeze(1)  # (B, 1): one scalar per sample
            x = x0 * xw + b + x  # (B, D)
        return x


class _CrossNetworkFunction(torch.autograd.Function):
    """:class:`CrossNetwork`'s layers with a hand-written backward, one node. With
    ``s_l = x_l . w_l`` and ``g`` the gradient of ``x_{l+1}``: ``db_l = sum_B g``,
    ``ds_l = g . x_0``, ``dw_l = x_l^T ds_l``, ``dx_l = g + ds_l w_l^T`` and ``dx_0 += g s_l``."""

    @staticmethod
    def forward(ctx, x0: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        with torch.autocast("cpu", enabled=False):
            weight, bias = weight.to(x0.dtype), bias.to(x0.dtype)
            x, inputs, scales = x0, [], []
            for w, b in zip(weight, bias):
                s = torch.mv(x, w)  # (B,)
                inputs.append(x)
                scales.append(s)
                x = torch.addcmul(x + b, x0, s.unsqueeze(1))  # x0 * s + b + x, (B, D)
        ctx.save_for_backward(x0, weight, *inputs, *scales)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x0, weight, *saved = ctx.saved_tensors
        layers = weight.shape[0]
        inputs, scales = saved[:layers], saved[layers:]
        g = grad.to(x0.dtype)
        grad_weight = torch.empty_like(weight)  # (L, D)
        grad_bias = torch.empty_like(weight)
        grad_x0 = None
        for layer in reversed(range(layers)):
            torch.sum(g, 0, out=grad_bias[layer])
            ds = (g * x0).sum(1)  # (B,)
            torch.mv(inputs[layer].t(), ds, out=grad_weight[layer])
            scale = scales[layer].unsqueeze(1)
            grad_x0 = g * scale if grad_x0 is None else grad_x0.addcmul_(g, scale)
            g = torch.addr(g, ds, weight[layer])  # the gradient of x_layer
        return grad_x0.add_(g), grad_weight, grad_bias  # x_0 is also the first layer's x


class FullRankCrossLayer(nn.Module):
    """DCN-v2 layer ``x_{l+1} = x_0 * (W x_l + b) + x_l`` with a full D x D matrix W.

    Args:
        in_dim: D.
    """

    def __init__(self, *, in_dim: int):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_dim, in_dim)))  # (D, D)
        self.bias = nn.Parameter(torch.zeros(in_dim))  # (D,)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Args: x0 (B, D) the input of the network; x (B, D) this layer's input."""
        return x0 * (x @ self.weight.T + self.bias) + x  # (B, D)


class LowRankCrossLayer(nn.Module):
    """DCN-v2 layer with ``W = U V^T`` of rank r: ``x_0 * (U (V^T x_l) + b) + x_l``.

    Args:
        in_dim: D.
        low_rank: r, the rank of W.
    """

    def __init__(self, *, in_dim: int, low_rank: int):
        super().__init__()
        self.u = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_dim, low_rank)))  # (D, r)
        self.v = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_dim, low_rank)))  # (D, r)
        self.bias = nn.Parameter(torch.zeros(in_dim))  # (D,)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Args: x0 (B, D) the input of the network; x (B, D) this layer's input."""
        projected = x @ self.v  # (B, r) = V^T x
        return x0 * (projected @ self.u.T + self.bias) + x  # (B, D)


class MixtureCrossLayer(nn.Module):
    """DCN-v2 mixture of K low-rank experts, gated by the layer input.

    ``E_i(x_l) = x_0 * (U_i g(C_i g(V_i^T x_l)) + b)`` and
    ``x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l`` with ``G = softmax(x_l @ W_gate)``,
    as in the DCN-v2 paper and torchrec's ``LowRankMixtureCrossNet`` (bias shared by the
    experts, gates without bias).

    Args:
        in_dim: D.
        low_rank: r, the rank of each expert.
        num_experts: K.
        activation: g, the nonlinearity inside each expert.
    """

    def __init__(
        self, *, in_dim: int, low_rank: int, num_experts: int, activation: Activation | str
    ):
        super().__init__()
        shape = (num_experts, in_dim, low_rank)
        self.u = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))  # (K, D, r)
        self.v = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))  # (K, D, r)
        self.c = nn.Parameter(
            nn.init.xavier_normal_(torch.empty(num_experts, low_rank, low_rank))
        )  # (K, r, r)
        self.bias = nn.Parameter(torch.zeros(in_dim))  # (D,)
        self.gate = nn.Linear(in_dim, num_experts, bias=False)
        self.inner_activation = make_activation(activation, num_features=low_rank)
        self.outer_activation = make_activation(activation, num_features=low_rank)

    def gate_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, D) this layer's input. Returns expert weights (B, K), rows sum to 1."""
        return torch.softmax(self.gate(x), dim=-1)

    def _activate(self, act: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Apply g to (B, K, r); PReLU/Dice see (B*K, r), their parameters shared by experts."""
        b, k, r = h.shape
        return act(h.reshape(b * k, r)).reshape(b, k, r)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Args: x0 (B, D) the input of the network; x (B, D) this layer's input."""
        h = torch.einsum("bd,kdr->bkr", x, self.v)  # (B, K, r) = V_i^T x
        h = self._activate(self.inner_activation, h)
        h = torch.einsum("kpr,bkr->bkp", self.c, h)  # (B, K, r) = C_i h
        h = self._activate(self.outer_activation, h)
        up = torch.einsum("kdr,bkr->bkd", self.u, h)  # (B, K, D) = U_i h
        experts = x0.unsqueeze(1) * (up + self.bias)  # (B, K, D)
        gates = self.gate_probs(x)  # (B, K)
        return (gates.unsqueeze(-1) * experts).sum(dim=1) + x  # (B, D); multiply-sum, not einsum's B tiny matmuls


class CrossNetworkV2(nn.Module):
    """DCN-v2 cross network (Wang et al., 2021): ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    - ``low_rank=None``: full-rank W_l (D x D), :class:`FullRankCrossLayer`.
    - ``low_rank=r, num_experts=1``: ``W_l = U_l V_l^T``, :class:`LowRankCrossLayer`.
    - ``low_rank=r, num_experts=K>1``: gated mixture of K low-rank experts with a
      nonlinearity inside each expert, :class:`MixtureCrossLayer`.

    Args:
        in_dim: D, width of the input and the output.
        num_layers: number of cross layers.
        low_rank: r, the rank of each W_l; None for full rank.
        num_experts: K, experts per layer; more than 1 requires ``low_rank``.
        expert_activation: g, the nonlinearity inside mixture experts (torchrec's default).

    Example:
        >>> cross = CrossNetworkV2(in_dim=8, num_layers=2, low_rank=4, num_experts=3)
        >>> cross(torch.randn(5, 8)).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        *,
        in_dim: int,
        num_layers: int,
        low_rank: int | None = None,
        num_experts: int = 1,
        expert_activation: Activation | str = Activation.RELU,
    ):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if low_rank is not None and low_rank < 1:
            raise ValueError(f"low_rank must be >= 1 or None, got {low_rank}")
        if num_experts > 1 and low_rank is None:
            raise ValueError("a mixture of experts (num_experts > 1) needs low_rank")
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            if low_rank is None:
                layers.append(FullRankCrossLayer(in_dim=in_dim))
            elif num_experts == 1:
                layers.append(LowRankCrossLayer(in_dim=in_dim, low_rank=low_rank))
            else:
                layers.append(
                    MixtureCrossLayer(
                        in_dim=in_dim,
                        low_rank=low_rank,
                        num_experts=num_experts,
                        activation=expert_activation,
                    )
                )
        self.layers = nn.ModuleList(layers)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """Args: x0 (B, D). Returns (B, D)."""
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
