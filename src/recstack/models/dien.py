"""Deep Interest Evolution Network (Zhou et al., 2019): a GRU interest extractor trained with an
auxiliary next-behaviour loss, and an attention-gated GRU (AUGRU) for interest evolution."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from recstack.data.batch import PADDING_INDEX, Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.behaviours import Behaviour, BehaviourParams, behaviour_inputs
from recstack.models.params import require, require_dims
from recstack.models.registry import register_model
from recstack.nn.mlp import MLP, Activation
from recstack.nn.sequence import AUGRU, GRUEncoder

_CHUNK_ELEMENTS = 1 << 20  # activations per auxiliary-net chunk: 4 MiB in float32, heap-allocated


class AuxiliaryScorer(str, enum.Enum):
    """How the auxiliary loss scores a (h_t, e_{t+1}) pair."""

    MLP = "mlp"  # the paper's released code: an MLP on [h_t, e_{t+1}] (aux_hidden_dims)
    INNER_PRODUCT = "inner_product"  # h_t . e_{t+1}, the paper's eq. 3 as written (torch-rechub's)


class AuxiliaryNegatives(str, enum.Enum):
    """Where the auxiliary loss's negative e^-_{t+1} comes from."""

    UNIFORM = "uniform"  # an item row drawn uniformly from the lead feature's table; compared on that feature
    # a real behaviour drawn uniformly from the batch: items as often as they occur in histories
    # (the released code's negatives, drawn from the list of all clicks), with every feature of
    # the group (its genre too), so pairs are compared on the group's whole embedding
    BEHAVIOURS = "behaviours"


class _Extraction(NamedTuple):
    """One behaviour group through the interest extractor."""

    target: torch.Tensor  # (B, D_g) the candidate's embeddings
    states: torch.Tensor  # (B, L, H) the GRU's interest states, zero at padding
    behaviours: torch.Tensor  # (B, L, D) the aux loss's e_t: the lead feature's embeddings, or the group's (behaviours negatives)
    mask: torch.Tensor  # (B, L) bool, True at real behaviours


