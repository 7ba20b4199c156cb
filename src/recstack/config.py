"""The run configuration: YAML parsed once, at the edge, into frozen dataclasses.

Every key is documented in docs/config.md. Unknown keys and invalid values raise
:class:`~recstack.errors.ConfigError` naming the key (``trainer.lr: expected a number``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from recstack.data.catalog_join import with_catalog
from recstack.data.loader import LoaderConfig
from recstack.data.sources import DataSource
from recstack.errors import ConfigError
from recstack.schema import Schema, Side
from recstack.tasks.registry import TaskSpec, TaskType, parse_task_section
from recstack.training.sharding_config import DistributedConfig

# `tune:` is the search space of `recstack tune` (recstack.tuning.space); training ignores it;
# `incremental:` is read by recstack.training.warm_start.IncrementalConfig (train --init-from)
_TOP_LEVEL_KEYS = {"name", "data", "schema", "task", "model", "loader", "trainer", "evaluation", "output", "threads", "seed", "tune", "incremental", "distributed"}


@dataclass(frozen=True)
class DataConfig:
    """Training, validation and test sources; a bundled ``dataset`` builds them when missing."""

    train: DataSource
    valid: DataSource | None = None
    test: DataSource | None = None
    dataset: str | None = None  # movielens_ctr | movielens_retrieval | movielens_multitask | synthetic_ctr | synthetic_retrieval | synthetic_multitask
    dataset_dir: str | None = None
    catalog: DataSource | None = None  # item catalogue (retrieval): one row per item
    seen: DataSource | None = None  # items each user saw in training (retrieval exclusion)


@dataclass(frozen=True)
class TaskConfig:
    """The ``task:`` section: the task (a registered name and its typed parameters) and, for
    retrieval event files, the column holding each row's target item.

    ``task: {type: retrieval, loss: pointwise, gamma: 10, target_column: movie_id}`` is
    ``spec = TaskSpec("pointwise", PointwiseTask.Params(gamma=10.0))``, ``target_column = "movie_id"``.
    """

    spec: TaskSpec = field(default_factory=lambda: parse_task_section({}))
    target_column: str | None = None

    @property
    def type(self) -> TaskType:
        """The task's family: ``binary`` (rows scored) or ``retrieval`` (full-corpus ranking)."""
        return self.spec.type

    @property
    def name(self) -> str:
        """The registered task name (``binary``, ``in_batch_softmax``, ``pointwise``, ...)."""
        return self.spec.name


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationConfig:
    ks: tuple[int, ...] = (10, 50)
    group: str | None = None  # the GAUC group column; defaults to the schema's group
    # retrieval: per-row lists of item ids excluded from that row's ranking (list columns or
    # delimited strings); None keeps the default, the row's ``hist_item_ids`` when present
    exclude_columns: tuple[str, ...] | None = None
    exclude_delimiter: str | None = None  # for delimited strings; default: the schema's, else ","


@dataclass(frozen=True)
class RunConfig:
    name: str
    data: DataConfig
    schema: Schema
    task: TaskConfig
    model: ModelConfig
    loader: LoaderConfig
    trainer: Mapping[str, Any]  # validated by recstack.training.TrainerConfig.from_dict
    evaluation: EvaluationConfig
    output: Path
    threads: int = 1
    seed: int = 0
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  # replicated (DDP) or sharded tables
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the resolved YAML

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "RunConfig":
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        for dotted, value in (overrides or {}).items():
            _set_dotted(raw, dotted, value)
        return cls.from_dict(raw, base_dir=path.parent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base_dir: Path = Path(".")) -> "RunConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError("a config must be a mapping")
        unknown = set(raw) - _TOP_LEVEL_KEYS
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}")
        for key in ("data", "schema", "model"):
            if key not in raw:
                raise ConfigError(f"{key}: required")
        base_dir = Path(base_dir)
        project_dir = _project_dir(base_dir)
        schema = _schema(raw["schema"], base_dir)
        data = _data(raw["data"], project_dir)
        task = _task(raw.get("task") or {})
        model = _model(raw["model"])
        if task.type is TaskType.RETRIEVAL:
            data = _events(data, schema, task, model)
        loader = _loader(raw.get("loader") or {}, seed=int(raw.get("seed", 0)))
        trainer = raw.get("trainer") or {}
        if not isinstance(trainer, Mapping):
            raise ConfigError("trainer: expected a mapping")
        evaluation = _evaluation(raw.get("evaluation") or {})
        name = _run_name(raw.get("name", model.name))
        output = raw.get("output") or f"runs/{name}"
        threads = raw.get("threads", 1)
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads: expected a positive integer, got {threads!r}")
        return cls(
            name=name,
            data=data,
            schema=schema,
            task=task,
            model=model,
            loader=loader,
            trainer=dict(trainer),
            evaluation=evaluation,
            output=Path(output) if Path(output).is_absolute() else project_dir / output,
            threads=threads,
            seed=int(raw.get("seed", 0)),
            distributed=DistributedConfig.from_dict(raw.get("distributed") or {}),
            raw=dict(raw),
        )


