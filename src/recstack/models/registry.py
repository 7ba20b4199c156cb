"""Model names to classes, filled where each class is defined: ``@register_model("deepfm")``.

A registered model is an ``nn.Module`` with a nested ``Params`` dataclass (a
:class:`~recstack.models.params.ModelParams`) and the constructor
``Model(*, feature_map, params=None)``. A retrieval model declares ``kind = "retrieval"`` and
must have every member of :class:`~recstack.models.retrieval_contract.RetrievalModel`
(a TypeError naming the member otherwise). :func:`build_model` parses a config's ``params``
mapping into that dataclass, so a typo or a bad value fails before anything trains, with the
key in the message::

    model = build_model("deepfm", feature_map, {"hidden_dims": [200, 200]})
    build_model("deepfm", feature_map, {"hiden_dims": [200]})
    # ConfigError: model.params.hiden_dims: unknown parameter (did you mean 'hidden_dims'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from recstack.data.feature_map import FeatureMap
from recstack.errors import ConfigError
from recstack.models.params import ModelParams, ParamError
from recstack.models.retrieval_contract import RETRIEVAL_KIND, check_retrieval_class

M = TypeVar("M", bound=type[nn.Module])

_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make the model buildable by ``name`` from a config."""

    def decorate(cls: M) -> M:
        params = getattr(cls, "Params", None)
        if not (isinstance(params, type) and issubclass(params, ModelParams)):
            raise TypeError(f"model {name!r}: {cls.__name__}.Params must subclass ModelParams")
        if getattr(cls, "kind", None) == RETRIEVAL_KIND:
            check_retrieval_class(name, cls)  # TypeError naming the missing member
        if name in _MODELS and _MODELS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"model name {name!r} is already taken by {_MODELS[name].__qualname__}")
        _MODELS[name] = cls
        return cls

    return decorate


def model_names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; ConfigError ``model.name`` when there is none."""
    if name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"model.name: unknown model {name!r}{hint}; known: {', '.join(model_names())}")
    return _MODELS[name]


def check_model_config(name: str, params: Mapping[str, Any] | None) -> None:
    """Raise the ConfigError :func:`build_model` would raise for ``name`` / ``params``, before any
    data is read (building needs the fitted feature map; checking does not)."""
    cls = model_class(name)
    try:
        cls.Params.from_dict(params)  # type: ignore[attr-defined]
    except ParamError as error:
        raise ConfigError(f"model.params.{error.key}: {error.problem}") from None


def build_model(name: str, feature_map: FeatureMap, params: Mapping[str, Any] | ModelParams | None = None) -> nn.Module:
    """Build the model registered as ``name`` from a fitted feature map and its parameters.

    Args:
        name: a registered name (:func:`model_names`).
        feature_map: the fitted contract between preprocessing and the model.
        params: the config's ``model.params`` mapping (parsed YAML), or a ``Params`` instance.

    Raises:
        ConfigError: unknown model, or an unknown / invalid parameter; the message starts with
            the key (``model.params.hidden_dims: ...``).
    """
    cls = model_class(name)
    if isinstance(params, ModelParams) and not isinstance(params, cls.Params):  # type: ignore[attr-defined]
        raise ConfigError(f"model.params: model {name!r} takes {cls.__name__}.Params, got {type(params).__qualname__}")
    try:
        parsed = params if isinstance(params, cls.Params) else cls.Params.from_dict(params)  # type: ignore[attr-defined]
        return cls(feature_map=feature_map, params=parsed)
    except ParamError as error:
        raise ConfigError(f"model.params.{error.key}: {error.problem}") from None
