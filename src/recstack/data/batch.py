"""The typed batch every model consumes.

Shape legend: B batch, L sequence length (the feature's maxlen), D vector dim.

Padded sequences use index 0 for padding, so the mask is ``ids != 0``::

    #            row 0       row 1      row 2
    # raw        "7,3,9"     ""         "4"
    # ids        [[a7,a3,a9],[0,0,0],   [a4,0,0]]     (B, L), left-aligned, oldest first
    # mask       [[1,1,1],   [0,0,0],   [1,0,0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

PADDING_INDEX = 0
OOV_INDEX = 1
DEFAULT_LABEL_KEY = "label"  # the key of a label given as ``Batch(label=...)``, without a target name


@dataclass(init=False)
class Batch:
    """Tensors per feature name, and the labels of every target.

    Attributes:
        ids: categorical (and bucketised numeric) features, ``(B,)`` int64.
        sequences: multi-valued / behaviour features, ``(B, L)`` int64, 0 = padding.
        weights: per-value weights of weighted sequences, ``(B, L)`` float32 (0 at padding).
        dense: normalised numeric features ``(B,)`` and vectors ``(B, D)``, float32.
        labels: ``(B,)`` float32 per target name (the schema's ``targets``); empty at inference.
        group: raw group keys (for example user ids) for GAUC, a NumPy array, or None.

    ``label`` is the one target's labels, for single-target data (the common case)::

        Batch(dense=..., label=torch.ones(4)).label          # (4,)
        Batch(dense=..., labels={"click": c, "like": l}).labels["like"]
    """

    ids: dict[str, Tensor]
    sequences: dict[str, Tensor]
    weights: dict[str, Tensor]
    dense: dict[str, Tensor]
    labels: dict[str, Tensor]
    group: np.ndarray | None

    def __init__(
        self,
        ids: Mapping[str, Tensor] | None = None,
        sequences: Mapping[str, Tensor] | None = None,
        weights: Mapping[str, Tensor] | None = None,
        dense: Mapping[str, Tensor] | None = None,
        label: Tensor | None = None,
        group: np.ndarray | None = None,
        *,
        labels: Mapping[str, Tensor] | None = None,
    ) -> None:
        if label is not None and labels:
            raise ValueError("give a batch label= (one target) or labels= (by target name), not both")
        self.ids = dict(ids or {})
        self.sequences = dict(sequences or {})
        self.weights = dict(weights or {})
        self.dense = dict(dense or {})
        self.labels = dict(labels or {})
        if label is not None:
            self.labels[DEFAULT_LABEL_KEY] = label
        self.group = group

    @property
    def label(self) -> Tensor | None:
        """``(B,)`` labels of the single target, or None when the batch has none; a batch with
        several targets names them: read ``labels[name]``."""
        if not self.labels:
            return None
        if len(self.labels) > 1:
            raise ValueError(f"this batch has {len(self.labels)} targets ({', '.join(self.labels)}): read batch.labels[name]")
        return next(iter(self.labels.values()))

    @label.setter
    def label(self, value: Tensor | None) -> None:
        """Sets the single target's labels (keeping its name), or removes every label (None)."""
        if value is None:
            self.labels = {}
            return
        if len(self.labels) > 1:
            raise ValueError(f"this batch has {len(self.labels)} targets ({', '.join(self.labels)}): set batch.labels[name]")
        self.labels = {next(iter(self.labels), DEFAULT_LABEL_KEY): value}

    def __len__(self) -> int:
        for tensors in (self.ids, self.sequences, self.dense, self.labels):
            for tensor in tensors.values():
                return int(tensor.shape[0])
        return 0

    def nbytes(self) -> int:
        """Bytes held by the batch's tensors and group keys."""
        tensors = (self.ids, self.sequences, self.weights, self.dense, self.labels)
        held = sum(t.element_size() * t.nelement() for group in tensors for t in group.values())
        return held + (self.group.nbytes if self.group is not None else 0)

    def mask(self, name: str) -> Tensor:
        """``(B, L)`` bool, True where the sequence ``name`` holds a value."""
        return self.sequences[name].ne(PADDING_INDEX)

    def jagged(self, name: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """Values, offsets and per-value weights of a sequence, as ``nn.EmbeddingBag`` takes them."""
        padded = self.sequences[name]
        mask = padded.ne(PADDING_INDEX)
        values = padded[mask]
        lengths = mask.sum(dim=1)
        offsets = torch.zeros_like(lengths)
        offsets[1:] = torch.cumsum(lengths, dim=0)[:-1]
        weights = self.weights[name][mask] if name in self.weights else None
        return values, offsets, weights

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.to(device, non_blocking=non_blocking) for k, v in tensors.items()}

        return Batch(
            ids=move(self.ids),
            sequences=move(self.sequences),
            weights=move(self.weights),
            dense=move(self.dense),
            labels=move(self.labels),
            group=self.group,
        )

    def select(self, index: Tensor | slice) -> "Batch":
        """Rows ``index`` of every tensor (a permutation, a boolean mask or a slice)."""
        np_index = index.numpy() if isinstance(index, Tensor) else index
        if isinstance(index, Tensor) and index.dtype == torch.bool:
            index = index.nonzero().squeeze(-1)

        def take(tensor: Tensor) -> Tensor:
            # index_select, not tensor[index]: 6x faster on a (N, L) history (the shuffled
            # batches of every epoch go through here)
            return tensor[index] if isinstance(index, slice) else tensor.index_select(0, index)

        def pick(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: take(v) for k, v in tensors.items()}

        return Batch(
            ids=pick(self.ids),
            sequences=pick(self.sequences),
            weights=pick(self.weights),
            dense=pick(self.dense),
            labels=pick(self.labels),
            group=None if self.group is None else self.group[np_index],
        )

    @staticmethod
    def concat(batches: Iterable["Batch"]) -> "Batch":
        """Rows of several batches with the same features, in order."""
        batches = list(batches)
        if len(batches) == 1:
            return batches[0]
        first = batches[0]

        def cat(attr: str) -> dict[str, Tensor]:
            return {k: torch.cat([getattr(b, attr)[k] for b in batches]) for k in getattr(first, attr)}

        return Batch(
            ids=cat("ids"),
            sequences=cat("sequences"),
            weights=cat("weights"),
            dense=cat("dense"),
            labels=cat("labels"),
            group=None if first.group is None else np.concatenate([b.group for b in batches]),
        )
