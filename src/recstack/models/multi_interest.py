"""What multi-interest recall models (ComiRec-SA, ComiRec-DR, MIND) share: K user vectors from
one behaviour sequence, label-aware attention in training, every interest searched in serving.

Shape legend: B batch, L sequence length, K interests, D vector dim, N training positions.

Built on :class:`~recstack.models.sequence_retrieval.SequenceRetrievalModel`: one item table
embeds the history and is the output layer, and a training row is trained at every position::

    # history   [x1, x2, x3, 0]    extractor over each prefix    V_t (K, D) from x1..x_t
    # targets   [x2, x3, x4, 0]    label-aware attention          v_t = attend(V_t, e(x_{t+1}))
    #                              pairs: (v_1, x2), (v_2, x3), (v_3, x4)          N = 3

The user tower returns all K interests, ``history (B, L) -> (B, K, D)`` (``num_interests`` = K):
evaluation and serving search the corpus with each and merge the results by max score
(:mod:`recstack.evaluation.multi_interest`). The label-aware attention (MIND eq. 8) is used in
training only, where the target is known: ``readout: hard`` picks the interest nearest the
target (ComiRec; MIND's p -> inf), ``soft`` weights them by ``softmax(pow(V_u^T e_i, p))``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recstack.data.batch import OOV_INDEX, PADDING_INDEX, Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import require
from recstack.models.retrieval_contract import RetrievalPairs
from recstack.models.sequence_retrieval import SequenceParams, SequenceRetrievalModel
from recstack.models.youtube_dnn import ItemEmbeddingTower
from recstack.nn.interests import label_aware_attention
from recstack.nn.sparse_inputs import SparseInputs

__all__ = ["MultiInterestModel", "MultiInterestParams", "MultiInterestUserTower", "Readout"]


class Readout(str, enum.Enum):
    """How training reads one vector out of the K interests for a target (label-aware attention)."""

    HARD = "hard"  # the interest with the largest V_u^T e_i (argmax; p -> inf)
    SOFT = "soft"  # softmax(pow(V_u^T e_i, p)) weights


@dataclass(frozen=True, kw_only=True)
class MultiInterestParams(SequenceParams):
    """Parameters every multi-interest model has.

    Attributes:
        num_interests: K, the user vectors.
        readout: label-aware attention in training, ``hard`` or ``soft``.
        attention_pow: p of the soft readout, a positive integer (a fractional power of a
            negative score is undefined).
        embedding_init_std: (every model's, :class:`ModelParams`) the item table's N(0, std^2)
            init. Capsule routing needs larger vectors than the 0.01 default: squash(z) ~ z |z|
            near 0, so with tiny embeddings its outputs and gradients vanish (MIND / ComiRec-DR
            default to 1.0, PyTorch's default embedding init, as in the PyTorch ports of both).
    """

    num_interests: int = 4
    readout: Readout = Readout.HARD
    attention_pow: float = 1.0

    def validate(self) -> None:
        require(self.num_interests >= 1, "num_interests", f"must be >= 1, got {self.num_interests}")
        require(
            self.attention_pow >= 1 and float(self.attention_pow).is_integer(),
            "attention_pow",
            f"must be a positive integer (use readout: hard for p -> inf), got {self.attention_pow}",
        )


class MultiInterestUserTower(nn.Module):
    """``history (B, L) int64 -> (B, K, D)``: the interests of each row's whole history.

    Callable on the plain tensor (``input_names``), so it exports to ONNX on its own.

    Args:
        inputs: the sparse inputs serving ``history_feature`` (the shared item table).
        history_feature: the input sequence's feature name.
        extractor: ``forward(x (B, L, D), mask) -> (B, K, D)``, ``prefixes(x, mask) -> (B, L, K, D)``
            and ``in_use(lengths) -> (..., K) bool | None`` (:mod:`recstack.nn.interests`).
        projection: applied to every interest (MIND's ReLU layer); None: none.
    """

    def __init__(self, *, inputs: SparseInputs, history_feature: str, extractor: nn.Module, projection: nn.Module | None = None):
        super().__init__()
        self.inputs = inputs
        self.extractor = extractor
        self.projection = projection
        self.features: tuple[str, ...] = (history_feature,)
        self.input_names: tuple[str, ...] = (history_feature,)

    def inputs_from_batch(self, batch: Batch) -> dict[str, Tensor]:
        return {self.input_names[0]: batch.sequences[self.input_names[0]]}

    def encode(self, batch: Batch) -> Tensor:
        """``(B, K, D)`` user interests of a batch."""
        return self(batch.sequences[self.input_names[0]])

    def _embed(self, history: Tensor) -> Tensor:
        name = self.input_names[0]
        return self.inputs.sequence(Batch(sequences={name: history}), name)  # (B, L, D)

    def _project(self, interests: Tensor, nonempty: Tensor) -> Tensor:
        """The projection of ``(..., K, D)`` interests; zeros where the history is empty."""
        if self.projection is None:
            return interests  # the extractor's are zero there already
        return self.projection(interests) * nonempty.to(interests.dtype)[..., None, None]

    def every_prefix(self, history: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(B, L, K, D)`` interests of each prefix (row t from positions 0..t) and the
        ``(B, L, K)`` interests in use (None: all)."""
        mask = history != 0  # (B, L)
        lengths = torch.cumsum(mask.long(), dim=1)  # (B, L) real positions up to t
        interests = self._project(self.extractor.prefixes(self._embed(history), mask), lengths > 0)  # (B, L, K, D)
        return interests, self.extractor.in_use(lengths)

    def forward(self, history: Tensor) -> Tensor:
        """Args: history (B, L) item rows, 0 = padding. Returns (B, K, D), zeros for an empty one."""
        mask = history != 0  # (B, L)
        return self._project(self.extractor(self._embed(history), mask), mask.any(dim=1))  # (B, K, D)


class MultiInterestModel(SequenceRetrievalModel):
    """Base of the multi-interest models: K interests per user, label-aware training pairs.

    A subclass sets ``self.inputs = self._item_inputs(...)``, builds its extractor and calls
    :meth:`_build_interest_towers`.
    """

    params: MultiInterestParams

    def _build_interest_towers(self, params: MultiInterestParams, extractor: nn.Module, projection: nn.Module | None = None) -> None:
        self.num_interests = params.num_interests  # encode_user -> (B, K, D)
        self.user_encoder = MultiInterestUserTower(
            inputs=self.inputs, history_feature=params.history_feature, extractor=extractor, projection=projection
        )
        self.item_encoder = ItemEmbeddingTower(inputs=self.inputs, input_name=params.item_id_feature, normalize=False)

    def _history_length(self, feature_map: FeatureMap) -> int:
        """L, the history feature's maxlen (the extractor's positions)."""
        return feature_map.schema[self.params.history_feature].maxlen

    def encode_user(self, batch: Batch) -> Tensor:
        """``(B, K, D)``: the K interests of each row's history."""
        return self.user_encoder.encode(batch)

    def user_tower(self) -> MultiInterestUserTower:  # type: ignore[override]
        return self.user_encoder

    def read_out(self, interests: Tensor, targets: Tensor, in_use: Tensor | None) -> Tensor:
        """Label-aware attention: ``(N, K, D)`` interests, ``(N, D)`` targets -> ``(N, D)``."""
        power = float("inf") if self.params.readout is Readout.HARD else self.params.attention_pow
        return label_aware_attention(interests, targets, power=power, in_use=in_use)

    def retrieval_pairs(self, batch: Batch) -> RetrievalPairs:
        """A pair at every position with a real input and a known next item: the query is the
        label-aware readout of that prefix's interests with the next item as the label
        (``queries (N, D)``), the positive its row and vector; ``seen_rows (B, 2L)`` and ``seen_of_pair`` as
        :class:`SequenceRetrievalModel`."""
        history = batch.sequences[self.params.history_feature]  # (B, L)
        targets = batch.sequences[self.params.target_feature]  # (B, L)
        if history.shape != targets.shape:
            raise ValueError(
                f"{self.params.history_feature} {tuple(history.shape)} and {self.params.target_feature} "
                f"{tuple(targets.shape)} must be aligned position by position (same maxlen)"
            )
        interests, in_use = self.user_encoder.every_prefix(history)  # (B, L, K, D), (B, L, K) | None
        real = (history != 0) & (targets > OOV_INDEX)  # (B, L)
        positive_rows = targets[real]  # (N,)
        positives = self.encode_item_rows(positive_rows)  # (N, D)
        queries = self.read_out(interests[real], positives, None if in_use is None else in_use[real])  # (N, D)
        row_of = torch.arange(history.shape[0], device=history.device).unsqueeze(1).expand_as(history)[real]  # (N,)
        seen = torch.cat([history, targets], dim=1)  # (B, 2L), each pair reads its row
        return RetrievalPairs(queries=queries, positive_rows=positive_rows, positive_vectors=positives, labels=None, seen_rows=seen, seen_of_pair=row_of)