@register_model("dien")
class DIEN(nn.Module):
    """Embedding -> interest extractor (GRU) -> interest evolution (AUGRU) -> concat -> MLP -> logit.

    For each group of behaviours (their embeddings concatenated per position, as DIN), a GRU
    reads the history and gives one interest state h_t per position. In training, an auxiliary
    loss (eq. 3) supervises each h_t with the next behaviour: an MLP on ``[h_t, e_{t+1}]`` (the
    released code's; ``aux_scorer: inner_product`` scores ``h_t . e_{t+1}`` instead, which needs
    H equal to the compared embedding's width) scores the real next behaviour as positive and an
    item drawn uniformly from the table (padding excluded) as negative, binary cross-entropy,
    averaged over the pairs whose t + 1 is a real position, weighted by ``aux_loss_weight``. A
    uniformly sampled item's other features (its genre) are unknown, so those pairs are compared
    on the group's first history feature (the item id) only; ``aux_negatives: behaviours`` draws
    each negative from the batch's real behaviours instead (popularity-proportional, as the
    released code's), with all the group's features, and compares pairs on the whole group
    embedding. The attention a_t = softmax_t(h_t W e_target) over real positions (eq. 5)
    drives the AUGRU, whose update gate is scaled by a_t (eq. 6-7); its state after the last
    real position is the user's interest in the target. The interests are concatenated with
    every other feature (the candidates included) and scored by an MLP and a Linear.

    The auxiliary loss is :meth:`regularization` (the ``Regularized`` protocol): the training
    task adds it to its loss, and scoring (``task.predict``, export, serving) never computes it.
    ``forward`` keeps its extractor states for the batch it last saw, so that
    ``regularization`` on that batch does not run the GRU twice.

    Example (``tests/models`` runs it)::

        model = build_model("dien", feature_map, {"behaviours": [
            {"candidate": "item_id", "history": "hist_item_ids"},
            {"candidate": "genre", "history": "hist_genres"}]})
        logits = model(batch)  # (B,)
        loss = task_loss + model.regularization(batch)  # aux_loss_weight * auxiliary loss
    """

    head_module: ClassVar[str] = "mlp"  # the output module over head_input (models/feature_part.py)

    @dataclass(frozen=True, kw_only=True)
    class Params(BehaviourParams):
        gru_hidden_dim: int | None = None  # None: the group's width (the sum of its embedding dims)
        # the paper's alpha (its released code: 1.0); 0 turns the auxiliary loss off. 0.2 (torch-rechub's
        # default): on MovieLens-100K CTR, 1.0 cost 0.03 test AUC after one epoch and gained nothing after
        # three (docs/benchmarks.md, "Sequence rankers")
        aux_loss_weight: float = 0.2
        aux_hidden_dims: tuple[int, ...] = (100, 50)  # the auxiliary net of the paper's code
        aux_scorer: AuxiliaryScorer = AuxiliaryScorer.MLP
        aux_negatives: AuxiliaryNegatives = AuxiliaryNegatives.UNIFORM
        hidden_dims: tuple[int, ...] = (200, 80)
        activation: Activation = Activation.DICE

        def validate(self) -> None:
            super().validate()
            require(len(self.behaviours) > 0, "behaviours", "DIEN needs at least one {candidate, history} pair")
            histories = [b.history for b in self.behaviours]
            repeated = sorted({h for h in histories if histories.count(h) > 1})
            require(not repeated, "behaviours", f"history feature(s) {repeated} appear in two pairs")
            require(
                self.gru_hidden_dim is None or self.gru_hidden_dim >= 1,
                "gru_hidden_dim",
                f"must be >= 1, got {self.gru_hidden_dim}",
            )
            require(self.aux_loss_weight >= 0, "aux_loss_weight", f"must be >= 0, got {self.aux_loss_weight}")
            require_dims("aux_hidden_dims", self.aux_hidden_dims)

    def __init__(self, *, feature_map: FeatureMap, params: Params | None = None):
        super().__init__()
        self.params = p = params or self.Params()
        schema = feature_map.schema
        self.groups, self.other_inputs, self.embeddings = behaviour_inputs(
            feature_map, features=p.features, behaviours=p.behaviours, sparse=p.sparse_embeddings, init_std=p.embedding_init_std
        )
        group_dims = [self.embeddings.output_dim([b.candidate for b in group]) for group in self.groups]
        hidden_dims = [p.gru_hidden_dim or dim for dim in group_dims]
        self.extractors = nn.ModuleList(GRUEncoder(dim, hidden) for dim, hidden in zip(group_dims, hidden_dims))
        self.attention_weights = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(hidden, dim))) for dim, hidden in zip(group_dims, hidden_dims)
        )  # W of a_t = softmax(h_t W e_target), (H, D_g) each
        self.evolutions = nn.ModuleList(AUGRU(hidden, hidden) for hidden in hidden_dims)
        # the uniform negatives' table size, and the auxiliary net over [h_t, e_{t+1}]: e of the lead
        # feature (uniform negatives) or of the whole group (behaviours negatives)
        leads = [group[0].history for group in self.groups]
        self.negative_rows = [feature_map.table_of(schema[lead]).num_rows for lead in leads]
        self.whole_group = p.aux_negatives is AuxiliaryNegatives.BEHAVIOURS
        compared_dims = group_dims if self.whole_group else [self.embeddings.dim(lead) for lead in leads]
        if p.aux_scorer is AuxiliaryScorer.INNER_PRODUCT:
            for hidden, lead, compared in zip(hidden_dims, leads, compared_dims):
                what = f"{lead!r}'s group embedding" if self.whole_group else f"{lead!r}'s embedding"
                require(
                    hidden == compared, "aux_scorer",
                    f"inner_product needs the GRU state as wide as {what} ({compared}), got {hidden}: "
                    "give that history its own group, or set gru_hidden_dim",
                )  # fmt: skip
        self.auxiliary_nets = nn.ModuleList(
            MLP(in_dim=hidden + compared, hidden_dims=p.aux_hidden_dims, activation=Activation.RELU, head_dim=1)
            for hidden, compared in zip(hidden_dims, compared_dims)
            if p.aux_scorer is AuxiliaryScorer.MLP
        )  # empty for inner_product
        self.head_input_dim = self.embeddings.output_dim(self.other_inputs) + sum(hidden_dims)
        self.mlp = p.mlp(self.head_input_dim, head_dim=1)
        self._last: tuple[Batch, list[_Extraction]] | None = None  # forward's, for regularization

    def extract(self, batch: Batch) -> list[_Extraction]:
        """The interest extractor (GRU) over each behaviour group's history."""
        extractions = []
        for group, extractor in zip(self.groups, self.extractors):
            target = torch.cat([self.embeddings.pooled(batch, b.candidate) for b in group], dim=-1)  # (B, D_g)
            history = torch.cat([self.embeddings.sequence(batch, b.history) for b in group], dim=-1)  # (B, L, D_g)
            mask = batch.mask(group[0].history)  # (B, L)
            for behaviour in group[1:]:
                mask = mask | batch.mask(behaviour.history)
            states = extractor(history, mask)  # (B, L, H), zero at padding
            compared = history if self.whole_group else history[..., : self.embeddings.dim(group[0].history)]
            extractions.append(_Extraction(target, states, compared, mask))
        return extractions

    def interests(self, extractions: list[_Extraction]) -> list[torch.Tensor]:
        """The user's evolved interest in the candidate, one ``(B, H_g)`` per behaviour group."""
        interests = []
        for (target, states, _, mask), weight, evolution in zip(extractions, self.attention_weights, self.evolutions):
            # h_t W e_target as a product and a sum: a batched (L, H) x (H, 1) matmul per row was
            # 1.8x slower, forward and backward
            scores = (states * (target @ weight.t()).unsqueeze(1)).sum(-1)  # (B, L)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # finite: no NaN on empty rows
            attention = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # (B, L)
            interests.append(evolution(states, attention, mask))  # (B, H) interest evolution
        return interests

    def auxiliary_loss(self, index: int, states: torch.Tensor, behaviours: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 3 for group ``index``: ``-mean[log s(h_t, e_{t+1}) + log(1 - s(h_t, e^-_{t+1}))]``.

        Args:
            states: (B, L, H) extractor states.
            behaviours: (B, L, D) the behaviours' embeddings the pairs compare (the lead
                feature's, or the group's with behaviours negatives).
            mask: (B, L) bool, True at real behaviours.

        Returns:
            A scalar, averaged over the pairs (b, t) whose t + 1 is real (0 when there are none).
        """
        # flat (B * L) indexes of the pairs' h_t, row-major as a boolean mask would take them;
        # index_select, not boolean indexing: 1.6x faster forward and backward here
        pairs = (mask[:, 1:] & mask[:, :-1]).nonzero()  # (N, 2): (b, t) with t and t + 1 real
        at = pairs[:, 0] * mask.shape[1] + pairs[:, 1]  # (N,)
        hidden = states.flatten(0, 1).index_select(0, at)  # (N, H)
        positive = behaviours.flatten(0, 1).index_select(0, at + 1)  # (N, D), e_{t+1}
        if hidden.shape[0] == 0:
            return states.sum() * 0.0  # keeps the graph (and DDP's parameter set) intact
        if self.whole_group:  # a real behaviour of the batch, uniformly: in proportion to how often items occur
            real = mask.flatten().nonzero().squeeze(1)  # (R,) flat indexes of real behaviours
            drawn = real[torch.randint(real.shape[0], (hidden.shape[0],), device=states.device)]  # (N,)
            negative = behaviours.flatten(0, 1).index_select(0, drawn)  # (N, D_g)
        else:  # uniform over the table's rows, padding excluded
            lead = self.groups[index][0].history
            sampled = torch.randint(PADDING_INDEX + 1, self.negative_rows[index], (1, hidden.shape[0]), device=states.device)
            negative = self.embeddings.sequence(Batch(sequences={lead: sampled}), lead).squeeze(0)  # (N, D)
        if self.params.aux_scorer is AuxiliaryScorer.INNER_PRODUCT:
            positive_logits, negative_logits = (hidden * positive).sum(-1), (hidden * negative).sum(-1)  # (N,) each
        else:
            positive_logits, negative_logits = self._auxiliary_net_logits(index, hidden, positive, negative)
        return F.binary_cross_entropy_with_logits(
            positive_logits, torch.ones_like(positive_logits)
        ) + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits))

    def _auxiliary_net_logits(
        self, index: int, hidden: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The auxiliary net's logits of the N positive and N negative pairs, ``(N,)`` each.

        Each chunk's positives and negatives go through the net as one ``(2n, H + D)`` batch (one
        GEMM per layer). Chunks keep every activation near 4 MiB: at batch 1024 x 50 behaviours
        the net's (2N, 100) layer is ~40 MB, above glibc's largest mmap threshold (32 MB), so
        each such tensor and its gradients were mapped and page-faulted anew every step.
        """
        net = self.auxiliary_nets[index]
        width = max(hidden.shape[1] + positive.shape[1], *self.params.aux_hidden_dims)  # the widest (2n, .) activation
        rows = max(1, _CHUNK_ELEMENTS // (2 * width))
        logits = [
            net(torch.cat([h.repeat(2, 1), torch.cat([p, n])], dim=-1)).squeeze(-1).chunk(2)  # (n,) each
            for h, p, n in zip(hidden.split(rows), positive.split(rows), negative.split(rows))
        ]
        return torch.cat([pos for pos, _ in logits]), torch.cat([neg for _, neg in logits])

    def head_input(self, batch: Batch) -> torch.Tensor:
        """What the MLP reads: every other feature and each group's evolved interest, ``(B, N + sum H_g)``
        (the extractor states are kept for :meth:`regularization` on this batch)."""
        extractions = self.extract(batch)
        self._last = (batch, extractions)
        others = self.embeddings.concat(batch, self.other_inputs)  # (B, N)
        return torch.cat([others, *self.interests(extractions)], dim=-1)  # (B, N + sum H_g)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns logits (B,)."""
        return self.mlp(self.head_input(batch)).squeeze(-1)  # (B,)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """``aux_loss_weight`` times the auxiliary loss on ``batch``, a scalar, with freshly
        sampled negatives; the training task adds it to its loss. The extractor states are
        those of the last ``forward`` when it saw this same batch (the task's order), else the
        extractor runs again."""
        last, self._last = self._last, None  # used once
        if self.params.aux_loss_weight == 0:
            return torch.zeros((), device=self.attention_weights[0].device)
        extractions = last[1] if last is not None and last[0] is batch else self.extract(batch)
        losses = [self.auxiliary_loss(i, e.states, e.behaviours, e.mask) for i, e in enumerate(extractions)]
        return self.params.aux_loss_weight * torch.stack(losses).sum()
