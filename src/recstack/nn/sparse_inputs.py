"""The sparse-input interface: what a model may ask of its embedding tables, by feature name.

Models never hold or index an embedding table. They ask a :class:`SparseInputs` for vectors of
named features, and the implementation decides where the tables live and how they are looked
up. Today that is :class:`recstack.nn.embedding.EmbeddingCollection` (plain ``nn.Embedding``
tables on one device), built by :func:`recstack.nn.embedding.build_sparse_inputs`; a
TorchRec-sharded implementation (tables split over devices, lookups as all-to-alls, fused
optimisers in the backward) can stand in without a model changing, as long as it provides
these methods with these shapes. Which features share a table is the schema's ``tables:``
declaration, not a model's choice.

Shape legend: B batch, L sequence length, P packed positions, F fields, D embedding dim,
N concatenated width.

Example:
    >>> from recstack.nn.embedding import build_sparse_inputs  # doctest: +SKIP
    >>> inputs = build_sparse_inputs(feature_map, features=["item_id", "hist_item_ids", "age"])  # doctest: +SKIP
    >>> inputs.concat(batch, ["item_id", "hist_item_ids", "age"]).shape  # (B, D + D + 1)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:  # nn sits below data at run time: the types only, for the signatures
    from recstack.data.batch import Batch
    from recstack.schema import Feature

__all__ = ["SparseInputs"]


@runtime_checkable
class SparseInputs(Protocol):
    """Embedded (categorical, bucketised, sequence) and dense features of a model, by name.

    Every method takes feature names the implementation was built for (its ``features``);
    a name it does not serve raises ``KeyError`` naming the ones it does.

    Widths:
        - :meth:`dim`: one feature's width in a model input: its table's dim, or its dense width.
        - :meth:`output_dim`: the width of :meth:`concat` over some names.
        - :meth:`field_dim`: the one dim of names stacked as fields (``ValueError`` otherwise).

    Lookups (values on the batch's device; gradients flow to the tables, however the
    implementation applies them):
        - :meth:`pooled`: ``(B, D)``, an id feature's vector or a sequence pooled with its
          feature's pooling over real positions.
        - :meth:`embed_fields`: ``(B, F, D)``, pooled vectors stacked as fields (FM, DeepFM).
        - :meth:`dense_input`: ``(B, N)``, numeric scalars and vectors side by side.
        - :meth:`concat`: ``(B, N)``, pooled vectors and dense values in the given order.
        - :meth:`sequence`: ``(B, L, D)`` padded, or ``(P, D)`` at packed positions (DIN).

    Regularisation:
        - :meth:`mini_batch_l2`: DIN's mini-batch-aware L2 over the rows a batch uses.
    """

    def feature(self, name: str) -> Feature:
        """The schema feature ``name``."""
        ...

    def dim(self, name: str) -> int:
        """Width of feature ``name`` in a model input."""
        ...

    def output_dim(self, names: Sequence[str]) -> int:
        """Width of :meth:`concat` over ``names``."""
        ...

    def field_dim(self, names: Sequence[str]) -> int:
        """The common embedding dim of ``names`` as fields; ValueError naming each dim if not."""
        ...

    def pooled(self, batch: Batch, name: str) -> Tensor:
        """``(B, D)``: an id feature's vector, or a sequence pooled over its real positions."""
        ...

    def embed_fields(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """``(B, F, D)``: :meth:`pooled` of ``names`` stacked as fields (one dim)."""
        ...

    def dense_input(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """``(B, N)``: the dense features ``names`` side by side (N may be 0)."""
        ...

    def concat(self, batch: Batch, names: Sequence[str]) -> Tensor:
        """``(B, output_dim(names))``: pooled vectors and dense values in the order given."""
        ...

    def sequence(self, batch: Batch, name: str, flat: Tensor | None = None) -> Tensor:
        """Sequence feature ``name`` unpooled: ``(B, L, D)`` with padding rows; or, with
        ``flat`` (P,) indexes into the ``(B * L)`` flattened positions, ``(P, D)`` of those
        positions only (only they are looked up and get gradients)."""
        ...

    def mini_batch_l2(self, batch: Batch) -> Tensor:
        """``sum_j ||w_j||^2 / n_j``, a scalar: every trainable table row j that ``batch`` uses
        (padding left out), divided by n_j, its number of occurrences in the batch (features
        sharing a table count together)."""
        ...
