"""Multi-layer perceptron, the deep tower of most ranking and retrieval models."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
from torch import nn

from recstack.nn.dice import Dice, masked_batch_norm
from recstack.nn.dropout import Dropout
from recstack.nn.fused import fast_path_applies
from recstack.nn.relu_mlp import relu_mlp


class Activation(str, enum.Enum):
    """Activations an :class:`MLP` layer can use."""

    RELU = "relu"
    PRELU = "prelu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    DICE = "dice"
    IDENTITY = "identity"


def make_activation(activation: Activation | str, *, num_features: int) -> nn.Module:
    """Build one activation module for a layer of width ``num_features``.

    PReLU and Dice learn one parameter per neuron, hence the width.

    Args:
        activation: an :class:`Activation` or its string value (e.g. ``"dice"``).
        num_features: D, the width of the layer the activation follows.
    """
    kind = Activation(activation)  # raises ValueError on an unknown name
    if kind is Activation.RELU:
        return nn.ReLU()
    if kind is Activation.PRELU:
        return nn.PReLU(num_parameters=num_features)
    if kind is Activation.TANH:
        return nn.Tanh()
    if kind is Activation.SIGMOID:
        return nn.Sigmoid()
    if kind is Activation.DICE:
        return Dice(num_features=num_features)
    return nn.Identity()


class MLPBlock(nn.Module):
    """One MLP layer: Linear -> [BatchNorm] -> activation -> [Dropout].

    Args:
        in_dim: input width.
        out_dim: output width D.
        activation: the activation after the (optional) batch norm.
        batch_norm: whether to batch-normalise the linear output.
        dropout: dropout probability after the activation (0 disables it).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        activation: Activation | str,
        batch_norm: bool,
        dropout: float,
    ):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.BatchNorm1d(out_dim) if batch_norm else None
        self.activation = make_activation(activation, num_features=out_dim)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, valid_rows: int | None = None
    ) -> torch.Tensor:
        """Args: x (..., in_dim); mask (...) bool or None; valid_rows: rows of a 2-D ``x``
        from this one on are padding (see :func:`masked_batch_norm`). Returns (..., out_dim)."""
        return self.activate(self.linear(x), mask, valid_rows=valid_rows)

    def activate(
        self, h: torch.Tensor, mask: torch.Tensor | None = None, *, valid_rows: int | None = None
    ) -> torch.Tensor:
        """Everything after the Linear, for callers that compute it themselves (DIN's
        activation unit splits it by input block). Args: h (..., D); mask (...) or None;
        valid_rows as in :meth:`forward`."""
        if self.norm is not None:
            h = masked_batch_norm(self.norm, h, mask, valid_rows=valid_rows)
        if isinstance(self.activation, Dice):
            h = self.activation(h, mask, valid_rows=valid_rows)
        else:
            # PReLU reads dim 1 as its channels, so its neurons must sit there: (N, D)
            h = self.activation(h.reshape(-1, h.shape[-1])).reshape(h.shape)
        return self.dropout(h)


