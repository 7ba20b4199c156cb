"""What a model is trained to predict: one or more targets, each a data column and its kind.

A schema's single ``label: click`` is one binary target; several objectives (click and like,
watch and finish) are declared as a list::

    targets:
      - {name: click}                           # kind: binary, weight: 1
      - {name: like, kind: binary, weight: 0.5, condition: click}   # defined only where click = 1
      - {name: watch_seconds, kind: regression}

A ``condition`` names another binary target: the target is defined only on rows where that
target is 1 (ESMM's conversion exists only after a click). A multi-task loss masks it to those
rows, or (ESMM) trains it over every row through ``p(condition) * p(target | condition)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from recstack.errors import SchemaError
from recstack.schema.enums import LabelKind

__all__ = ["Target"]


@dataclass(frozen=True)
class Target:
    """One training target.

    Attributes:
        name: the data column holding its labels (and the key of ``Batch.labels``).
        kind: ``binary`` (0 or 1) or ``real`` / ``regression`` (any finite number); checked as
            each file is read.
        weight: the target's weight in a multi-task loss (a weighted sum of per-target losses).
        condition: another binary target's name; this target is defined only where that one is
            1 (None: on every row). The schema checks it names a declared, unconditioned target.
    """

    name: str
    kind: LabelKind = LabelKind.BINARY
    weight: float = 1.0
    condition: str | None = None

    def __post_init__(self) -> None:
        where = f"target {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"targets: a target's name must be a column name, got {self.name!r}")
        if not isinstance(self.kind, LabelKind):
            try:
                object.__setattr__(self, "kind", LabelKind(self.kind))
            except ValueError:
                allowed = [k.value for k in LabelKind] + ["regression"]
                raise SchemaError(f"{where}: kind must be one of {allowed}, got {self.kind!r}") from None
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not (math.isfinite(self.weight) and self.weight > 0):
            raise SchemaError(f"{where}: weight must be a finite number > 0, got {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        if self.condition is not None and (not isinstance(self.condition, str) or not self.condition):
            raise SchemaError(f"{where}: condition must name another target, got {self.condition!r}")
        if self.condition == self.name:
            raise SchemaError(f"{where}: condition cannot be the target itself")

    @classmethod
    def from_dict(cls, raw: Any, *, index: int) -> "Target":
        """From parsed YAML: a mapping ``{name, kind, weight, condition}`` or just the column name."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise SchemaError(f"targets[{index}] must be a column name or a mapping with a 'name'")
        unknown = set(raw) - {"name", "kind", "weight", "condition"}
        if unknown:
            raise SchemaError(f"target {raw['name']!r}: unknown key(s) {sorted(unknown)}; allowed: ['condition', 'kind', 'name', 'weight']")
        return cls(name=raw["name"], kind=raw.get("kind") or LabelKind.BINARY, weight=raw.get("weight", 1.0), condition=raw.get("condition"))

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "weight": self.weight}
        if self.condition is not None:
            plain["condition"] = self.condition
        return plain
