"""Multi-interest extractors: K user vectors from one behaviour sequence (ComiRec, MIND).

Shape legend: B batch, L sequence length, Q query prefixes (L in prefix mode, 1 otherwise),
K interests, D dim, H attention hidden width.

Sequences are left-aligned, oldest first, padding at the end (``mask`` (B, L) True at real
positions), as in :mod:`recstack.nn.sequence`. Each extractor gives the K interests of the whole
sequence, ``forward(x, mask) -> (B, K, D)``, or of every prefix at once,
``prefixes(x, mask) -> (B, L, K, D)`` (row t reads only positions 0..t: the interests a
sequence-to-sequence model scores the item at t + 1 with)::

    #  x           [e1, e2, e3, p ]    mask [1, 1, 1, 0]
    #  prefixes    t=0: from [e1]  t=1: [e1, e2]  t=2: [e1, e2, e3]  t=3: as t=2 (padding)
    #  forward     from [e1, e2, e3]   (= prefixes at the last real position)

Padding (and, for a prefix, every later position) never gets attention or routing weight; a row
with no real position gives zero interests, never NaN.

- :class:`SelfAttentiveInterests`: ComiRec-SA (Cen et al., KDD 2020, eq. 4-5):
  ``A = softmax(W2 tanh(W1 H^T))`` (K, L), ``V_u = A H``.
- :class:`CapsuleRouting`: behaviour-to-interest dynamic routing, MIND (Li et al., CIKM 2019,
  Algorithm 1: a shared bilinear map S, routing logits drawn from N(0, sigma^2) and not trained,
  squash, a dynamic number of interests) and ComiRec-DR (a map per position and interest, logits
  from zero).
- :func:`label_aware_attention`: MIND's training readout (eq. 8): the interests attended with the
  target item as query, ``softmax(pow(V_u^T e_i, p))``; ``p = inf`` is the hard argmax.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "Bilinear",
    "CapsuleRouting",
    "RoutingInit",
    "SelfAttentiveInterests",
    "dynamic_interest_count",
    "label_aware_attention",
    "prefix_mask",
    "squash",
]


def prefix_mask(mask: Tensor) -> Tensor:
    """``(B, Q=L, L)`` bool: the real positions at or before each prefix end (query) t."""
    index = torch.arange(mask.shape[1], device=mask.device)  # (L,)
    return mask[:, None, :] & (index[None, :] <= index[:, None])  # (B, L, L)


def squash(z: Tensor, eps: float = 1e-9) -> Tensor:
    """The capsule non-linearity ``|z|^2 / (1 + |z|^2) * z / |z|`` over the last dim (0 -> 0)."""
    norm2 = (z * z).sum(dim=-1, keepdim=True)
    return z * (norm2 / (1 + norm2) / torch.sqrt(norm2 + eps))


def dynamic_interest_count(lengths: Tensor, max_interests: int) -> Tensor:
    """MIND's ``K'_u = max(1, min(K, log2(|I_u|)))`` (log2 floored), int64 of ``lengths``' shape.

    Counted as ``#{j in 1..K: |I_u| >= 2^j}``: exact integers, and plain comparisons in ONNX.
    """
    powers = 2 ** torch.arange(1, max_interests + 1, device=lengths.device)  # (K,)
    return (lengths.unsqueeze(-1) >= powers).sum(dim=-1).clamp(min=1)


class SelfAttentiveInterests(nn.Module):
    """ComiRec-SA's K attention heads over a sequence.

    ``A = softmax(W2 tanh(W1 (H + P)^T))`` over the real positions, one row per head, and
    ``V_u = A H``: each interest is a weighted mean of the item embeddings H (the learned
    positions P, as the authors' code adds them, shape only the attention).

    Args:
        dim: D, the item embedding width.
        num_interests: K heads.
        max_len: learned positions (the longest sequence); 0 disables them.
        hidden_dim: H, the width of W1 (default 4 D, as the authors' code).

    Example:
        >>> extractor = SelfAttentiveInterests(8, num_interests=3, max_len=5)
        >>> x, mask = torch.randn(2, 5, 8), torch.tensor([[True] * 3 + [False] * 2, [False] * 5])
        >>> extractor(x, mask).shape, extractor.prefixes(x, mask).shape
        (torch.Size([2, 3, 8]), torch.Size([2, 5, 3, 8]))
    """

    def __init__(self, dim: int, *, num_interests: int, max_len: int, hidden_dim: int | None = None):
        super().__init__()
        if num_interests < 1:
            raise ValueError(f"num_interests must be >= 1, got {num_interests}")
        self.num_interests, self.max_len = num_interests, max_len
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.01) if max_len > 0 else None
        self.w1 = nn.Linear(dim, hidden_dim or 4 * dim)  # W1 (H, D) with a bias, as the authors' code
        self.w2 = nn.Linear(hidden_dim or 4 * dim, num_interests, bias=False)  # W2 (K, H)

    def logits(self, x: Tensor) -> Tensor:
        """``(B, K, L)`` unnormalised attention ``W2 tanh(W1 (H + P)^T)``."""
        keys = x
        if self.positions is not None:
            if not torch.jit.is_tracing() and x.shape[1] > self.max_len:  # traced: the export's fixed L
                raise ValueError(f"sequence length {x.shape[1]} exceeds max_len {self.max_len}")
            keys = x + self.positions[: x.shape[1]]  # (B, L, D)
        return self.w2(torch.tanh(self.w1(keys))).transpose(1, 2)  # (B, K, L)

    def attention(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``(B, Q, K, L)`` weights over the allowed positions (``allowed`` (B, Q, L)); a query
        with no allowed position gets all zeros."""
        logits = self.logits(x).unsqueeze(1)  # (B, 1, K, L)
        keep = allowed.unsqueeze(2)  # (B, Q, 1, L)
        logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)  # (B, Q, K, L)
        return torch.softmax(logits, dim=-1) * keep.to(logits.dtype)  # exact zeros where not allowed

    def in_use(self, lengths: Tensor) -> None:
        """Every head is an interest, whatever the length (None: all K)."""
        return None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Args: x (B, L, D); mask (B, L) bool. Returns (B, K, D) interests of the sequence."""
        weights = self.attention(x, mask.unsqueeze(1))  # (B, 1, K, L)
        return weights.squeeze(1) @ x  # (B, K, D)

    def prefixes(self, x: Tensor, mask: Tensor) -> Tensor:
        """Args: x (B, L, D); mask (B, L). Returns (B, L, K, D): row t from positions 0..t."""
        weights = self.attention(x, prefix_mask(mask))  # (B, L, K, L)
        return weights @ x.unsqueeze(1)  # (B, L, K, L) @ (B, 1, L, D) -> (B, L, K, D)


class Bilinear(str, enum.Enum):
    """The behaviour-to-interest map of :class:`CapsuleRouting`."""

    SHARED = "shared"  # MIND: one S for every behaviour and interest
    PER_POSITION = "per_position"  # ComiRec-DR: W_ij per position i and interest j


class RoutingInit(str, enum.Enum):
    """How the routing logits b_ij start (they are never trained)."""

    RANDOM = "random"  # MIND: N(0, sigma^2), drawn once (a buffer saved with the model)
    ZEROS = "zeros"  # ComiRec-DR


class CapsuleRouting(nn.Module):
    """Behaviour-to-interest dynamic routing (MIND Algorithm 1; ComiRec-DR).

    With behaviour embeddings e_i (mapped ``ê_ij = S e_i``, or ``W_ij e_i`` per position i and
    interest j) and routing logits b_ij, each of ``iterations`` rounds computes::

        w_ij = softmax_j(b_ij)            coupling of behaviour i over the interests j (sums to 1)
        z_j  = sum_i w_ij ê_ij            over real behaviours i only
        u_j  = squash(z_j)
        b_ij = b_ij + u_j . ê_ij          (not after the last round)

    and returns the interest capsules u (K, D). b starts from a fixed buffer (random: MIND,
    whose shared S would otherwise give K equal capsules; zeros: ComiRec-DR) and is never
    trained. With ``dynamic_interests`` only the first ``K'_u = max(1, min(K, log2 |I_u|))``
    interests take part (the others get no coupling); their slots in the output repeat interest
    0, so any max over interests, a search merged by max, is the same as with K'_u vectors.

    Args:
        dim: D, the behaviour embedding width (and the capsules', unless ``out_dim``).
        num_interests: K capsules.
        max_len: the longest sequence (routing logits and per-position maps are per position).
        iterations: routing rounds (the papers use 3).
        bilinear: ``shared`` S (MIND) or ``per_position`` W_ij (ComiRec-DR).
        init: routing logits from ``random`` N(0, ``init_std``^2) or ``zeros``.
        init_std: sigma of the random logits.
        dynamic_interests: MIND's K'_u per user.
        detach_routing: no gradient through the rounds before the last (the ComiRec authors'
            code, for MIND and DR alike); False: through every round (the MIND paper).
        out_dim: the capsules' width (default D).

    Example:
        >>> routing = CapsuleRouting(8, num_interests=3, max_len=5)
        >>> x, mask = torch.randn(2, 5, 8), torch.tensor([[True] * 3 + [False] * 2, [False] * 5])
        >>> routing(x, mask).shape, routing.prefixes(x, mask).shape
        (torch.Size([2, 3, 8]), torch.Size([2, 5, 3, 8]))
    """

    def __init__(
        self,
        dim: int,
        *,
        num_interests: int,
        max_len: int,
        iterations: int = 3,
        bilinear: Bilinear | str = Bilinear.SHARED,
        init: RoutingInit | str = RoutingInit.RANDOM,
        init_std: float = 1.0,
        dynamic_interests: bool = False,
        detach_routing: bool = False,
        out_dim: int | None = None,
    ):
        super().__init__()
        if num_interests < 1 or iterations < 1 or max_len < 1:
            raise ValueError(f"num_interests ({num_interests}), iterations ({iterations}) and max_len ({max_len}) must be >= 1")
        self.num_interests, self.max_len, self.iterations = num_interests, max_len, iterations
        self.bilinear, self.init = Bilinear(bilinear), RoutingInit(init)
        self.dynamic_interests, self.detach_routing = dynamic_interests, detach_routing
        self.out_dim = out_dim or dim
        if self.bilinear is Bilinear.SHARED:
            self.S = nn.Linear(dim, self.out_dim, bias=False)  # S: one map, shared
        else:  # W (L, K, D_out, D): the authors' per-(position, interest) weights
            self.W = nn.Parameter(torch.randn(max_len, num_interests, self.out_dim, dim) / math.sqrt(dim))
        logits = torch.randn(num_interests, max_len) * init_std if self.init is RoutingInit.RANDOM else torch.zeros(num_interests, max_len)
        self.register_buffer("initial_logits", logits)  # (K, L) b_ij's start: saved, never trained

    def mapped(self, x: Tensor) -> Tensor:
        """``ê``: (B, L, D_out) for the shared map, (B, K, L, D_out) per position and interest."""
        if self.bilinear is Bilinear.SHARED:
            return self.S(x)  # (B, L, D_out)
        if not torch.jit.is_tracing() and x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len {self.max_len}")
        return torch.einsum("lkod,bld->bklo", self.W[: x.shape[1]], x)  # (B, K, L, D_out)

    def route(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The routing rounds for every query's allowed behaviours.

        Args:
            x: (B, L, D) behaviour embeddings.
            allowed: (B, Q, L) bool, the behaviours query q routes (real, and within its prefix).

        Returns:
            ``(capsules (B, Q, K, D_out), coupling w (B, Q, K, L) of the last round,
            interests in use (B, Q, K) bool)``.
        """
        length = x.shape[1]
        if not torch.jit.is_tracing() and length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        mapped = self.mapped(x)
        shared = self.bilinear is Bilinear.SHARED
        routed = mapped.detach() if self.detach_routing else mapped
        in_use = self.in_use(allowed.sum(dim=-1))  # (B, Q, K) from |I_u| of each query, or None: all
        if in_use is None:
            in_use = torch.ones(*allowed.shape[:2], self.num_interests, dtype=torch.bool, device=x.device)
        keep = allowed.unsqueeze(2).to(x.dtype)  # (B, Q, 1, L)
        logits = self.initial_logits[:, :length].expand(*allowed.shape[:2], self.num_interests, length)  # (B, Q, K, L)
        for round_ in range(self.iterations):
            last = round_ == self.iterations - 1
            masked = logits.masked_fill(~in_use.unsqueeze(-1), torch.finfo(x.dtype).min)
            coupling = torch.softmax(masked, dim=2) * keep  # (B, Q, K, L) over interests; 0 off the allowed
            source = mapped if last else routed
            if shared:
                capsules = squash(torch.einsum("bqkl,blo->bqko", coupling, source))  # (B, Q, K, D_out)
            else:
                capsules = squash(torch.einsum("bqkl,bklo->bqko", coupling, source))
            if not last:
                agreement = torch.einsum("bqko,blo->bqkl" if shared else "bqko,bklo->bqkl", capsules, routed)
                logits = logits + agreement  # (B, Q, K, L)
        return capsules, coupling, in_use

    def in_use(self, lengths: Tensor) -> Tensor | None:
        """``(..., K)`` bool: the interests a sequence of ``lengths`` (...) real behaviours routes
        to (MIND's first K'_u); None: all K (``dynamic_interests`` off)."""
        if not self.dynamic_interests:
            return None
        interest = torch.arange(self.num_interests, device=lengths.device)  # (K,)
        return interest < dynamic_interest_count(lengths, self.num_interests).unsqueeze(-1)

    def _output(self, capsules: Tensor, in_use: Tensor) -> Tensor:
        """Interests out of use repeat interest 0 (max over interests unchanged)."""
        if not self.dynamic_interests:
            return capsules
        return torch.where(in_use.unsqueeze(-1), capsules, capsules[..., :1, :])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Args: x (B, L, D); mask (B, L) bool. Returns (B, K, D_out)."""
        capsules, _, in_use = self.route(x, mask.unsqueeze(1))  # (B, 1, K, D_out)
        return self._output(capsules, in_use).squeeze(1)

    def prefixes(self, x: Tensor, mask: Tensor) -> Tensor:
        """Args: x (B, L, D); mask (B, L). Returns (B, L, K, D_out): row t from positions 0..t."""
        capsules, _, in_use = self.route(x, prefix_mask(mask))  # (B, L, K, D_out)
        return self._output(capsules, in_use)


def label_aware_attention(interests: Tensor, target: Tensor, *, power: float = math.inf, in_use: Tensor | None = None) -> Tensor:
    """MIND's label-aware attention: the user vector a training target is scored with.

    ``v_u = V_u softmax(pow(V_u^T e_i, p))``; ``p = inf`` takes the interest with the largest
    ``V_u^T e_i`` (hard argmax, ComiRec's readout). Used in training only: retrieval searches
    with every interest.

    Args:
        interests: (..., K, D) the user's interests V_u.
        target: (..., D) the target item's embedding e_i.
        power: p, a positive integer (a non-integer power of a negative score is undefined) or
            ``math.inf``.
        in_use: (..., K) bool, the interests that exist (MIND's K'_u); None: all.

    Returns:
        (..., D).
    """
    scores = (interests @ target.unsqueeze(-1)).squeeze(-1)  # (..., K) V_u^T e_i
    if math.isinf(power):
        if in_use is not None:
            scores = scores.masked_fill(~in_use, -math.inf)
        best = scores.argmax(dim=-1, keepdim=True)  # (..., 1)
        return interests.gather(-2, best.unsqueeze(-1).expand(*best.shape, interests.shape[-1])).squeeze(-2)
    powered = scores.pow(power)
    if in_use is not None:
        powered = powered.masked_fill(~in_use, -math.inf)
    weights = F.softmax(powered, dim=-1)  # (..., K)
    return (weights.unsqueeze(-2) @ interests).squeeze(-2)  # (..., D)
