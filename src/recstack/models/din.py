"""Deep Interest Network (Zhou et al., 2018), seed 004: attention over behaviours, per candidate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import require, require_dims
from recstack.models.behaviours import Behaviour, BehaviourParams, behaviour_inputs
from recstack.models.registry import register_model
from recstack.models.state_keys import accept_old_keys
from recstack.nn.attention import TargetAttention
from recstack.nn.mlp import Activation


@register_model("din")
class DIN(nn.Module):
    """Embedding -> per-candidate interest (target attention) -> concat -> MLP -> logit.

    For each group of behaviours the activation unit scores every history position against
    the candidate from ``[q, k, q - k, q * k]`` (80 -> 40 -> 1, Dice); the scores weight the
    history embeddings, unnormalised by default (the paper keeps the intensity of interest),
    and padding never counts. The interest vectors are concatenated with every other feature
    (the candidates included; other sequences pooled with their pooling) and scored by an MLP
    (200 -> 80, Dice) and a Linear.

    Example (``tests/models`` runs it)::

        model = build_model("din", feature_map, {"behaviours": [
            {"candidate": "item_id", "history": "hist_item_ids"},
            {"candidate": "genre", "history": "hist_genres"}]})
        logits = model(batch)  # (B,)
        loss = task_loss + model.regularization(batch)  # mini-batch-aware L2, when l2_reg > 0
    """

    head_module: ClassVar[str] = "mlp"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(BehaviourParams):
        attention_hidden_dims: tuple[int, ...] = (80, 40)
        attention_activation: Activation = Activation.DICE
        attention_softmax: bool = False  # the paper keeps raw scores
        hidden_dims: tuple[int, ...] = (200, 80)
        activation: Activation = Activation.DICE
        # lambda of the mini-batch-aware L2 on embedding rows; see DIN.regularization
        l2_reg: float = 0.0

        def validate(self) -> None:
            super().validate()
            require(len(self.behaviours) > 0, "behaviours", "DIN needs at least one {candidate, history} pair")
            histories = [b.history for b in self.behaviours]
            repeated = sorted({h for h in histories if histories.count(h) > 1})
            require(not repeated, "behaviours", f"history feature(s) {repeated} appear in two pairs")
            require_dims("attention_hidden_dims", self.attention_hidden_dims)
            require(self.l2_reg >= 0, "l2_reg", f"must be >= 0, got {self.l2_reg}")

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        # every other feature (candidates included) is embedded, pooled and concatenated
        self.groups, self.other_inputs, self.embeddings = behaviour_inputs(
            feature_map, features=p.features, behaviours=p.behaviours, sparse=p.sparse_embeddings, init_std=p.embedding_init_std
        )
        group_dims = [self.embeddings.output_dim([b.candidate for b in group]) for group in self.groups]
        self.attentions = nn.ModuleList(
            TargetAttention(
                dim=dim,
                hidden_dims=p.attention_hidden_dims,
                activation=p.attention_activation,
                softmax=p.attention_softmax,
            )
            for dim in group_dims
        )
        self.head_input_dim = self.embeddings.output_dim(self.other_inputs) + sum(group_dims)
        self.mlp = p.mlp(self.head_input_dim, head_dim=1)
        accept_old_keys(self, {"score.": "mlp.head."})  # runs saved when the model held the head

    def interests(self, batch: Batch) -> list[torch.Tensor]:
        """The user's interest in the candidate, one (B, D_g) vector per behaviour group."""
        interests = []
        for group, attention in zip(self.groups, self.attentions):
            query = torch.cat([self.embeddings.pooled(batch, b.candidate) for b in group], dim=-1)  # (B, D_g)
            mask = batch.mask(group[0].history)  # (B, L)
            for behaviour in group[1:]:
                mask = mask | batch.mask(behaviour.history)  # a position is real if any part is

            def keys_at(flat: torch.Tensor | None, group: tuple[Behaviour, ...] = group) -> torch.Tensor:
                # (P, D_g) at packed positions, or (B, L, D_g) padded: the attention chooses
                return torch.cat([self.embeddings.sequence(batch, b.history, flat) for b in group], dim=-1)

            interests.append(attention.attend(query, mask, keys_at))  # (B, D_g)
        return interests

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the MLP reads: every other feature and each group's interest, ``(B, N + sum D_g)``."""
        others = self.embeddings.concat(batch, self.other_inputs)  # (B, N)
        return torch.cat([others, *self.interests(batch)], dim=-1)  # (B, N + sum D_g)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.mlp(self.head_input(batch)).squeeze(-1)  # (B,)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """Mini-batch-aware L2 of the paper: ``l2_reg * sum_j ||w_j||^2 / n_j``, a scalar.

        Only the embedding rows j that ``batch`` uses are penalised (the full L2 would touch
        every row of every table at each step), each divided by n_j, its number of
        occurrences. The paper's n_j counts occurrences over the whole training set; here
        n_j counts them in the batch (candidates and histories sharing a table count
        together), so frequent ids are still shrunk less per occurrence and no global counts
        need to be carried. Frozen tables are skipped. Add the result to the task loss.
        """
        if self.params.l2_reg == 0:
            return torch.zeros((), device=next(self.attentions.parameters()).device)  # the tables may be TorchRec's, holding no parameters here
        return self.params.l2_reg * self.embeddings.mini_batch_l2(batch)
