"""The retrieval contract: what every retrieval model offers the tasks, export, index and serving.

Shape legend: B batch, L sequence length, K interests per user, D vector dim, N pairs (one per
(query, positive item)), R item table rows.

A retrieval model scores ``user . item``. It declares itself with ``kind = "retrieval"`` and is
checked when it registers (``@register_model``): a missing member is a TypeError at import,
naming the member. What it offers:

- ``encode_user(batch)``: ``(B, D)``, or ``(B, K, D)`` when ``num_interests`` K > 1;
- ``encode_item(batch)``: ``(B, D)`` from the batch's item features;
- ``encode_item_rows(rows (R,))``: ``(R, D)`` from item table rows alone (sampled negatives,
  full-softmax, the item index), after ``set_item_catalogue`` where the item tower reads more
  than the id;
- ``user_tower()`` / ``item_tower()``: exportable modules on plain tensors (their
  ``input_names`` in order); ``user_feature_names`` / ``item_feature_names``; ``item_id_feature``
  (the categorical feature whose table row names an item) and ``num_item_rows`` (None: the item
  id feature has no table); ``positive_feature``: the feature holding the training positives'
  rows (the item id for two towers, the next-item sequence for a sequence model), over which
  item frequencies (log-Q, popularity sampling) are counted; ``reads_item_catalogue`` /
  ``item_catalogue_features``: whether training hands the model the catalogue's rows of those
  features (``set_item_catalogue``) whatever the loss (a sequence model's item side features);
- ``retrieval_pairs(batch)``: the training pairs a retrieval task scores, a :class:`RetrievalPairs`:
  ``queries (N, D)`` and their positives. A two-tower model gives one pair per batch row; a
  sequence model one per non-padding position (flattened ``(B, L)``); a multi-interest model its
  label-aware-attended vector per pair.

``RetrievalDefaults`` holds the members two-tower models share (one interest, one pair per row).

Example:
    >>> from recstack.models import build_model  # doctest: +SKIP
    >>> model = build_model("dssm", feature_map, {"hidden_dims": [64, 32]})  # doctest: +SKIP
    >>> isinstance(model, RetrievalModel)  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

from recstack.errors import ConfigError

if TYPE_CHECKING:
    from recstack.data.batch import Batch

__all__ = [
    "RETRIEVAL_KIND",
    "RETRIEVAL_MEMBERS",
    "ItemCatalogueModel",
    "RetrievalDefaults",
    "RetrievalModel",
    "RetrievalPairs",
    "check_retrieval_class",
    "is_retrieval_model",
    "require_retrieval_model",
]

RETRIEVAL_KIND = "retrieval"


class RetrievalPairs(NamedTuple):
    """What a retrieval task scores: N (query, positive item) pairs.

    Attributes:
        queries: ``(N, D)`` query (user) vectors.
        positive_rows: ``(N,)`` int64 item table rows of the positives; None: the batch's own
            item id column (``batch.ids[task.item_feature]``, one per batch row: two towers).
        positive_vectors: ``(N, D)`` the positives' vectors; None: the task encodes
            ``positive_rows`` with ``model.encode_item_rows``.
        labels: ``(N,)`` float label of each pair (a 0/1 target for pointwise losses, a weight
            for the softmax losses); None: every pair a positive of weight 1.
        seen_rows: ``(R, S)`` item rows a loss must not sample as a pair's negative (SASRec's
            BCE: the user's sequence; 0 = none), one row per pair (R = N) or, with
            ``seen_of_pair``, per sequence; None: only the positive itself.
        seen_of_pair: ``(N,)`` the row of ``seen_rows`` of each pair (pairs of one sequence
            share it); None: row i is pair i's.
    """

    queries: Tensor
    positive_rows: Tensor | None
    positive_vectors: Tensor | None
    labels: Tensor | None
    seen_rows: Tensor | None = None
    seen_of_pair: Tensor | None = None


@runtime_checkable
class ItemCatalogueModel(Protocol):
    """Item vectors from table rows alone: what sampled negatives and full softmax need."""

    num_item_rows: int | None

    def encode_item_rows(self, item_rows: Tensor) -> Tensor:
        """``(R,)`` int64 item table rows -> ``(R, D)`` item vectors."""
        ...


@runtime_checkable
class RetrievalModel(ItemCatalogueModel, Protocol):
    """A retrieval model (see the module docstring); ``isinstance(model, RetrievalModel)``."""

    kind: ClassVar[str]
    num_interests: int  # 1: encode_user -> (B, D); K > 1: (B, K, D)

    @property
    def item_id_feature(self) -> str: ...

    @property
    def positive_feature(self) -> str: ...

    @property
    def user_feature_names(self) -> tuple[str, ...]: ...

    @property
    def item_feature_names(self) -> tuple[str, ...]: ...

    def encode_user(self, batch: "Batch") -> Tensor: ...

    def encode_item(self, batch: "Batch") -> Tensor: ...

    def user_tower(self) -> nn.Module: ...

    def item_tower(self) -> nn.Module: ...

    def retrieval_pairs(self, batch: "Batch") -> RetrievalPairs: ...

    def set_item_catalogue(self, catalogue: "Batch") -> None: ...

    @property
    def reads_item_catalogue(self) -> bool: ...

    @property
    def item_catalogue_features(self) -> tuple[str, ...]: ...


# Every member a class declaring ``kind = "retrieval"`` must have (checked at registration).
RETRIEVAL_MEMBERS: tuple[str, ...] = (
    "num_interests",
    "num_item_rows",
    "item_id_feature",
    "positive_feature",
    "user_feature_names",
    "item_feature_names",
    "encode_user",
    "encode_item",
    "encode_item_rows",
    "user_tower",
    "item_tower",
    "retrieval_pairs",
    "set_item_catalogue",
    "reads_item_catalogue",
    "item_catalogue_features",
)


class RetrievalDefaults:
    """Members two-tower models share: one interest, one training pair per batch row.

    A subclass sets ``num_item_rows`` and defines the encoders and towers; the towers'
    ``features`` are the feature names.
    """

    kind: ClassVar[str] = RETRIEVAL_KIND
    num_interests: ClassVar[int] = 1
    num_item_rows: int | None = None

    @property
    def item_id_feature(self) -> str:
        return self.params.item_id_feature  # type: ignore[attr-defined]

    @property
    def positive_feature(self) -> str:
        """One positive per row: the item id."""
        return self.item_id_feature

    @property
    def user_feature_names(self) -> tuple[str, ...]:
        return tuple(self.user_tower().features)  # type: ignore[attr-defined]

    @property
    def item_feature_names(self) -> tuple[str, ...]:
        return tuple(self.item_tower().features)  # type: ignore[attr-defined]

    def retrieval_pairs(self, batch: "Batch") -> RetrievalPairs:
        """One pair per batch row: ``(user (B, D), the row's item (B, D))``, labels as weights."""
        users, items = self(batch)  # type: ignore[operator]  # (B, D), (B, D)
        return RetrievalPairs(queries=users, positive_rows=None, positive_vectors=items, labels=batch.label)

    def set_item_catalogue(self, catalogue: "Batch") -> None:
        """Item vectors come from the rows alone: nothing to keep."""

    @property
    def reads_item_catalogue(self) -> bool:
        """Whether training must hand the model the catalogue (``set_item_catalogue``) whatever
        the loss; two towers read their item features from each batch."""
        return False

    @property
    def item_catalogue_features(self) -> tuple[str, ...]:
        """The catalogue features ``set_item_catalogue`` reads: the item tower's."""
        return self.item_feature_names


def check_retrieval_class(name: str, cls: type) -> None:
    """TypeError naming the first contract member ``cls`` lacks (registration of ``name``)."""
    for member in RETRIEVAL_MEMBERS:
        if not hasattr(cls, member):
            raise TypeError(
                f"model {name!r}: {cls.__name__} declares kind = 'retrieval' but lacks {member!r} "
                f"(the RetrievalModel contract: {', '.join(RETRIEVAL_MEMBERS)})"
            )
    interests = getattr(cls, "num_interests")
    if isinstance(interests, int) and interests < 1:
        raise TypeError(f"model {name!r}: {cls.__name__}.num_interests must be >= 1, got {interests}")


def is_retrieval_model(model: object) -> bool:
    """Whether ``model`` declares itself a retrieval model and has every member. Read on the
    instance, so a wrapper that forwards attributes to a retrieval model (the distributed
    trainer's view, ``torch.compile``'s module) is one too and its tasks call ``retrieval_pairs``."""
    return getattr(model, "kind", None) == RETRIEVAL_KIND and isinstance(model, RetrievalModel)


def require_retrieval_model(model: object, *, where: str) -> "RetrievalModel":
    """``model`` as a RetrievalModel; a ConfigError naming ``where`` (a run folder, a task) when
    it is a ranking model or anything else."""
    if not is_retrieval_model(model):
        kind = getattr(type(model), "kind", None) or "ranking"
        raise ConfigError(
            f"{where}: needs a retrieval run (a two-tower or sequence model with user and item encoders), "
            f"got a {kind} model {type(model).__name__}"
        )
    return model  # type: ignore[return-value]