def _run_name(name: Any) -> str:
    """A run name becomes the folder ``runs/<name>``: one plain path component, nothing more."""
    text = str(name)
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith(".") or "\0" in text:
        raise ConfigError(
            f"name: {text!r} is not a plain run name (one folder name: letters, digits, '_', '-', "
            "not starting with '.'); use `output:` to choose another folder"
        )
    return text


def _project_dir(base_dir: Path) -> Path:
    """Paths in configs are relative to the project root (the folder holding configs/), so
    ``configs/x.yaml`` and the README commands agree; a config outside configs/ is its own root."""
    return base_dir.parent if base_dir.name == "configs" else base_dir


def _schema(spec: Any, base_dir: Path) -> Schema:
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_absolute():
            candidates = [base_dir / path, _project_dir(base_dir) / path]
            path = next((p for p in candidates if p.exists()), candidates[0])
        if not path.exists():
            raise ConfigError(f"schema: file not found: {path}")
        return Schema.from_yaml(path)
    if isinstance(spec, Mapping):
        return Schema.from_dict(spec, base_dir=_project_dir(base_dir))
    raise ConfigError("schema: expected a path to a schema YAML or an inline mapping")


_DATASET_FILES = {
    "movielens_ctr": ("train.parquet", "valid.parquet", "test.parquet", None, None),
    "synthetic_ctr": ("train.parquet", "valid.parquet", "test.parquet", None, None),
    "movielens_multitask": ("train.parquet", "valid.parquet", "test.parquet", None, None),
    "synthetic_multitask": ("train.parquet", "valid.parquet", "test.parquet", None, None),
    "movielens_retrieval": ("train.parquet", "valid.parquet", "test.parquet", "items.parquet", "seen.parquet"),
    "synthetic_retrieval": ("train.parquet", "valid.parquet", "test.parquet", "items.parquet", "seen.parquet"),
    # sequences: the evaluation excludes each row's input items (hist_item_ids); data.seen adds all training items
    "movielens_sequences": ("train.parquet", "valid.parquet", "test.parquet", "items.parquet", None),
    "synthetic_sequences": ("train.parquet", "valid.parquet", "test.parquet", "items.parquet", None),
}