class MLP(nn.Module):
    """A stack of :class:`MLPBlock` layers, one per entry of ``hidden_dims``.

    Every layer uses ``activation``, except the last one, which uses
    ``output_activation`` when given (``None`` keeps ``activation``; ``"identity"`` makes
    the last layer linear). A DSSM tower 256-256-128 with tanh last is
    ``MLP(in_dim=..., hidden_dims=(256, 256, 128), output_activation="tanh")``.
    Batch norm and dropout, when enabled, apply to every layer, the last one included.

    Inputs may have any leading dims (B, D) or (B, L, D); batch norm and Dice then use
    statistics over all leading positions, or only the real ones when ``mask`` is given.

    With ``head_dim`` the MLP ends in its own output layer, a plain ``Linear`` (no batch norm,
    activation or dropout), e.g. a ranking model's logit: ``MLP(..., head_dim=1)`` maps
    ``(B, in_dim)`` to ``(B, 1)``. Owning it lets the MLP train the head in the same fused node
    as its layers (``relu_mlp``, behind the one gate of ``nn/fused.py``), so the caller just
    calls the module.

    Args:
        in_dim: width of the input.
        hidden_dims: width of each layer, in order; the last is ``out_dim``. Empty only with
            ``head_dim``: the MLP is then its head alone (a multi-task tower of no layers).
        activation: activation of every layer but (optionally) the last.
        batch_norm: batch-normalise each linear output before its activation.
        dropout: dropout probability after each activation.
        output_activation: activation of the last layer only, or None for ``activation``.
        head_dim: width of an output ``Linear`` after the last layer (``self.head``); None:
            none, the last layer is the output.

    Example:
        >>> tower = MLP(in_dim=32, hidden_dims=(256, 256, 128), output_activation="tanh")
        >>> tower(torch.randn(4, 32)).shape
        torch.Size([4, 128])
        >>> ranker = MLP(in_dim=32, hidden_dims=(64, 32), head_dim=1)
        >>> ranker(torch.randn(4, 32)).shape, ranker.out_dim
        (torch.Size([4, 1]), 1)
    """

    def __init__(
        self,
        *,
        in_dim: int,
        hidden_dims: Sequence[int],
        activation: Activation | str = Activation.RELU,
        batch_norm: bool = False,
        dropout: float = 0.0,
        output_activation: Activation | str | None = None,
        head_dim: int | None = None,
    ):
        super().__init__()
        if len(hidden_dims) == 0 and head_dim is None:
            raise ValueError("MLP needs at least one hidden dim (or a head: head_dim)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        activations = [Activation(activation)] * len(hidden_dims)
        if output_activation is not None and activations:
            activations[-1] = Activation(output_activation)
        widths = [in_dim, *hidden_dims]
        self.layers = nn.ModuleList(
            MLPBlock(
                in_dim=widths[i],
                out_dim=widths[i + 1],
                activation=activations[i],
                batch_norm=batch_norm,
                dropout=dropout,
            )
            for i in range(len(hidden_dims))
        )
        # registered after the layers: parameters (and optimizer state) keep the order they had
        # when models held the head themselves
        self.head = nn.Linear(widths[-1], head_dim) if head_dim is not None else None
        self._out_dim = head_dim if head_dim is not None else widths[-1]
        # Linear -> ReLU|identity layers with nothing else can train as one fused node (relu_mlp)
        plain = batch_norm is False and dropout == 0.0
        relu_after = tuple(a is Activation.RELU for a in activations)
        self._relu_after = relu_after if self.head is None else (*relu_after, False)
        self._fusable = plain and all(a in (Activation.RELU, Activation.IDENTITY) for a in activations)

    @property
    def out_dim(self) -> int:
        """Width of the output: ``head_dim``, or the last entry of ``hidden_dims``."""
        return self._out_dim

    @property
    def hidden_dim(self) -> int:
        """Width of the last layer, before the head (the input width when there is none)."""
        return self.layers[-1].linear.out_features if len(self.layers) else self.head.in_features  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run every layer.

        Args:
            x: (..., in_dim), e.g. (B, in_dim) or (B, L, in_dim).
            mask: (...) bool, True at real positions, so padding stays out of batch norm
                and Dice statistics; None means every position is real.

        Returns:
            (..., out_dim); the head's output when there is one.
        """
        if self._fusable and fast_path_applies(x):  # the head, if any, joins the fused node
            return relu_mlp(x, self._linears(), self._relu_after)
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.head is None else self.head(x)

    def _linears(self) -> list[nn.Linear]:
        linears = [layer.linear for layer in self.layers]
        return linears if self.head is None else [*linears, self.head]


def run_chain(x: torch.Tensor, mlps: Sequence[MLP]) -> torch.Tensor:
    """``x`` through each of ``mlps`` in turn (``mlps[-1](...mlps[0](x))``), as one fused node
    (``relu_mlp``) when every MLP can fuse: ESMM's bottom then tower is one node per target, not
    two. Only the last MLP may have a head. Same values and gradients as calling them in turn.

    Args:
        x: (..., mlps[0]'s in_dim).
        mlps: MLPs whose widths chain (each one's ``out_dim`` the next one's input).
    Returns:
        (..., mlps[-1].out_dim).
    """
    if any(mlp.head is not None for mlp in mlps[:-1]):
        raise ValueError("run_chain: only the last MLP may have a head")
    if all(mlp._fusable for mlp in mlps) and fast_path_applies(x):
        linears = [linear for mlp in mlps for linear in mlp._linears()]
        return relu_mlp(x, linears, tuple(flag for mlp in mlps for flag in mlp._relu_after))
    for mlp in mlps:
        x = mlp(x)
    return x
