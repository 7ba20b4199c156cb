"""What a model is trained to predict: one or more targets, each a data column and its kind.

A schema's single ``label: click`` is one binary target; several objectives (click and like,
watch and finish) are declared as a list::

    targets:
      - {name: click}                           # kind: binary, weight: 1
      - {name: like, kind: binary, weight: 0.5}
      - {name: watch_seconds, kind: regression}
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
    """

    name: str
    kind: LabelKind = LabelKind.BINARY
    weight: float = 1.0

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

    @classmethod
    def from_dict(cls, raw: Any, *, index: int) -> "Target":
        """From parsed YAML: a mapping ``{name, kind, weight}`` or just the column name."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, Mapping) or "name" not in raw:
            raise SchemaError(f"targets[{index}] must be a column name or a mapping with a 'name'")
        unknown = set(raw) - {"name", "kind", "weight"}
        if unknown:
            raise SchemaError(f"target {raw['name']!r}: unknown key(s) {sorted(unknown)}; allowed: ['kind', 'name', 'weight']")
        return cls(name=raw["name"], kind=raw.get("kind") or LabelKind.BINARY, weight=raw.get("weight", 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "weight": self.weight}
