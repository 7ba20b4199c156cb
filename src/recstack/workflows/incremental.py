"""The parent run of an incremental run (``recstack train CONFIG --init-from runs/OLD``): read
once, checked against the new config before any data is read, and recorded in the child.

The child run folder records its parent in ``model.json`` (``"parent_run"``), in
``config.yaml`` (``incremental.init_from``, absolute) and in ``metrics.json``
(``"incremental"``: the parent, the lineage of runs back to the first one trained from scratch,
each table's rows before and after, the numeric rule, how many parameters carried their optimiser
state); the train summary prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from recstack.config import RunConfig
from recstack.data.preprocessor import Preprocessor
from recstack.errors import ConfigError
from recstack.export.run_folder import RunPaths, load_run
from recstack.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from recstack.training.warm_start import IncrementalConfig, OptimizerState, carry_optimizer_state, grow_model

__all__ = ["ParentRun", "carried_optimizers", "growth_summary", "incremental_config", "load_parent", "warm_start"]


@dataclass(frozen=True)
class ParentRun:
    """A finished run folder to grow from: its preprocessor, model spec and best weights."""

    paths: RunPaths
    preprocessor: Preprocessor
    model_name: str
    model_params: Mapping[str, Any]
    state: Mapping[str, Tensor]

    @property
    def root(self) -> Path:
        return self.paths.root

    def lineage(self) -> list[str]:
        """The runs this one grew from, oldest first (its own metrics.json's ``lineage``; empty
        for a run trained from scratch)."""
        try:
            metrics = json.loads(self.paths.metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return list(metrics.get("incremental", {}).get("lineage", [])) if isinstance(metrics, dict) else []

    def optimizer_states(self) -> list[dict[str, Any]]:
        """The optimiser states of the parent's last checkpoint (``checkpoints/last.pt``)."""
        path = self.paths.checkpoints / CHECKPOINT_NAME
        if not path.exists() and not path.with_name("previous.pt").exists():
            raise ConfigError(
                f"incremental.optimizer_state: carry: the parent run has no checkpoint ({path} is missing); use optimizer_state: fresh"
            )
        return list(load_checkpoint(path)["optimizers"])


def incremental_config(config: RunConfig, init_from: str | Path | None = None) -> IncrementalConfig:
    """The config's ``incremental:`` section, ``init_from`` (``--init-from``) taking precedence,
    with the parent's path made absolute."""
    section = config.raw.get("incremental")
    if init_from is not None and (section is None or isinstance(section, Mapping)):
        section = {**(section or {}), "init_from": str(init_from)}
    parsed = IncrementalConfig.from_dict(section)
    if parsed.init_from is None:
        return parsed
    return IncrementalConfig(init_from=parsed.init_from.resolve(), numeric=parsed.numeric, optimizer_state=parsed.optimizer_state)


def load_parent(root: str | Path, config: RunConfig) -> ParentRun:
    """Read the parent run and check that ``config`` can grow it: the same model (the schema is
    checked by the preprocessor's refit, the parameters' shapes by the warm start).

    The parent's weights are read as :func:`~recstack.export.run_folder.load_run` reads them
    (into the parent's own model, so state-dict keys renamed since it was written still load).

    Raises:
        RunFolderError: the parent folder is missing, incomplete or damaged (naming the file).
        ConfigError: ``config`` trains another model than the parent.
    """
    run = load_run(root)
    name = run.model_spec["name"]
    if name != config.model.name:
        raise ConfigError(f"model: {config.model.name!r}, but the parent run {run.paths.root} trained {name!r}; --init-from needs the same model")
    state = {key: value.detach().clone() for key, value in run.model.state_dict().items()}
    return ParentRun(paths=run.paths, preprocessor=run.preprocessor, model_name=name, model_params=run.model_spec.get("params", {}), state=state)


def warm_start(model: nn.Module, parent: ParentRun, child: Preprocessor, incremental: IncrementalConfig) -> dict[str, Any]:
    """Grow ``model``'s tables and load the parent's weights; returns the report for
    metrics.json (``"incremental"``)."""
    growth = grow_model(model, parent.state, parent=parent.preprocessor, child=child)
    report = {
        "parent_run": str(parent.root),
        "lineage": [*parent.lineage(), str(parent.root)],
        "numeric": incremental.numeric.value,
        "optimizer_state": incremental.optimizer_state.value,
        "tables": {g.table: {"rows_before": g.rows_before, "rows_after": g.rows_after, "added": g.added} for g in growth},
    }
    return report


def carried_optimizers(optimizers: Sequence[torch.optim.Optimizer], parent: ParentRun, incremental: IncrementalConfig) -> int | None:
    """With ``optimizer_state: carry``, the parent's optimiser state loaded where shapes allow
    (the number of parameters that carried it); None when the state starts fresh."""
    if incremental.optimizer_state is not OptimizerState.CARRY:
        return None
    return carry_optimizer_state(optimizers, parent.optimizer_states())


def growth_summary(report: Mapping[str, Any]) -> str:
    """``parent run: runs/day1; tables grown: item +12 rows (1,634), user +3 rows (946)``."""
    grown = [
        f"{name} +{t['added']} rows ({t['rows_after']:,})" for name, t in report.get("tables", {}).items() if t["added"]
    ]
    return f"parent run: {report['parent_run']}; tables grown: {', '.join(grown) if grown else 'none'}; numeric: {report['numeric']}"
