"""A single-task ranker as the feature part of a multi-task ranker.

Most single-task rankers end in one output module over one vector: DIN's MLP over the other
features and its attention-pooled interests, DCN's Linear over the cross and deep networks side
by side. Such a ranker has ``head_input(batch) -> (B, head_input_dim)`` (that vector) and names
its output module in ``head_module``. A multi-task ranker configured with
``feature_part: {name: din, params: {...}}`` builds that ranker, removes its output module and
puts its own bottom, experts and towers on ``head_input``: ESMM, MMoE or PLE over DIN's interests
or DCN's crosses instead of the plain concatenation of embeddings. The part's own penalty (DIEN's
auxiliary loss, DIN's mini-batch L2) is still added to the loss.

Rankers whose logit is a sum of terms (LR, FM, DeepFM, Wide&Deep) have no such vector and are
refused, with the names that qualify.

Example::

    params:
      targets: [click, like]
      feature_part:
        name: din
        params: {behaviours: [{candidate: item_id, history: hist_item_ids}], hidden_dims: [200, 80]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from recstack.data.batch import Batch
from recstack.data.feature_map import FeatureMap
from recstack.models.params import CheckedParams, ParamError, require

__all__ = ["FeaturePart", "HeadedRanker", "build_feature_part", "feature_part_models"]


@runtime_checkable
class HeadedRanker(Protocol):
    """A single-task ranker whose logit is one module (``head_module``) over one vector."""

    head_module: str
    head_input_dim: int

    def head_input(self, batch: Batch) -> Tensor:
        """``(B, head_input_dim)``: what the output module reads."""
        ...


def feature_part_models() -> list[str]:
    """The registered rankers that can be a feature part, sorted."""
    from recstack.models.registry import model_class, model_names

    return [name for name in model_names() if _is_headed(model_class(name))]


def _is_headed(cls: type) -> bool:
    return isinstance(getattr(cls, "head_module", None), str) and callable(getattr(cls, "head_input", None))


@dataclass(frozen=True, kw_only=True)
class FeaturePart(CheckedParams):
    """``name``: a single-task ranker with one output module (:func:`feature_part_models`);
    ``params``: its parameters, as under ``model.params`` when it ranks alone."""

    name: str
    params: Mapping[str, Any] | None = None

    def validate(self) -> None:
        from recstack.models.registry import model_class, model_names

        require(self.name in model_names(), "name", f"unknown model {self.name!r}; one of {feature_part_models()}")
        cls = model_class(self.name)
        require(
            _is_headed(cls), "name",
            f"{self.name!r} has no single vector before its logit (its logit is a sum of terms); "
            f"a feature part is one of {feature_part_models()}",
        )  # fmt: skip
        try:
            self.ranker_params()
        except ParamError as error:
            raise ParamError(f"params.{error.key}", error.problem) from None

    def ranker_params(self) -> Any:
        """The named ranker's ``Params``, parsed from ``params``."""
        from recstack.models.registry import model_class

        return model_class(self.name).Params.from_dict(self.params)  # type: ignore[attr-defined]


def build_feature_part(spec: FeaturePart, feature_map: FeatureMap) -> nn.Module:
    """The ranker ``spec`` names, built on ``feature_map``, without its output module: a
    :class:`HeadedRanker` whose ``forward`` is gone; call ``head_input``."""
    from recstack.models.registry import model_class

    part = model_class(spec.name)(feature_map=feature_map, params=spec.ranker_params())
    delattr(part, part.head_module)  # its parameters would never get a gradient
    part.forward = _headless(spec.name)  # type: ignore[method-assign]
    return part


def _headless(name: str):  # noqa: ANN202 - a stand-in forward
    def forward(*_: object, **__: object) -> Tensor:
        raise TypeError(f"{name} is a feature part here (its output module was removed): call head_input(batch)")

    return forward
