"""The run folder: everything needed to evaluate, export and serve a trained model.

Layout::

    RUN/
      manifest.json        what is here, with versions
      config.yaml          the resolved run config
      preprocessor.json    the fitted preprocessor (schema, vocabularies, normalisers)
      model.json           model name + params + task, to rebuild the module (+ parent_run: the
                           run an incremental run grew from)
      model.pt             the best weights (a state_dict of tensors; loaded with weights_only=True)
      metrics.json         {"valid": {...}, "test": {...}, "train_seconds": ..., ...}
      learning_curve.png   training loss and validation metric per epoch
      tensorboard/         scalars
      checkpoints/last.pt  for resuming (and previous.pt, the checkpoint before it)

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
from recstack.errors import ConfigError, RecstackError, RunFolderError
from recstack.tasks import Task, TaskSpec, build_task


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
    def task(self) -> TaskSpec:
        """The run's task as saved in ``model.json`` (``{"name", "params"}``, or the config-style
        ``{"type": "binary", ...}`` of older runs; binary when absent). Rebuild it with
        :func:`task_from_run`."""
        saved = self.model_spec.get("task", {"type": "binary"})
        try:
            return TaskSpec.from_dict(saved)
        except ConfigError as error:
            where = self.paths.model_spec if self.paths is not None else "model.json"
            raise RunFolderError(f"{where}: damaged task spec: {error}") from None


def task_from_run(run: LoadedRun) -> Task:
    """The task a run was trained with, rebuilt from its saved spec: the one way serving,
    ``recstack predict`` and ``recstack evaluate`` get a run's task."""
    return build_task(run.task)


def save_config(paths: RunPaths, raw_config: Mapping[str, Any]) -> None:
    with atomic_path(paths.config) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(raw_config), sort_keys=False), encoding="utf-8")


def save_model(
    paths: RunPaths,
    model: nn.Module,
    *,
    name: str,
    params: Mapping[str, Any],
    task: Mapping[str, Any],
    parent_run: str | None = None,
) -> None:
    """Weights (a state_dict of CPU tensors) and the spec that rebuilds the module;
    ``parent_run``: the run an incremental run grew from (recorded as ``"parent_run"``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(paths.weights) as tmp:
        torch.save(state, tmp)
    spec = {"name": name, "params": _plain(params), "task": _plain(task)}
    if parent_run is not None:
        spec["parent_run"] = parent_run
    write_json_atomic(paths.model_spec, spec)


def save_manifest(paths: RunPaths, extra: Mapping[str, Any] | None = None) -> None:
    files = sorted(str(p.relative_to(paths.root)) for p in paths.root.rglob("*") if p.is_file() and not p.name.startswith("."))
    write_json_atomic(
        paths.manifest,
        {"recstack_version": recstack.__version__, "torch_version": torch.__version__, "files": files, **(extra or {})},
    )


def load_run(root: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuilds the model from ``model.json`` and loads ``model.pt`` with ``weights_only=True``.

    Raises:
        RunFolderError: the folder is missing or incomplete, or one of its files is damaged
            (truncated, empty, not JSON) or does not match the others; the message names the file.
    """
    from recstack.models import build_model

    paths = check_run_folder(root)
    config = _read_file(paths.config, yaml.safe_load) if paths.config.exists() else {}
    preprocessor = load_preprocessor(paths.preprocessor)
    feature_map = preprocessor.feature_map()
    spec = _read_file(paths.model_spec, json.loads)
    if not isinstance(spec, dict) or "name" not in spec:
        raise RunFolderError(f"{paths.model_spec}: damaged model spec (expected a JSON object with 'name')")
    # Pretrained rows come from model.pt, so the vector files need not exist where a run is loaded.
    model = build_model(spec["name"], feature_map.without_pretrained_files(), spec.get("params", {}))
    try:
        state = torch.load(paths.weights, map_location="cpu", weights_only=True)
    except Exception as error:  # an empty or truncated file, or one that is not a torch archive
        raise RunFolderError(f"{paths.weights}: damaged weights file ({type(error).__name__}: {_first_line(error)}); retrain the run") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise RunFolderError(
            f"{paths.weights} does not match {paths.model_spec.name} / {paths.preprocessor.name} "
            f"(files of different runs?): {_first_line(error)}"
        ) from None
    model.to(device).eval()
    run = LoadedRun(paths=paths, config=config, preprocessor=preprocessor, feature_map=feature_map, model=model, model_spec=spec)
    run.task  # a damaged task spec fails here, naming model.json, not at the first prediction
    return run


def load_preprocessor(path: Path) -> Preprocessor:
    """A run's fitted preprocessor; RunFolderError naming the file when it is damaged."""
    try:
        return Preprocessor.from_dict(_read_file(path, json.loads))
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, RecstackError):
            raise
        raise RunFolderError(f"{path}: damaged preprocessor file ({type(error).__name__}: {error})") from None


def check_run_folder(root: str | Path) -> RunPaths:
    """The paths of a complete run folder; RunFolderError naming what is missing otherwise."""
    paths = RunPaths(Path(root))
    if not paths.root.is_dir():
        hint = ""
        partial = paths.root.parent / f".{paths.root.name}.partial"
        if partial.is_dir():
            hint = f"; an interrupted run is in {partial} (recstack train CONFIG --resume continues it)"
        what = "is not a folder" if paths.root.exists() else "does not exist"
        raise RunFolderError(f"run folder {root} {what}{hint}")
    for required in (paths.preprocessor, paths.model_spec, paths.weights):
        if not required.is_file():
            raise RunFolderError(f"{root} is not a complete run folder: {required.name} is missing")
    return paths


def check_output_path(output: str | Path, *, owned: tuple[str, ...] = ()) -> Path:
    """Refuse an output that would overwrite a run's own files.

    An output inside a run folder (a folder holding ``model.json``) is refused unless its first
    component below the run folder is one of ``owned`` (e.g. ``("index",)`` for ``recstack
    index``); an existing folder is refused as a file output. Returns the resolved path.
    """
    path = Path(output).resolve()
    for folder in path.parents:
        if (folder / "model.json").is_file() or (folder / "manifest.json").is_file():
            below = path.relative_to(folder).parts
            if below and below[0] in owned:
                break
            raise RunFolderError(
                f"--output {output}: inside the run folder {folder}, whose files it could overwrite; "
                "write it elsewhere" + (f" (or under {folder / owned[0]})" if owned else "")
            )
    if (path / "model.json").is_file():
        raise RunFolderError(f"--output {output}: is a run folder")
    return path


def _read_file(path: Path, parse: Any) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: damaged file (not UTF-8 text)") from None
    if not text.strip():
        raise RunFolderError(f"{path}: empty file (damaged run folder; retrain the run)")
    try:
        return parse(text)
    except (ValueError, yaml.YAMLError) as error:
        raise RunFolderError(f"{path}: damaged file, not valid {path.suffix.lstrip('.').upper() or 'text'} ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


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
