"""Typed model parameters: each model's ``Params`` is a frozen dataclass checked once.

Parsed YAML (lists, strings) is converted on construction: lists become tuples, strings
become Enums, mappings become nested parameter dataclasses. A wrong value raises
:class:`ParamError`, a :class:`~recstack.errors.ConfigError` whose ``key`` names the field
(``hidden_dims``, ``behaviours[1].history``); :func:`recstack.models.build_model` prefixes it
with ``model.params.``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, kw_only=True)
    ... class Params(ModelParams):
    ...     hidden_dims: tuple[int, ...] = (64,)
    >>> Params.from_dict({"hidden_dims": [32, 16]}).hidden_dims
    (32, 16)
    >>> Params.from_dict({"hidden_dim": [32]})
    Traceback (most recent call last):
    ...
    recstack.models.params.ParamError: hidden_dim: unknown parameter (did you mean 'hidden_dims'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from recstack.data.feature_map import FeatureMap
from recstack.typed_fields import FieldError, coerce_fields
from recstack.nn.inputs import FeatureSplit, split_features
from recstack.nn.mlp import MLP, Activation

P = TypeVar("P", bound="CheckedParams")


class ParamError(FieldError):
    """A model parameter is unknown or invalid; ``key`` names it (``hidden_dims``)."""


@dataclass(frozen=True, kw_only=True)
class CheckedParams:
    """A frozen dataclass whose fields are type-checked and converted in ``__post_init__``;
    subclasses check value ranges in :meth:`validate` with :func:`require`."""

    def __post_init__(self) -> None:
        try:
            coerce_fields(self)  # lists -> tuples, str -> Enum, mappings -> nested Params
        except FieldError as error:
            raise ParamError(error.key, error.problem) from None
        self.validate()

    def validate(self) -> None:
        """Range checks; the default has none."""

    @classmethod
    def from_dict(cls: type[P], values: Mapping[str, Any] | None) -> P:
        """From parsed YAML / JSON; unknown keys and bad values raise :class:`ParamError`."""
        values = dict(values or {})
        known = [spec.name for spec in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known) or 'none'}"
                raise ParamError(str(key), f"unknown parameter{hint}")
        for spec in dataclasses.fields(cls):
            has_default = spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING
            if not has_default and spec.name not in values:
                raise ParamError(spec.name, "required")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (Enums as strings, tuples as lists), the inverse of :meth:`from_dict`."""
        return {spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class ModelParams(CheckedParams):
    """Parameters every model has.

    Attributes:
        features: the features the model reads; None: every feature of the schema.
        sparse_embeddings: build embedding tables with sparse gradients (train them with the
            trainer's ``sparse_embeddings: true``, which gives them SparseAdam / Adagrad).
        embedding_init_std: the standard deviation of the N(0, std^2) init of the model's fresh
            embedding tables (pretrained tables keep their vectors; 0 gives zeros). DeepCTR-Torch
            and torch-rechub draw theirs with 1e-4.
    """

    features: tuple[str, ...] | None = None
    sparse_embeddings: bool = False
    embedding_init_std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        std = self.embedding_init_std
        require(math.isfinite(std) and std >= 0, "embedding_init_std", f"must be a finite number >= 0, got {std}")

    def features_read(self) -> frozenset[str] | None:
        """Every feature a ranking model built from these params reads, when the params name them
        all (the loader then transforms only these); None: it may read any feature of the schema.
        A model with other feature-naming params adds them (``WideDeep``, the behaviour models)."""
        return None if self.features is None else frozenset(self.features)


@dataclass(frozen=True, kw_only=True)
class DeepParams(ModelParams):
    """Parameters of a model's MLP (its "deep" part); models redeclare a field to change a default.

    Attributes:
        hidden_dims: the MLP's layer widths.
        activation: the activation of every layer.
        batch_norm: batch-normalise each layer.
        dropout: dropout after each layer.
    """

    hidden_dims: tuple[int, ...] = (256, 128)
    activation: Activation = Activation.RELU
    batch_norm: bool = False
    dropout: float = 0.0

    def validate(self) -> None:
        require_dims("hidden_dims", self.hidden_dims)
        require_dropout("dropout", self.dropout)

    def mlp(self, in_dim: int, *, head_dim: int | None = None) -> MLP:
        """The MLP these parameters describe, reading ``in_dim`` inputs; with ``head_dim``, ending
        in its own output Linear (``head_dim=1``: a logit)."""
        return MLP(
            in_dim=in_dim,
            hidden_dims=self.hidden_dims,
            activation=self.activation,
            batch_norm=self.batch_norm,
            dropout=self.dropout,
            head_dim=head_dim,
        )


def require(ok: bool, key: str, problem: str) -> None:
    """Raise :class:`ParamError` ``key: problem`` unless ``ok``."""
    if not ok:
        raise ParamError(key, problem)


def require_dims(key: str, dims: Sequence[int], *, allow_empty: bool = False) -> None:
    """Layer widths must be positive (and at least one unless ``allow_empty``)."""
    require(allow_empty or len(dims) > 0, key, "needs at least one layer width")
    require(all(d >= 1 for d in dims), key, f"layer widths must be >= 1, got {list(dims)}")


def require_dropout(key: str, dropout: float) -> None:
    require(0.0 <= dropout < 1.0, key, f"must be in [0, 1), got {dropout}")


@contextmanager
def param_errors(key: str) -> Iterator[None]:
    """Re-raise ``ValueError`` / ``KeyError`` from building a block as ``ParamError(key)``."""
    try:
        yield
    except ParamError:
        raise
    except (ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        raise ParamError(key, str(message)) from None


def select_features(
    feature_map: FeatureMap, names: Sequence[str] | None, *, key: str = "features", exclude: Sequence[str] = ()
) -> FeatureSplit:
    """The features a model reads (``names``, or all), split into embedded and dense."""
    with param_errors(key):
        split = split_features(feature_map, names, exclude=exclude)
    require(len(split.all) > 0, key, "the model has no input feature")
    return split


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, CheckedParams):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
