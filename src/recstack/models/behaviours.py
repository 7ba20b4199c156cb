"""Behaviour pairs (a candidate feature and its history) and the inputs of the models that read
them: DIN, BST and DIEN declare ``behaviours`` the same way and embed the same features.

Example::

    groups, others, embeddings = behaviour_inputs(feature_map, features=None, behaviours=(
        Behaviour(candidate="item_id", history="hist_item_ids"),
        Behaviour(candidate="genre", history="hist_genres"),
    ), sparse=False, init_std=0.01)
    # groups: ((item pair, genre pair),): one group, attended over jointly
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recstack.data.feature_map import FeatureMap
from recstack.models.params import CheckedParams, DeepParams, require, select_features
from recstack.nn.embedding import build_sparse_inputs
from recstack.nn.sparse_inputs import SparseInputs
from recstack.schema import CategoricalFeature, Schema, SequenceFeature

__all__ = ["Behaviour", "BehaviourGroups", "behaviour_inputs", "group_behaviours"]


@dataclass(frozen=True, kw_only=True)
class Behaviour(CheckedParams):
    """A candidate feature and the behaviour history it is compared with (one shared table).

    Pairs with the same ``group`` describe the same positions (the item and the genre of each
    history item): their embeddings are concatenated per position and attended over jointly,
    as DIN does with goods_id + cate_id. Give unrelated histories different groups.
    """

    candidate: str  # a categorical feature, e.g. item_id
    history: str  # a sequence feature on the candidate's table, e.g. hist_item_ids
    group: str = "behaviour"


BehaviourGroups = tuple[tuple[Behaviour, ...], ...]


@dataclass(frozen=True, kw_only=True)
class BehaviourParams(DeepParams):
    """Parameters of a model comparing candidates with behaviour histories (DIN, BST, DIEN).

    Attributes:
        behaviours: the (candidate, history) pairs; ``features`` are the other inputs.
    """

    behaviours: tuple[Behaviour, ...] = ()

    def features_read(self) -> frozenset[str] | None:
        named = super().features_read()
        return None if named is None else named | {n for b in self.behaviours for n in (b.candidate, b.history)}


def group_behaviours(schema: Schema, behaviours: Sequence[Behaviour]) -> BehaviourGroups:
    """Check every pair against the schema (ParamError naming ``behaviours[i].candidate`` ...)
    and return them by group, in first-seen order; a group's histories share one maxlen."""
    for index, behaviour in enumerate(behaviours):
        _check_behaviour(schema, behaviour, key=f"behaviours[{index}]")
    groups: dict[str, list[Behaviour]] = {}
    for behaviour in behaviours:
        groups.setdefault(behaviour.group, []).append(behaviour)
    for name, group in groups.items():
        maxlens = {b.history: schema[b.history].maxlen for b in group}
        require(
            len(set(maxlens.values())) == 1,
            "behaviours",
            f"group {name!r} joins histories of different maxlen {maxlens}; positions must line up "
            "(give unrelated histories different groups)",
        )
    return tuple(tuple(group) for group in groups.values())


def behaviour_inputs(
    feature_map: FeatureMap, *, features: Sequence[str] | None, behaviours: Sequence[Behaviour], sparse: bool, init_std: float
) -> tuple[BehaviourGroups, list[str], SparseInputs]:
    """The checked groups, the other inputs (every selected feature but the histories:
    candidates included, embedded and pooled) and the sparse inputs serving them all."""
    groups = group_behaviours(feature_map.schema, behaviours)
    histories = [b.history for b in behaviours]
    candidates = [b.candidate for b in behaviours]
    others = select_features(feature_map, features, exclude=histories).all
    served = list(dict.fromkeys([*others, *candidates, *histories]))
    return groups, others, build_sparse_inputs(feature_map, features=served, sparse=sparse, init_std=init_std)


def _check_behaviour(schema: Schema, behaviour: Behaviour, *, key: str) -> None:
    for role, name in (("candidate", behaviour.candidate), ("history", behaviour.history)):
        require(name in schema.names, f"{key}.{role}", f"unknown feature {name!r}; features: {schema.names}")
    candidate, history = schema[behaviour.candidate], schema[behaviour.history]
    require(
        isinstance(candidate, CategoricalFeature),
        f"{key}.candidate",
        f"{candidate.name!r} is {candidate.kind}; a candidate is a categorical feature",
    )
    require(
        isinstance(history, SequenceFeature),
        f"{key}.history",
        f"{history.name!r} is {history.kind}; a history is a sequence feature",
    )
    require(
        candidate.table == history.table,
        key,
        f"candidate {candidate.name!r} uses table {candidate.table!r} but history {history.name!r} uses "
        f"table {history.table!r}; a candidate and its history must share one table",
    )
