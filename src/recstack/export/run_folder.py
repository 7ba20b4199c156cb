"""The run folder: everything needed to evaluate, export and serve a trained model.

Layout::

    RUN/
      manifest.json        what is here, with versions
      config.yaml          the resolved run config
      preprocessor.json    the fitted preprocessor (schema, vocabularies, normalisers)
      model.json           model name + params + task, to rebuild the module
      model.pt             the best weights (a state_dict of tensors; loaded with weights_only=True)
      metrics.json         {"valid": {...}, "test": {...}, "train_seconds": ..., ...}
      learning_curve.png   training loss and validation metric per epoch
      tensorboard/         scalars
      checkpoints/last.pt  for resuming

Every file is written atomically; loading never unpickles code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn

import recstack
from recstack.atomic import atomic_path, write_json_atomic
from recstack.data.feature_map import FeatureMap
from recstack.data.preprocessor import Preprocessor


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def preprocessor(self) -> Path:
        return self.root / "preprocessor.json"

    @property
    def model_spec(self) -> Path:
        return self.root / "model.json"

    @property
    def weights(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def learning_curve(self) -> Path:
        return self.root / "learning_curve.png"

    @property
    def exports(self) -> Path:
        return self.root / "export"


@dataclass
class LoadedRun:
    """A run folder read back: config, fitted preprocessor and the model in eval mode."""

    paths: RunPaths
    config: dict[str, Any]
    preprocessor: Preprocessor
    feature_map: FeatureMap
    model: nn.Module
    model_spec: dict[str, Any]

    @property
    def task(self) -> dict[str, Any]:
        return self.model_spec.get("task", {"type": "binary"})


def save_config(paths: RunPaths, raw_config: Mapping[str, Any]) -> None:
    with atomic_path(paths.config) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(raw_config), sort_keys=False), encoding="utf-8")


def save_model(paths: RunPaths, model: nn.Module, *, name: str, params: Mapping[str, Any], task: Mapping[str, Any]) -> None:
    """Weights (a state_dict of CPU tensors) and the spec that rebuilds the module."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(paths.weights) as tmp:
        torch.save(state, tmp)
    write_json_atomic(paths.model_spec, {"name": name, "params": _plain(params), "task": _plain(task)})


def save_manifest(paths: RunPaths, extra: Mapping[str, Any] | None = None) -> None:
    files = sorted(str(p.relative_to(paths.root)) for p in paths.root.rglob("*") if p.is_file() and not p.name.startswith("."))
    write_json_atomic(
        paths.manifest,
        {"recstack_version": recstack.__version__, "torch_version": torch.__version__, "files": files, **(extra or {})},
    )


def load_run(root: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuilds the model from ``model.json`` and loads ``model.pt`` with ``weights_only=True``."""
    from recstack.models import build_model

    paths = RunPaths(Path(root))
    for required in (paths.preprocessor, paths.model_spec, paths.weights):
        if not required.exists():
            raise FileNotFoundError(f"{root} is not a complete run folder: {required.name} is missing")
    config = yaml.safe_load(paths.config.read_text(encoding="utf-8")) if paths.config.exists() else {}
    preprocessor = Preprocessor.load(paths.preprocessor)
    feature_map = preprocessor.feature_map()
    spec = json.loads(paths.model_spec.read_text(encoding="utf-8"))
    # Pretrained rows come from model.pt, so the vector files need not exist where a run is loaded.
    model = build_model(spec["name"], feature_map.without_pretrained_files(), spec.get("params", {}))
    state = torch.load(paths.weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(paths=paths, config=config, preprocessor=preprocessor, feature_map=feature_map, model=model, model_spec=spec)


def _plain(value: Any) -> Any:
    """Plain YAML/JSON data: enums to values, paths to strings, tuples to lists."""
    from enum import Enum

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
