"""Behavior Sequence Transformer (Chen et al., 2019, Alibaba): self-attention over the
behaviour sequence with the target item appended, for CTR ranking."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.behaviours import Behaviour, BehaviourParams, behaviour_inputs
from recstack.models.params import param_errors, require, require_dropout
from recstack.models.registry import register_model
from recstack.nn.mlp import Activation
from recstack.nn.pooling import masked_pool
from recstack.nn.sequence import CausalSelfAttentionEncoder


class BSTOutput(str, enum.Enum):
    """What of the transformer's outputs goes to the MLP."""

    CONCAT = "concat"  # the paper: every position's output, flattened (target slot first)
    MEAN = "mean"  # the mean over the target and the real behaviours
    TARGET = "target"  # the target position's output only


@register_model("bst")
class BST(nn.Module):
    """Embedding -> [target, behaviours] -> transformer -> concat with other features -> MLP -> logit.

    For each group of behaviours (the item and its genre, concatenated per position as in the
    paper's item_id + category_id sequence features), the target item's embedding is appended
    to the history as its newest position, and a transformer block (multi-head self-attention,
    point-wise feed-forward, residuals, layer norm after each, dropout; no causal mask: every
    position sees every other) encodes the L + 1 positions. The paper's positional feature is
    the time gap ``t(target) - t(behaviour)``; recstack's CTR data hold no timestamp per
    behaviour, so the position is its recency rank instead: 0 for the target, 1 for the newest
    behaviour, 2 for the one before, ... (learned embeddings, added to the inputs). Positions are
    laid out target first, newest behaviour next, so that each slot of the flattened output
    (``output: concat``, the paper's) always holds the same recency rank. The outputs are
    concatenated with every other feature (the candidates included, other sequences pooled) and
    scored by an MLP and a Linear.

    Example (``tests/models`` runs it)::

        model = build_model("bst", feature_map, {"behaviours": [
            {"candidate": "item_id", "history": "hist_item_ids"},
            {"candidate": "genre", "history": "hist_genres"}]})
        logits = model(batch)  # (B,)
    """

    head_module: ClassVar[str] = "mlp"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(BehaviourParams):
        num_layers: int = 1  # the paper's best: one block
        num_heads: int = 2  # must divide the group's width (the sum of its embedding dims)
        ffn_dim: int | None = None  # feed-forward hidden width; None: the group's width
        transformer_dropout: float = 0.2
        # on the attention weights (None: transformer_dropout); 0 lets CPU training use PyTorch's
        # fused attention kernel (docs/benchmarks.md: Sequence rankers)
        attention_dropout: float | None = None
        pre_norm: bool = False  # the paper's transformer normalises after each residual sum
        positional: bool = True
        output: BSTOutput = BSTOutput.CONCAT
        hidden_dims: tuple[int, ...] = (256, 128)
        activation: Activation = Activation.PRELU  # the paper uses LeakyReLU

        def validate(self) -> None:
            super().validate()
            require(len(self.behaviours) > 0, "behaviours", "BST needs at least one {candidate, history} pair")
            histories = [b.history for b in self.behaviours]
            repeated = sorted({h for h in histories if histories.count(h) > 1})
            require(not repeated, "behaviours", f"history feature(s) {repeated} appear in two pairs")
            require(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
            require(self.num_heads >= 1, "num_heads", f"must be >= 1, got {self.num_heads}")
            require(self.ffn_dim is None or self.ffn_dim >= 1, "ffn_dim", f"must be >= 1, got {self.ffn_dim}")
            require_dropout("transformer_dropout", self.transformer_dropout)
            if self.attention_dropout is not None:
                require_dropout("attention_dropout", self.attention_dropout)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        schema = feature_map.schema
        self.groups, self.other_inputs, self.embeddings = behaviour_inputs(
            feature_map, features=p.features, behaviours=p.behaviours, sparse=p.sparse_embeddings, init_std=p.embedding_init_std
        )
        # the target plus the newest maxlen behaviours: one slot each
        self.slots = [schema[group[0].history].maxlen + 1 for group in self.groups]
        group_dims = [self.embeddings.output_dim([b.candidate for b in group]) for group in self.groups]
        for dim in group_dims:
            require(
                dim % p.num_heads == 0,
                "num_heads",
                f"{p.num_heads} heads do not divide a behaviour group's width {dim} (the sum of its embedding dims)",
            )
        with param_errors("behaviours"):
            self.encoders = nn.ModuleList(
                CausalSelfAttentionEncoder(
                    dim,
                    num_layers=p.num_layers,
                    num_heads=p.num_heads,
                    max_len=slots,
                    dropout=p.transformer_dropout,
                    pre_norm=p.pre_norm,
                    causal=False,
                    positional=p.positional,
                    ffn_dim=p.ffn_dim,
                    attention_dropout=p.attention_dropout,
                )
                for dim, slots in zip(group_dims, self.slots)
            )
        widths = [dim * slots if p.output is BSTOutput.CONCAT else dim for dim, slots in zip(group_dims, self.slots)]
        self.head_input_dim = self.embeddings.output_dim(self.other_inputs) + sum(widths)
        self.mlp = p.mlp(self.head_input_dim, head_dim=1)

    def tokens(self, batch: Batch, group: tuple[Behaviour, ...], slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's input for one group: ``(B, S, D_g)`` target then newest-first
        behaviours, and its ``(B, S)`` mask (S = ``slots``, the history's maxlen + 1)."""
        target = torch.cat([self.embeddings.pooled(batch, b.candidate) for b in group], dim=-1)  # (B, D_g)
        history = torch.cat([self.embeddings.sequence(batch, b.history) for b in group], dim=-1)  # (B, L, D_g)
        mask = batch.mask(group[0].history)  # (B, L)
        for behaviour in group[1:]:
            mask = mask | batch.mask(behaviour.history)  # a position is real if any part is
        newest_first, mask = _newest_first(history, mask)  # (B, L, D_g), (B, L)
        tokens = torch.cat([target.unsqueeze(1), newest_first], dim=1)[:, :slots]  # (B, <=S, D_g)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)[:, :slots]  # (B, <=S)
        missing = slots - tokens.shape[1]  # a batch padded short of maxlen: pad to the fixed slots
        if missing > 0:
            tokens = nn.functional.pad(tokens, (0, 0, 0, missing))
            mask = nn.functional.pad(mask, (0, missing))
        return tokens, mask

    def sequence_outputs(self, batch: Batch) -> list[torch.Tensor]:
        """The transformer's outputs as the MLP reads them, one ``(B, W_g)`` per group."""
        outputs = []
        for group, encoder, slots in zip(self.groups, self.encoders, self.slots):
            tokens, mask = self.tokens(batch, group, slots)  # (B, S, D_g), (B, S)
            if self.params.output is BSTOutput.TARGET:
                # the last block attends from the target's slot alone: 1 query of S
                outputs.append(encoder(tokens, mask, queries=1)[:, 0])  # (B, D_g)
                continue
            encoded = encoder(tokens, mask)  # (B, S, D_g), zero at padding
            if self.params.output is BSTOutput.CONCAT:
                outputs.append(encoded.flatten(1))  # (B, S * D_g)
            else:
                outputs.append(masked_pool(encoded, mask, mode="mean"))  # (B, D_g)
        return outputs

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the MLP reads: every other feature and each group's transformer output, ``(B, N + sum W_g)``."""
        others = self.embeddings.concat(batch, self.other_inputs)  # (B, N)
        return torch.cat([others, *self.sequence_outputs(batch)], dim=-1)  # (B, N + sum W_g)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.mlp(self.head_input(batch)).squeeze(-1)  # (B,)


def _newest_first(history: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real behaviours reversed (newest first), still left-aligned: ``(B, L, D)``
    and its ``(B, L)`` prefix mask. A vectorised gather; padding stays at the end."""
    length = mask.shape[1]
    index = torch.arange(length, device=mask.device).unsqueeze(0)  # (1, L)
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    source = (lengths - 1 - index).clamp(min=0)  # (B, L) newest real position first
    reversed_history = history.gather(1, source.unsqueeze(-1).expand(-1, -1, history.shape[-1]))  # (B, L, D)
    return reversed_history, index < lengths