def _data(spec: Any, project_dir: Path) -> DataConfig:
    if not isinstance(spec, Mapping):
        raise ConfigError("data: expected a mapping with train (and valid, test) or dataset")
    allowed = {"train", "valid", "test", "dataset", "dir", "catalog", "seen"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"data: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    dataset = spec.get("dataset")
    sources: dict[str, Any] = {}
    if dataset is not None:
        if dataset not in _DATASET_FILES:
            raise ConfigError(f"data.dataset: must be one of {sorted(_DATASET_FILES)}, got {dataset!r}")
        folder = project_dir / spec.get("dir", f"data/{dataset}")
        for key, name in zip(("train", "valid", "test", "catalog", "seen"), _DATASET_FILES[dataset]):
            if name:
                sources[key] = str(folder / name)
    for key in ("train", "valid", "test", "catalog", "seen"):
        if key in spec:
            sources[key] = spec[key]
    if "train" not in sources:
        raise ConfigError("data.train: required (or data.dataset)")
    built = {k: DataSource.from_config(v, base_dir=project_dir, key=f"data.{k}") for k, v in sources.items()}
    return DataConfig(
        dataset=dataset,
        dataset_dir=str(project_dir / spec.get("dir", f"data/{dataset}")) if dataset else None,
        **built,
    )


def _events(data: DataConfig, schema: Schema, task: TaskConfig, model: ModelConfig) -> DataConfig:
    """Retrieval splits read as events: the target renamed to the item-id column and the item
    columns the files lack joined from ``data.catalog`` (recstack.data.catalog_join)."""
    target = task.target_column
    item_feature = model.params.get("item_id_feature", "item_id")
    if item_feature not in schema.names or not getattr(schema[item_feature], "column", ""):
        if target is not None:
            raise ConfigError(f"task.target_column: the schema has no item-id feature {item_feature!r} to read it as")
        return data
    item_column = schema[item_feature].column
    item_columns = [c for f in schema.by_side(Side.ITEM) for c in f.source_columns]

    def events(source: DataSource | None, catalog: DataSource | None) -> DataSource | None:
        return with_catalog(source, catalog=catalog, item_column=item_column, target_column=target, item_columns=item_columns)

    return dataclasses.replace(
        data,
        train=events(data.train, data.catalog),
        valid=events(data.valid, data.catalog),
        test=events(data.test, data.catalog),
        seen=events(data.seen, None),  # a seen file may list (user, target) rows
    )


def _task(spec: Any) -> TaskConfig:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError("task: expected a mapping")
    spec = dict(spec)
    target = spec.pop("target_column", None)  # a data setting of retrieval event files, not a task parameter
    if target is not None and (not isinstance(target, str) or not target):
        raise ConfigError(f"task.target_column: expected a column name, got {target!r}")
    task = TaskConfig(spec=parse_task_section(spec), target_column=target)
    if target is not None and task.type is not TaskType.RETRIEVAL:
        raise ConfigError(f"task.target_column: applies to retrieval tasks, not {task.name!r}")
    return task


def _model(spec: Any) -> ModelConfig:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError("model.name: required")
    unknown = set(spec) - {"name", "params"}
    if unknown:
        raise ConfigError(f"model: unknown key(s) {sorted(unknown)}; allowed: ['name', 'params']")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError("model.params: expected a mapping")
    return ModelConfig(name=str(spec["name"]), params=dict(params))


def _loader(spec: Mapping[str, Any], *, seed: int) -> LoaderConfig:
    allowed = {"batch_size", "shuffle_buffer", "drop_last", "num_workers", "cache", "cache_max_mb"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"loader: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if spec.get("cache") not in (None, True, False):
        raise ConfigError(f"loader.cache: expected true, false or null (auto), got {spec['cache']!r}")
    for key in ("batch_size", "shuffle_buffer", "num_workers", "cache_max_mb"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "batch_size" else 0)):
            raise ConfigError(f"loader.{key}: expected a {'positive' if key == 'batch_size' else 'non-negative'} integer, got {value!r}")
    return LoaderConfig(
        batch_size=spec.get("batch_size", 1024),
        shuffle_buffer=spec.get("shuffle_buffer", 0),
        drop_last=bool(spec.get("drop_last", False)),
        num_workers=spec.get("num_workers", 0),
        cache=spec.get("cache"),
        cache_max_mb=spec.get("cache_max_mb", 1024),
        seed=seed,
    )


def _evaluation(spec: Mapping[str, Any]) -> EvaluationConfig:
    unknown = set(spec) - {"ks", "group", "exclude_columns", "exclude_delimiter"}
    if unknown:
        raise ConfigError(f"evaluation: unknown key(s) {sorted(unknown)}")
    ks = spec.get("ks", (10, 50))
    if not isinstance(ks, (list, tuple)) or not all(isinstance(k, int) and k > 0 for k in ks):
        raise ConfigError(f"evaluation.ks: expected a list of positive integers, got {ks!r}")
    delimiter = spec.get("exclude_delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
        raise ConfigError(f"evaluation.exclude_delimiter: expected a non-empty string, got {delimiter!r}")
    return EvaluationConfig(
        ks=tuple(ks),
        group=spec.get("group"),
        exclude_columns=exclude_columns(spec.get("exclude_columns"), key="evaluation.exclude_columns"),
        exclude_delimiter=delimiter,
    )


def exclude_columns(value: Any, *, key: str) -> tuple[str, ...] | None:
    """``null`` (the default), one column name or a list of them."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) and c for c in value):
        raise ConfigError(f"{key}: expected a column name or a list of column names, got {value!r}")
    return tuple(value)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key} is not a mapping")
    node[keys[-1]] = value
